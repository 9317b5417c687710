package fetch_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// startRegistry starts a real registry for the test. Its cleanup first
// drops idle client connections: http.Server.Shutdown waits 5 s for a
// connection that was dialled but never used, which the transport's
// connection racing leaves behind.
func startRegistry(t *testing.T) *registry.Registry {
	reg := registry.StartForTest(t)
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	return reg
}

// randomBytes returns n incompressible bytes, the same for the same seed.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// model is a directory of files pushed as a Barge model and tagged.
type model struct {
	ref      string // host/repo:tag
	manifest ocispec.Descriptor
	files    map[string][]byte
}

func (m model) digestOf(name string) digest.Digest { return digest.FromBytes(m.files[name]) }

// pushModel packs files with artifact.Pack, as `barge push` does, into
// repo on the registry at host and tags it.
func pushModel(t *testing.T, host, repo, tag string, files map[string][]byte) model {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := repository(t, host, repo)
	desc, err := artifact.Pack(ctx, r, dir, artifact.PackOptions{Metadata: artifact.Metadata{Name: repo, Version: tag}})
	if err != nil {
		t.Fatalf("push %s: %v", repo, err)
	}
	if err := r.Tag(ctx, desc, tag); err != nil {
		t.Fatal(err)
	}
	return model{ref: host + "/" + repo + ":" + tag, manifest: desc, files: files}
}

func repository(t *testing.T, host, repo string) *remote.Repository {
	t.Helper()
	r, err := remote.NewRepository(host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	return r
}

func newStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertStored checks that every file of m is committed in s, byte for byte.
func assertStored(t *testing.T, s *store.Store, m model) {
	t.Helper()
	for name, want := range m.files {
		got, err := os.ReadFile(s.BlobPath(digest.FromBytes(want)))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: stored blob differs from the pushed file", name)
		}
	}
}

// fastRetry keeps the retry tests quick; the default backoff is for real links.
func fastRetry(attempt int) time.Duration { return time.Millisecond }

// exchange is one request a counter saw.
type exchange struct {
	Method, Host, Path, Query, Range string
	Status                           int
	Err                              error
	Body                             int64 // response body bytes the client read
	At                               time.Time
}

// counter is an http.RoundTripper decorator that records every request and
// counts the response bytes the client really read.
type counter struct {
	base http.RoundTripper
	mu   sync.Mutex
	log  []*exchange
}

func newCounter(t *testing.T) *counter {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &counter{base: tr}
}

// client is what a user would pass: an auth.Client over the counter, with
// no retry transport so that request counts are exact.
func (c *counter) client() remote.Client {
	return &auth.Client{Client: &http.Client{Transport: c}, Cache: auth.NewCache()}
}

func (c *counter) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := &exchange{Method: req.Method, Host: req.URL.Host, Path: req.URL.Path, Query: req.URL.RawQuery, Range: req.Header.Get("Range"), At: time.Now()}
	c.mu.Lock()
	c.log = append(c.log, ex)
	c.mu.Unlock()
	resp, err := c.base.RoundTrip(req)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		ex.Err = err
		return nil, err
	}
	ex.Status = resp.StatusCode
	resp.Body = &countingBody{ReadCloser: resp.Body, c: c, ex: ex}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	c  *counter
	ex *exchange
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.mu.Lock()
	b.ex.Body += int64(n)
	b.c.mu.Unlock()
	return n, err
}

// requests returns the requests to host (any host if "") whose path ends
// with suffix, in order.
func (c *counter) requests(host, method, suffix string) []exchange {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []exchange
	for _, ex := range c.log {
		if (host == "" || ex.Host == host) && ex.Method == method && strings.HasSuffix(ex.Path, suffix) {
			out = append(out, *ex)
		}
	}
	return out
}

// blobGETs returns the GETs of blob d (any blob if d is "") sent to host.
func (c *counter) blobGETs(host string, d digest.Digest) []exchange {
	out := c.requests(host, http.MethodGet, "")
	var blobs []exchange
	for _, ex := range out {
		if strings.Contains(ex.Path, "/blobs/") && (d == "" || strings.HasSuffix(ex.Path, "/"+d.String())) {
			blobs = append(blobs, ex)
		}
	}
	return blobs
}

func bodyBytes(exs []exchange) int64 {
	var n int64
	for _, ex := range exs {
		n += ex.Body
	}
	return n
}

// events collects progress events from many goroutines.
type events struct {
	mu  sync.Mutex
	all []fetch.Event
}

func (e *events) record(ev fetch.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) of(d digest.Digest, kind fetch.EventKind) []fetch.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []fetch.Event
	for _, ev := range e.all {
		if ev.Digest == d && ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// proxy sits in front of a real registry and passes everything through,
// except the GETs of one blob, which it hands to a script that injects the
// fault a real registry cannot produce. It fails the test on any request
// that is not registry API.
type proxy struct {
	t      *testing.T
	srv    *httptest.Server
	origin *url.URL
	rp     *httputil.ReverseProxy

	target digest.Digest
	script func(n int, w http.ResponseWriter, r *http.Request) bool // true: handled

	// hold, if set, is called on every blob GET before it is served; the
	// function it returns when the response is written.
	hold func() (release func())

	mu   sync.Mutex
	hits int // GETs of target so far
}

func newProxy(t *testing.T, reg *registry.Registry) *proxy {
	t.Helper()
	u, _ := url.Parse(reg.URL())
	p := &proxy{t: t, origin: u, rp: httputil.NewSingleHostReverseProxy(u)}
	p.rp.ErrorLog = nil
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *proxy) Host() string { return p.srv.Listener.Addr().String() }

// fault sets the script for the GETs of d; n counts them from 1.
func (p *proxy) fault(d digest.Digest, script func(n int, w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	p.target, p.script = d, script
	p.mu.Unlock()
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/v2/") {
		p.t.Errorf("proxy: unexpected request %s %s", r.Method, r.URL)
		http.Error(w, "unexpected", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	script, target := p.script, p.target
	n := 0
	if r.Method == http.MethodGet && target != "" && strings.HasSuffix(r.URL.Path, "/blobs/"+target.String()) {
		p.hits++
		n = p.hits
	}
	p.mu.Unlock()
	if p.hold != nil && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		defer p.hold()()
	}
	if n > 0 && script != nil && script(n, w, r) {
		return
	}
	p.rp.ServeHTTP(w, r)
}

// upstream sends r to the registry as is.
func (p *proxy) upstream(r *http.Request) *http.Response {
	u := *p.origin
	u.Path, u.RawQuery = r.URL.Path, r.URL.RawQuery
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, u.String(), nil)
	req.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		p.t.Errorf("proxy: upstream: %v", err)
		panic(http.ErrAbortHandler)
	}
	return resp
}

// relay writes resp to w, passing the body through edit.
func relay(w http.ResponseWriter, resp *http.Response, edit func([]byte) []byte) {
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if edit != nil {
		body = edit(body)
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

// cutAfter sends the registry's headers and the first k bytes of its
// body, then drops the connection.
func (p *proxy) cutAfter(w http.ResponseWriter, r *http.Request, k int64) {
	resp := p.upstream(r)
	defer resp.Body.Close()
	for key, v := range resp.Header {
		w.Header()[key] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.CopyN(w, resp.Body, k)
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

// registryError answers like a registry that refuses.
func registryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

func equal(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

func itoa(n int64) string { return fmt.Sprint(n) }

func ocispecDesc(d digest.Digest) ocispec.Descriptor { return ocispec.Descriptor{Digest: d} }

// fileDesc is the layer descriptor of a file's bytes, as the store keys it.
func fileDesc(b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
}
