package fetch_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// peerServerName is the name in every peer certificate (peer.ServerName).
const peerServerName = "barge-peer"

// siteCA is a throwaway site CA, as the chart's peer Secret holds one.
type siteCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newSiteCA(t *testing.T) *siteCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "barge site CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &siteCA{cert: cert, key: key, pool: pool}
}

// issue makes a peer certificate: the name barge-peer, for server and
// client use, as every puller of a cluster holds.
func (ca *siteCA) issue(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: peerServerName},
		DNSNames:  []string{peerServerName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serverTLS is a peer server's side: its certificate, and a client
// certificate of this CA required.
func (ca *siteCA) serverTLS(t *testing.T) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{ca.issue(t)}, ClientCAs: ca.pool, ClientAuth: tls.RequireAndVerifyClientCert}
}

// clientTLS is Options.PeerTLS: this CA's peers trusted, this node's
// certificate, the peer name checked while dialling an IP address.
func (ca *siteCA) clientTLS(t *testing.T) *tls.Config {
	return &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{ca.issue(t)}, ServerName: peerServerName}
}

// testPeer is a site peer: a real registry holding the model behind a TLS
// listener that requires a client certificate, as a puller's peer server
// does. fault, if set, sees every request first and may answer it. Any
// request that carries an Authorization header fails the test: a peer
// must never see the registry's credentials.
type testPeer struct {
	t   *testing.T
	srv *httptest.Server
	rp  *httputil.ReverseProxy

	mu    sync.Mutex
	fault func(w http.ResponseWriter, r *http.Request) bool
	reqs  []string // "GET /v2/…", as they came
}

func startPeer(t *testing.T, reg *registry.Registry, cfg *tls.Config) *testPeer {
	t.Helper()
	p := &testPeer{t: t, rp: httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: reg.Host()})}
	p.rp.ErrorLog = log.New(io.Discard, "", 0)
	p.srv = httptest.NewUnstartedServer(p)
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	p.srv.TLS = cfg
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testPeer) Addr() string { return p.srv.Listener.Addr().String() }

func (p *testPeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a := r.Header.Get("Authorization"); a != "" {
		p.t.Errorf("peer got %s %s with an Authorization header %q: the registry's credentials reached a peer", r.Method, r.URL.Path, a)
	}
	if !strings.HasPrefix(r.URL.Path, "/v2/") || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		p.t.Errorf("peer: unexpected request %s %s", r.Method, r.URL)
	}
	p.mu.Lock()
	p.reqs = append(p.reqs, r.Method+" "+r.URL.Path)
	fault := p.fault
	p.mu.Unlock()
	if fault != nil && fault(w, r) {
		return
	}
	p.rp.ServeHTTP(w, r)
}

// requests counts the requests whose "METHOD path" contains s.
func (p *testPeer) requests(s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.reqs {
		if strings.Contains(r, s) {
			n++
		}
	}
	return n
}

// site is an origin holding a model and a registry with the same content
// that the test's peers serve.
type site struct {
	origin, peerReg *registry.Registry
	m               model
	ca              *siteCA
}

func newPeerSite(t *testing.T) *site {
	t.Helper()
	origin, peerReg := startRegistry(t), startRegistry(t)
	m := pushModel(t, origin.Host(), "models/m", "v1", fourFiles(21))
	if _, err := oras.Copy(context.Background(), repository(t, origin.Host(), "models/m"), "v1",
		repository(t, peerReg.Host(), "models/m"), "v1", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	return &site{origin: origin, peerReg: peerReg, m: m, ca: newSiteCA(t)}
}

// byDigest is the model's reference by digest, as the edge puller pulls.
func (s *site) byDigest() string {
	return s.origin.Host() + "/models/m@" + s.m.manifest.Digest.String()
}

func (s *site) peer(t *testing.T) *testPeer { return startPeer(t, s.peerReg, s.ca.serverTLS(t)) }

// pull pulls ref with peers into a new store, with a counting client for
// the origin, and checks that the store holds the model.
func (s *site) pull(t *testing.T, ref string, c *counter, peers []fetch.Peer, tune func(*fetch.Options)) fetch.Result {
	t.Helper()
	opts := fetch.Options{PlainHTTP: true, Client: c.client(), Backoff: fastRetry, Peers: peers, PeerTLS: s.ca.clientTLS(t)}
	if tune != nil {
		tune(&opts)
	}
	st := newStore(t)
	_, _, res, err := fetch.Pull(context.Background(), st, ref, opts)
	if err != nil {
		t.Fatalf("pull %s with peers: %v", ref, err)
	}
	assertStored(t, st, s.m)
	if sum := res.FromOrigin + res.FromPeers + res.FromMirrors; sum != res.Fetched {
		t.Errorf("bytes by source %d+%d+%d do not add up to Fetched %d", res.FromOrigin, res.FromPeers, res.FromMirrors, res.Fetched)
	}
	return res
}

// total is what a full pull of the model receives: manifest, config and
// every file.
func (s *site) total(t *testing.T) int64 {
	t.Helper()
	b, err := content.FetchAll(context.Background(), repository(t, s.origin.Host(), "models/m"), s.m.manifest)
	if err != nil {
		t.Fatal(err)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	n := int64(len(b)) + man.Config.Size
	for _, f := range s.m.files {
		n += int64(len(f))
	}
	return n
}

// dropped renders Result.Dropped as "node:Reason" for comparison.
func dropped(res fetch.Result) []string {
	var out []string
	for _, d := range res.Dropped {
		out = append(out, d.Node+":"+d.Reason)
	}
	return out
}

// TestPeerServes: with a peer that holds the model, a pull by digest (as
// the edge puller pulls) asks the origin nothing, and a pull by tag asks
// it only what the tag names: every byte comes from the peer, which never
// sees the tag. Every blob is announced before it is fetched, the manifest
// first, and let go once.
func TestPeerServes(t *testing.T) {
	s := newPeerSite(t)
	p := s.peer(t)
	peers := []fetch.Peer{{Node: "edge-2", Addr: p.Addr()}}

	var (
		mu  sync.Mutex
		log []string
	)
	record := func(line string) {
		mu.Lock()
		log = append(log, line)
		mu.Unlock()
	}
	tune := func(o *fetch.Options) {
		o.Announce = func(d ocispec.Descriptor) func() {
			record(fmt.Sprintf("announce %s %d", d.Digest, d.Size))
			return func() { record("done " + d.Digest.String()) }
		}
		o.Progress = func(e fetch.Event) {
			if e.Kind == fetch.Started {
				record("started " + e.Digest.String())
			}
		}
	}
	c := newCounter(t)
	res := s.pull(t, s.byDigest(), c, peers, tune)
	if res.FromPeers != s.total(t) || res.FromOrigin != 0 || len(res.Dropped) != 0 {
		t.Errorf("by digest: %d bytes from peers, %d from the origin, dropped %v; want all %d from the peer", res.FromPeers, res.FromOrigin, dropped(res), s.total(t))
	}
	if n := len(c.requests(s.origin.Host(), http.MethodGet, "")) + len(c.requests(s.origin.Host(), http.MethodHead, "")); n != 0 {
		t.Errorf("by digest: the origin got %d requests, want none", n)
	}

	mu.Lock()
	want := fmt.Sprintf("announce %s -1", s.m.manifest.Digest)
	if len(log) == 0 || log[0] != want {
		t.Errorf("first announcement %q, want the manifest's, size unknown: %q", log[:min(len(log), 1)], want)
	}
	firstStart := len(log)
	announced, done := map[string]int{}, map[string]int{}
	for i, l := range log {
		verb, rest, _ := strings.Cut(l, " ")
		d, _, _ := strings.Cut(rest, " ")
		switch verb {
		case "announce":
			announced[d]++
			if i > firstStart {
				t.Errorf("%s announced after a layer had started", d)
			}
		case "done":
			done[d]++
		case "started":
			firstStart = min(firstStart, i)
		}
	}
	mu.Unlock()
	if len(announced) != len(s.m.files)+2 { // and the manifest and the config
		t.Errorf("%d blobs announced, want %d: %v", len(announced), len(s.m.files)+2, announced)
	}
	for d, n := range announced {
		want := 1
		if d == s.m.manifest.Digest.String() {
			want = 2 // its size unknown, then known
		}
		if n != want || done[d] != want {
			t.Errorf("%s announced %d times and let go %d times, want %d each", d, n, done[d], want)
		}
	}

	c = newCounter(t)
	res = s.pull(t, s.m.ref, c, peers, nil)
	if res.FromPeers != s.total(t) || res.FromOrigin != 0 {
		t.Errorf("by tag: %d bytes from peers, %d from the origin; want all %d from the peer", res.FromPeers, res.FromOrigin, s.total(t))
	}
	if heads := c.requests(s.origin.Host(), http.MethodHead, "/manifests/v1"); len(heads) != 1 {
		t.Errorf("by tag: the origin got %d HEADs of the tag, want 1", len(heads))
	}
	if n := p.requests("/manifests/v1"); n != 0 {
		t.Errorf("a peer was asked %d times what a tag names: only the origin says", n)
	}
}

// TestPeerFaults: a peer that does not hold a blob, lies, stalls, dies,
// refuses TLS or asks for credentials costs time, never the pull: the next
// source, here the origin, supplies the rest, and a misbehaving peer is
// dropped for the pull and reported once.
func TestPeerFaults(t *testing.T) {
	type fixture struct {
		s     *site
		peer  *testPeer
		addr  string // the peer's address in Options.Peers
		c     *counter
		res   fetch.Result
		total int64
		w     []byte // weights.bin
	}
	weightsFromOrigin := func(t *testing.T, f *fixture, rng string, n int64) {
		t.Helper()
		gets := f.c.blobGETs(f.s.origin.Host(), f.s.m.digestOf("weights.bin"))
		if len(gets) != 1 || gets[0].Range != rng || gets[0].Body != n {
			t.Errorf("origin GETs of weights.bin: %+v; want one with Range %q of %d bytes", gets, rng, n)
		}
	}
	allFromOrigin := func(t *testing.T, f *fixture) {
		t.Helper()
		if f.res.FromPeers != 0 || f.res.FromOrigin != f.total {
			t.Errorf("%d bytes from the peer, %d from the origin; want all %d from the origin", f.res.FromPeers, f.res.FromOrigin, f.total)
		}
	}
	// relay answers r from the peer's registry, body passed through edit.
	relay := func(p *testPeer, w http.ResponseWriter, r *http.Request, edit func([]byte) []byte) {
		rec := httptest.NewRecorder()
		p.rp.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if edit != nil {
			body = edit(body)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	}
	isWeights := func(f *fixture, r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+f.s.m.digestOf("weights.bin").String())
	}
	half := int64(len(fourFiles(21)["weights.bin"]) / 2)

	for _, tc := range []struct {
		name  string
		stall time.Duration
		// serve starts the peer and returns it (nil if there is none) and
		// its address.
		serve func(t *testing.T, f *fixture) (*testPeer, string)
		// fault is the peer's script.
		fault func(f *fixture) func(w http.ResponseWriter, r *http.Request) bool
		drop  string // the reason the peer is dropped, "" if it is not
		check func(t *testing.T, f *fixture)
	}{
		{name: "does not hold a blob (404)", fault: func(f *fixture) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !isWeights(f, r) {
					return false
				}
				registryError(w, http.StatusNotFound, "BLOB_UNKNOWN", "not held")
				return true
			}
		}, check: func(t *testing.T, f *fixture) {
			weightsFromOrigin(t, f, "", int64(len(f.w)))
			if f.res.FromOrigin != int64(len(f.w)) {
				t.Errorf("%d bytes from the origin, want only weights.bin's %d", f.res.FromOrigin, len(f.w))
			}
		}},
		{name: "serves corrupt bytes", drop: fetch.PeerCorrupt, fault: func(f *fixture) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !isWeights(f, r) {
					return false
				}
				relay(f.peer, w, r, func(b []byte) []byte { b[len(b)/3] ^= 1; return b })
				return true
			}
		}, check: func(t *testing.T, f *fixture) {
			weightsFromOrigin(t, f, "", int64(len(f.w))) // from byte 0: none of the peer's bytes is kept
		}},
		{name: "serves another manifest", drop: fetch.PeerCorrupt, fault: func(f *fixture) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				relay(f.peer, w, r, func(b []byte) []byte { b[len(b)/2] ^= 1; return b })
				return true
			}
		}, check: func(t *testing.T, f *fixture) {
			// The bad manifest's bytes were received, and count.
			if f.res.FromPeers != f.s.m.manifest.Size || f.res.FromOrigin != f.total {
				t.Errorf("%d bytes from the peer, %d from the origin; want the bad manifest's %d from the peer, all %d from the origin",
					f.res.FromPeers, f.res.FromOrigin, f.s.m.manifest.Size, f.total)
			}
		}},
		{name: "stalls halfway", stall: time.Second, drop: fetch.PeerStalled, fault: func(f *fixture) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !isWeights(f, r) {
					return false
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(f.w)))
				w.Write(f.w[:half])
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return true
			}
		}, check: func(t *testing.T, f *fixture) {
			weightsFromOrigin(t, f, rangeFrom(half), int64(len(f.w))-half) // the peer's half is kept
		}},
		{name: "serves corrupt bytes, then stalls", stall: time.Second, drop: fetch.PeerCorrupt, fault: func(f *fixture) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !isWeights(f, r) {
					return false
				}
				bad := slices.Clone(f.w[:half])
				bad[half/2] ^= 1
				w.Header().Set("Content-Length", fmt.Sprint(len(f.w)))
				w.Write(bad)
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return true
			}
		}, check: func(t *testing.T, f *fixture) {
			// The origin continues after the peer's half; the whole fails
			// its digest; the origin sends it again from byte 0.
			gets := f.c.blobGETs(f.s.origin.Host(), f.s.m.digestOf("weights.bin"))
			if len(gets) != 2 || gets[0].Range != rangeFrom(half) || gets[1].Range != "" || gets[1].Body != int64(len(f.w)) {
				t.Errorf("origin GETs of weights.bin: %+v; want the rest after the peer's half, then the whole blob", gets)
			}
		}},
		{name: "dies halfway (a seed killed)", drop: fetch.PeerUnreachable, fault: func(f *fixture) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !isWeights(f, r) {
					return false
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(f.w)))
				w.Write(f.w[:half])
				w.(http.Flusher).Flush()
				f.peer.srv.Listener.Close()
				f.peer.srv.CloseClientConnections()
				panic(http.ErrAbortHandler)
			}
		}, check: func(t *testing.T, f *fixture) {
			weightsFromOrigin(t, f, rangeFrom(half), int64(len(f.w))-half)
		}},
		{name: "refuses this node's certificate", drop: fetch.PeerRefused, serve: func(t *testing.T, f *fixture) (*testPeer, string) {
			cfg := f.s.ca.serverTLS(t)
			cfg.ClientCAs = newSiteCA(t).pool // another site's
			p := startPeer(t, f.s.peerReg, cfg)
			return p, p.Addr()
		}, check: allFromOrigin},
		{name: "has a certificate of another CA", drop: fetch.PeerRefused, serve: func(t *testing.T, f *fixture) (*testPeer, string) {
			p := startPeer(t, f.s.peerReg, newSiteCA(t).serverTLS(t))
			return p, p.Addr()
		}, check: allFromOrigin},
		{name: "cannot be reached", drop: fetch.PeerUnreachable, serve: func(t *testing.T, f *fixture) (*testPeer, string) {
			return nil, closedAddr(t)
		}, check: allFromOrigin},
		{name: "asks for credentials (401)", drop: fetch.PeerRefused, fault: func(f *fixture) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("WWW-Authenticate", `Basic realm="peer"`)
				registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "credentials, please")
				return true
			}
		}, check: func(t *testing.T, f *fixture) {
			allFromOrigin(t, f)
			if n := f.peer.requests(""); n != 1 {
				t.Errorf("the peer got %d requests, want 1: a dropped peer is not asked again", n)
			}
		}},
		{name: "fails (500)", fault: func(f *fixture) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !isWeights(f, r) {
					return false
				}
				registryError(w, http.StatusInternalServerError, "UNKNOWN", "disk on fire")
				return true
			}
		}, check: func(t *testing.T, f *fixture) {
			weightsFromOrigin(t, f, "", int64(len(f.w)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPeerSite(t)
			f := &fixture{s: s, c: newCounter(t), total: s.total(t), w: s.m.files["weights.bin"]}
			if tc.serve != nil {
				f.peer, f.addr = tc.serve(t, f)
			} else {
				f.peer = s.peer(t)
				f.addr = f.peer.Addr()
			}
			if tc.fault != nil {
				f.peer.fault = tc.fault(f)
			}
			f.res = s.pull(t, s.byDigest(), f.c, []fetch.Peer{{Node: "edge-2", Addr: f.addr}}, func(o *fetch.Options) {
				o.StallTimeout = tc.stall
				// A registry client that would give its credentials to
				// anyone who asks: the peers' client must not be it.
				o.Client = &auth.Client{Client: &http.Client{Transport: f.c}, Cache: auth.NewCache(),
					Credential: func(context.Context, string) (auth.Credential, error) {
						return auth.Credential{Username: "puller", Password: "registry-secret"}, nil
					}}
			})
			for _, d := range f.res.Dropped {
				t.Logf("dropped %s (%s): %v", d.Node, d.Reason, d.Err)
			}
			var want []string
			if tc.drop != "" {
				want = []string{"edge-2:" + tc.drop}
			}
			if got := dropped(f.res); !equal(got, want) {
				t.Errorf("dropped %v, want %v (%v)", got, want, f.res.Dropped)
			}
			if got := bodyBytes(f.c.requests(s.origin.Host(), http.MethodGet, "")); got != f.res.FromOrigin {
				t.Errorf("FromOrigin = %d, but the origin sent %d bytes", f.res.FromOrigin, got)
			}
			tc.check(t, f)
		})
	}
}

// TestCorruptPeersEndAtOrigin: every peer that serves a corrupt copy is
// dropped and the blob is fetched again from 0 from the next source, however
// many lie; an honest peer after the liars spares the origin.
func TestCorruptPeersEndAtOrigin(t *testing.T) {
	for _, tc := range []struct {
		name       string
		honest     bool // a fourth, honest peer follows the three liars
		wantOrigin bool
	}{
		{"three liars", false, true},
		{"three liars, then an honest peer", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPeerSite(t)
			w := s.m.digestOf("weights.bin")
			var peers []fetch.Peer
			var liars []*testPeer
			for i := range 3 {
				p := s.peer(t)
				p.fault = func(rw http.ResponseWriter, r *http.Request) bool {
					if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+w.String()) {
						return false
					}
					rec := httptest.NewRecorder()
					p.rp.ServeHTTP(rec, r)
					b := rec.Body.Bytes()
					b[i*1000] ^= 0xff // each lies differently
					rw.Header().Set("Content-Length", fmt.Sprint(len(b)))
					rw.Write(b)
					return true
				}
				liars = append(liars, p)
				peers = append(peers, fetch.Peer{Node: fmt.Sprintf("liar-%d", i), Addr: p.Addr()})
			}
			if tc.honest {
				peers = append(peers, fetch.Peer{Node: "honest", Addr: s.peer(t).Addr()})
			}
			c := newCounter(t)
			res := s.pull(t, s.byDigest(), c, peers, nil)
			if got, want := dropped(res), []string{"liar-0:Corrupt", "liar-1:Corrupt", "liar-2:Corrupt"}; !equal(got, want) {
				t.Errorf("dropped %v, want %v", got, want)
			}
			for i, p := range liars {
				if n := p.requests("GET /v2/models/m/blobs/" + w.String()); n != 1 {
					t.Errorf("liar-%d was asked %d times for weights.bin, want once", i, n)
				}
			}
			gets := c.blobGETs(s.origin.Host(), w)
			switch {
			case tc.wantOrigin && (len(gets) != 1 || gets[0].Range != "" || gets[0].Body != int64(len(s.m.files["weights.bin"]))):
				t.Errorf("origin GETs of weights.bin %+v, want one of the whole blob", gets)
			case !tc.wantOrigin && res.FromOrigin != 0:
				t.Errorf("%d bytes from the origin, want none: the honest peer had it", res.FromOrigin)
			}
			if res.Retries < 3 {
				t.Errorf("Retries = %d, want at least the 3 refetches", res.Retries)
			}
		})
	}
}

// TestPeersNeedTLS: without the site's TLS configuration no peer is asked:
// peers are not reached in the clear.
func TestPeersNeedTLS(t *testing.T) {
	s := newPeerSite(t)
	p := s.peer(t)
	c := newCounter(t)
	res := s.pull(t, s.byDigest(), c, []fetch.Peer{{Node: "edge-2", Addr: p.Addr()}}, func(o *fetch.Options) { o.PeerTLS = nil })
	if n := p.requests(""); n != 0 || res.FromPeers != 0 {
		t.Errorf("without PeerTLS the peer got %d requests and supplied %d bytes; want none", n, res.FromPeers)
	}
}

// TestPeerNeverSeesRegistryCredentials: with an origin that wants
// credentials, the pull authenticates at the origin for the tag, and the
// peer, which serves every byte, never receives an Authorization header
// (testPeer fails the test if it does).
func TestPeerNeverSeesRegistryCredentials(t *testing.T) {
	s := newPeerSite(t)
	backend := &url.URL{Scheme: "http", Host: s.origin.Host()}
	var authorized sync.Map
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, pw, ok := r.BasicAuth(); !ok || u != "puller" || pw != "registry-secret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="origin"`)
			registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "credentials, please")
			return
		}
		authorized.Store(r.Method+" "+r.URL.Path, true)
		httputil.NewSingleHostReverseProxy(backend).ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	p := s.peer(t)
	c := newCounter(t)
	ref := front.Listener.Addr().String() + "/models/m:v1"
	res := s.pull(t, ref, c, []fetch.Peer{{Node: "edge-2", Addr: p.Addr()}}, func(o *fetch.Options) {
		o.Client = &auth.Client{Client: &http.Client{Transport: c}, Cache: auth.NewCache(),
			Credential: auth.StaticCredential(front.Listener.Addr().String(), auth.Credential{Username: "puller", Password: "registry-secret"})}
	})
	if _, ok := authorized.Load("HEAD /v2/models/m/manifests/v1"); !ok {
		t.Errorf("the origin never saw an authorized HEAD of the tag")
	}
	if res.FromPeers != s.total(t) {
		t.Errorf("%d bytes from the peer, want all %d", res.FromPeers, s.total(t))
	}
	if p.requests("") == 0 {
		t.Errorf("the peer got no request")
	}
}
