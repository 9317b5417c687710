package agent_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/registry"
)

// env is a registry behind a proxy that counts requests and can play dead,
// and a node root for agents.
type env struct {
	t     *testing.T
	reg   *registry.Registry
	proxy *proxy
	host  string // the proxy's host:port, what references name
	root  string
}

func newEnv(t *testing.T) *env {
	reg := registry.StartForTest(t)
	// http.Server.Shutdown waits for idle connections the transport keeps.
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	p := &proxy{rp: httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: reg.Host()})}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return &env{t: t, reg: reg, proxy: p, host: strings.TrimPrefix(srv.URL, "http://"), root: t.TempDir()}
}

// proxy forwards to the registry, counting what it serves.
type proxy struct {
	rp      *httputil.ReverseProxy
	down    atomic.Bool
	missing atomic.Int64 // the next `missing` requests get a 404, as before a tag is pushed
	gets    atomic.Int64 // GETs of manifests and blobs
	heads   atomic.Int64
	bodyOut atomic.Int64 // response body bytes of GETs
	writes  atomic.Int64 // POST, PATCH and PUT: uploads
	sent    atomic.Int64 // request body bytes of uploads that reached the registry
	upRate  atomic.Int64 // if set, upload bodies pass at this many bytes per second
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.down.Load() {
		// Like a cut link: no answer at all.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if p.missing.Add(-1) >= 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
		return
	}
	p.missing.Store(0)
	switch r.Method {
	case http.MethodHead:
		p.heads.Add(1)
	case http.MethodPost, http.MethodPatch, http.MethodPut:
		p.writes.Add(1)
		r.Body = &uploadBody{ReadCloser: r.Body, p: p}
	case http.MethodGet:
		if strings.Contains(r.URL.Path, "/manifests/") || strings.Contains(r.URL.Path, "/blobs/") {
			p.gets.Add(1)
		}
	}
	p.rp.ServeHTTP(&countingWriter{ResponseWriter: w, n: &p.bodyOut}, r)
}

// uploadBody counts, and paces when upRate is set, what an upload sends.
type uploadBody struct {
	io.ReadCloser
	p *proxy
}

func (b *uploadBody) Read(buf []byte) (int, error) {
	if rate := b.p.upRate.Load(); rate > 0 {
		const chunk = 32 << 10
		if len(buf) > chunk {
			buf = buf[:chunk]
		}
		time.Sleep(time.Duration(float64(len(buf)) / float64(rate) * float64(time.Second)))
	}
	n, err := b.ReadCloser.Read(buf)
	b.p.sent.Add(int64(n))
	return n, err
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// push packs files as a model into repo and tags it; it returns the
// manifest digest.
func (e *env) push(repo, tag string, files map[string]string) digest.Digest {
	e.t.Helper()
	return e.reg.PushForTest(e.t, repo, tag, files).Digest
}

func (e *env) ref(repoTag string) string { return e.host + "/" + repoTag }

// chanSource is a Source a test drives: send a list, the agent gets it.
type chanSource chan []agent.Desired

func (c chanSource) Watch(ctx context.Context, set func([]agent.Desired)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case list := <-c:
			set(list)
		}
	}
}

// recorder keeps every status reported.
type recorder struct {
	mu   sync.Mutex
	last map[string]agent.Status
	all  []agent.Status
}

func (r *recorder) Report(s agent.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]agent.Status{}
	}
	r.last[s.Name] = s
	r.all = append(r.all, s)
}

func (r *recorder) get(name string) (agent.Status, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.last[name]
	return s, ok
}

func (r *recorder) count(name string, p agent.Phase) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.all {
		if s.Name == name && s.Phase == p {
			n++
		}
	}
	return n
}

func (r *recorder) sawPhase(name string, p agent.Phase) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.all {
		if s.Name == name && s.Phase == p {
			return true
		}
	}
	return false
}

// running is an agent under test.
type running struct {
	*agent.Agent
	src    chanSource
	rec    *recorder
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

func (e *env) start(mutate func(*agent.Options)) *running {
	e.t.Helper()
	r := &running{src: make(chanSource), rec: &recorder{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	opts := agent.Options{
		Root:            e.root,
		Reporter:        r.rec,
		Log:             slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Backoff:         func(int) time.Duration { return 50 * time.Millisecond },
		ResolveInterval: time.Hour,
	}
	if mutate != nil {
		mutate(&opts)
	}
	a, err := agent.New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	r.Agent = a
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- a.Run(ctx, r.src) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

func (r *running) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Run did not return within 10 s of its context ending")
	}
	if t.Failed() {
		t.Logf("agent log:\n%s", r.logs)
	}
}

func (r *running) set(list ...agent.Desired) {
	select {
	case r.src <- list:
	case <-time.After(5 * time.Second):
		panic("the agent does not take desired lists")
	}
}

// waitFor polls cond until it holds or 15 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *running) waitReady(t *testing.T, name string, d digest.Digest) agent.Status {
	t.Helper()
	waitFor(t, name+" Ready at "+d.String(), func() bool {
		s, ok := r.rec.get(name)
		return ok && s.Phase == agent.Ready && s.Digest == d
	})
	s, _ := r.rec.get(name)
	return s
}

// readCurrent reads a file the way a workload would.
func (e *env) readCurrent(name, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(e.root, "artifacts", filepath.FromSlash(name), "current", file))
	return string(b), err
}

func (e *env) mustRead(name, file string) string {
	e.t.Helper()
	s, err := e.readCurrent(name, file)
	if err != nil {
		e.t.Fatalf("a workload reading %s/current/%s: %v", name, file, err)
	}
	return s
}

func (e *env) hasBlob(content string) bool {
	_, err := os.Stat(filepath.Join(e.root, "store", "blobs", "sha256", digest.FromString(content).Encoded()))
	return err == nil
}

func (e *env) versions(name string) int {
	entries, _ := os.ReadDir(filepath.Join(e.root, "artifacts", filepath.FromSlash(name), "versions"))
	return len(entries)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
