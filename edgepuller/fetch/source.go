package fetch

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// source is one place a repository's content can come from: a site peer,
// a mirror or the origin registry.
type source struct {
	host   string // host[:port]
	plain  bool   // http instead of https
	mirror bool
	// peer is another node of the site; node is its name. A peer gets no
	// registry credentials (see puller.peerClient).
	peer bool
	node string
	// ns is the origin host, sent to mirrors as ?ns= like containerd does,
	// so that one mirror (Spegel, Dragonfly, a pull-through cache) can
	// serve several upstreams.
	ns string
}

func (s source) String() string {
	switch {
	case s.peer:
		return "peer " + s.node + " (" + s.host + ")"
	case s.mirror:
		return "mirror " + s.host
	}
	return s.host
}

// origin reports the registry itself, the last source and the only one
// whose word on a tag is taken.
func (s source) origin() bool { return !s.peer && !s.mirror }

func (s source) baseURL(repo string) string {
	scheme := "https"
	if s.plain {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s/v2/%s", scheme, s.host, repo)
}

func (s source) blobURL(ref registry.Reference) string {
	u := s.baseURL(ref.Repository) + "/blobs/" + ref.Reference
	if s.ns != "" {
		u += "?ns=" + s.ns
	}
	return u
}

// parseMirror reads "host[:port]", "http://host[:port]" or "https://host[:port]".
func parseMirror(m, origin string) (source, error) {
	s := source{mirror: true, ns: origin}
	switch {
	case strings.HasPrefix(m, "http://"):
		s.plain, m = true, m[len("http://"):]
	case strings.HasPrefix(m, "https://"):
		m = m[len("https://"):]
	}
	m = strings.TrimSuffix(m, "/")
	if m == "" || strings.ContainsAny(m, "/?#@ ") {
		return source{}, fmt.Errorf("mirror %q: want host[:port], optionally prefixed with http:// or https://", m)
	}
	s.host = m
	return s, nil
}

// parsePeer checks a peer given in Options.Peers: a node name for reports
// and host:port, dialled over TLS.
func parsePeer(p Peer) (source, error) {
	host, port, err := net.SplitHostPort(p.Addr)
	if p.Node == "" || strings.ContainsAny(p.Node, " /") {
		return source{}, fmt.Errorf("peer %q at %s: want the peer's node name", p.Node, p.Addr)
	}
	if err != nil || host == "" || port == "" || strings.ContainsAny(p.Addr, "/?#@ ") {
		return source{}, fmt.Errorf("peer %s: address %q: want host:port of its peer server", p.Node, p.Addr)
	}
	return source{host: p.Addr, peer: true, node: p.Node}, nil
}

// sources lists where content is looked for, in order: the peers (only
// with PeerTLS), the mirrors, the origin.
func sources(ref registry.Reference, opts Options) ([]source, error) {
	var out []source
	if opts.PeerTLS != nil {
		for _, pr := range opts.Peers {
			s, err := parsePeer(pr)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	for _, m := range opts.Mirrors {
		s, err := parseMirror(m, ref.Host())
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return append(out, source{host: ref.Host(), plain: opts.PlainHTTP}), nil
}

// repository returns an oras-go repository for ref at s, for resolving and
// fetching manifests.
func (s source) repository(ref registry.Reference, client remote.Client) *remote.Repository {
	r := ref
	r.Registry = s.host
	if s.ns != "" {
		client = nsClient{client, s.ns}
	}
	return &remote.Repository{Client: client, Reference: r, PlainHTTP: s.plain}
}

// nsClient adds ?ns=<origin> to requests sent to a mirror.
type nsClient struct {
	remote.Client
	ns string
}

func (c nsClient) Do(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	q := req.URL.Query()
	q.Set("ns", c.ns)
	req.URL.RawQuery = q.Encode()
	return c.Client.Do(req)
}

const userAgent = "barge-edgepuller"

// peerDialTimeout bounds connecting to a peer on the site's LAN: a node
// that is off answers no SYN, and the pull should fall through to the next
// source long before the stall timeout.
const peerDialTimeout = 5 * time.Second

// newPeerTransport is the transport of every request to a peer: a plain
// one with the site's TLS configuration and no proxy. It never carries the
// registry client or its credentials, so a peer, or whoever holds a
// peer's certificate, never sees a registry token.
func newPeerTransport(cfg *tls.Config) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: peerDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     cfg.Clone(),
		TLSHandshakeTimeout: peerDialTimeout,
		MaxIdleConnsPerHost: defaultConcurrency,
		IdleConnTimeout:     90 * time.Second,
	}
}

// newPeerClient is the client for peers. It follows no redirect: a peer
// serves what it holds or says it does not.
func newPeerClient(tr *http.Transport) peerClient {
	return peerClient{&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// peerClient sends requests to peers with the puller's User-Agent.
type peerClient struct{ c *http.Client }

func (p peerClient) Do(req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", userAgent)
	return p.c.Do(req)
}

// clients returns the client for manifests and the one for blob bodies (see
// Options.Client).
func clients(c remote.Client) (meta, blob remote.Client) {
	if c == nil {
		cache := auth.NewCache()
		h := http.Header{"User-Agent": {userAgent}}
		return &auth.Client{Client: retry.DefaultClient, Header: h, Cache: cache},
			&auth.Client{Client: &http.Client{}, Header: h, Cache: cache}
	}
	ac, ok := c.(*auth.Client)
	if !ok || ac.Client == nil {
		return c, c
	}
	rt, ok := ac.Client.Transport.(*retry.Transport)
	if !ok {
		return c, c
	}
	hc := *ac.Client
	hc.Transport = rt.Base // nil means http.DefaultTransport
	bc := *ac
	bc.Client = &hc
	return c, &bc
}
