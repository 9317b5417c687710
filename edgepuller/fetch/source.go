package fetch

import (
	"fmt"
	"net/http"
	"strings"

	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// source is one place a repository's content can come from: a mirror or
// the origin registry.
type source struct {
	host   string // host[:port]
	plain  bool   // http instead of https
	mirror bool
	// ns is the origin host, sent to mirrors as ?ns= like containerd does,
	// so that one mirror (Spegel, Dragonfly, a pull-through cache) can
	// serve several upstreams.
	ns string
}

func (s source) String() string {
	if s.mirror {
		return "mirror " + s.host
	}
	return s.host
}

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

func sources(ref registry.Reference, opts Options) ([]source, error) {
	var out []source
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
