package kube_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"oras.land/oras-go/v2/registry/remote"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/kube"
	"github.com/bargeml/barge/internal/testenv"
	"github.com/bargeml/barge/registry"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }

const node = "edge-1"

// site is a registry behind a proxy that can pace what it sends, a
// namespace, and a node root.
type site struct {
	t    *testing.T
	reg  *registry.Registry
	host string // the pacing proxy's host:port, what references name
	rate atomic.Int64
	ns   string
	root string
	// verify, if set, is the agent's Options.Verify.
	verify func(context.Context, agent.Desired, ocispec.Descriptor) error
	// peerTLS, if set, is the agent's Options.Fetch.PeerTLS.
	peerTLS *tls.Config
}

func newSite(t *testing.T) *site {
	s := &site{t: t, reg: registry.StartForTest(t), ns: env.Namespace(t), root: t.TempDir()}
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: s.reg.Host()})
	rp.FlushInterval = -1
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method == http.MethodGet {
			r.Body = &pacedBody{ReadCloser: r.Body, rate: &s.rate}
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	s.host = strings.TrimPrefix(srv.URL, "http://")
	return s
}

// pacedBody sends at most rate bytes per second when rate is set.
type pacedBody struct {
	io.ReadCloser
	rate *atomic.Int64
}

func (b *pacedBody) Read(buf []byte) (int, error) {
	if rate := b.rate.Load(); rate > 0 {
		const chunk = 64 << 10
		if len(buf) > chunk {
			buf = buf[:chunk]
		}
		time.Sleep(time.Duration(float64(len(buf)) / float64(rate) * float64(time.Second)))
	}
	return b.ReadCloser.Read(buf)
}

// pushed is an artifact in the registry.
type pushed struct {
	ref    string // host/repo@digest, through the pacing proxy
	digest digest.Digest
	bytes  int64 // config and layers: what status.bytesTotal counts
}

func (s *site) push(repo string, files map[string]string) pushed {
	s.t.Helper()
	ctx := context.Background()
	dir := s.t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	r, err := remote.NewRepository(s.reg.Host() + "/" + repo)
	if err != nil {
		s.t.Fatal(err)
	}
	r.PlainHTTP = true
	desc, err := artifact.Pack(ctx, r, dir, artifact.PackOptions{})
	if err != nil {
		s.t.Fatalf("push %s: %v", repo, err)
	}
	a, err := artifact.Inspect(ctx, r, desc)
	if err != nil {
		s.t.Fatal(err)
	}
	return pushed{ref: s.host + "/" + repo + "@" + desc.Digest.String(), digest: desc.Digest, bytes: a.Size - desc.Size}
}

// create makes a NodeArtifact for nodeName as the controller does: label,
// finalizer, spec.
func (s *site) create(name, nodeName string, p pushed) *v1alpha1.NodeArtifact {
	s.t.Helper()
	return s.createWith(name, nodeName, p, nil)
}

// createWith is create with mutate applied to the object first.
func (s *site) createWith(name, nodeName string, p pushed, mutate func(*v1alpha1.NodeArtifact)) *v1alpha1.NodeArtifact {
	s.t.Helper()
	na := &v1alpha1.NodeArtifact{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: name,
			Labels:     map[string]string{v1alpha1.NodeLabel: nodeName},
			Finalizers: []string{v1alpha1.FilesFinalizer}},
		Spec: v1alpha1.NodeArtifactSpec{NodeName: nodeName, Reference: p.ref, Digest: p.digest.String(), Insecure: true},
	}
	if mutate != nil {
		mutate(na)
	}
	if err := env.Client.Create(context.Background(), na); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { s.forget(name) })
	return na
}

// forget removes a NodeArtifact whatever its finalizers, so that a
// namespace's leftovers do not stay in etcd for the next tests.
func (s *site) forget(name string) {
	ctx := context.Background()
	na := &v1alpha1.NodeArtifact{}
	if env.Client.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, na) != nil {
		return
	}
	env.Client.Patch(ctx, na, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`)))
	env.Client.Delete(ctx, na)
}

func (s *site) get(name string) (*v1alpha1.NodeArtifact, error) {
	na := &v1alpha1.NodeArtifact{}
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: s.ns, Name: name}, na)
	return na, err
}

// waitStatus waits until the NodeArtifact's status satisfies cond.
func (s *site) waitStatus(name, what string, cond func(v1alpha1.NodeArtifactStatus) bool) *v1alpha1.NodeArtifact {
	s.t.Helper()
	var na *v1alpha1.NodeArtifact
	waitFor(s.t, name+": "+what, func() bool {
		var err error
		na, err = s.get(name)
		return err == nil && cond(na.Status)
	})
	return na
}

func (s *site) waitReady(name string, p pushed) *v1alpha1.NodeArtifact {
	s.t.Helper()
	return s.waitStatus(name, "Ready at "+p.digest.String(), func(st v1alpha1.NodeArtifactStatus) bool {
		return st.Phase == v1alpha1.NodeArtifactReady && st.Digest == p.digest.String()
	})
}

func (s *site) dir(name string) string { return filepath.Join(s.root, "artifacts", s.ns, name) }

func (s *site) read(name, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(s.dir(name), "current", file))
	return string(b), err
}

// puller is the agent and the kube Node on one root, run in-process.
type puller struct {
	*agent.Agent
	node   *kube.Node
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// start runs a puller for node through cfg; if nil, pullerConfig, as a user
// holding only the chart's puller rules.
func (s *site) start(cfg *rest.Config, mutate func(*kube.Options)) *puller {
	s.t.Helper()
	if cfg == nil {
		cfg = pullerConfig(s.t)
	}
	p := &puller{logs: &syncBuffer{}, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var a *agent.Agent
	opts := kube.Options{
		Config:      cfg,
		NodeName:    node,
		ArtifactDir: func(name string) string { return a.ArtifactDir(name) },
		Backoff:     func(int) time.Duration { return 100 * time.Millisecond },
		Log:         log,
	}
	if mutate != nil {
		mutate(&opts)
	}
	n, err := kube.New(opts)
	if err != nil {
		s.t.Fatal(err)
	}
	a, err = agent.New(agent.Options{
		Root:            s.root,
		NodeName:        node,
		UploadPoll:      50 * time.Millisecond,
		Reporter:        n,
		Removed:         n.Removed,
		Backoff:         func(int) time.Duration { return 100 * time.Millisecond },
		ResolveInterval: time.Hour,
		Log:             log,
		Verify:          s.verify,
		Fetch:           fetch.Options{PeerTLS: s.peerTLS},
	})
	if err != nil {
		s.t.Fatal(err)
	}
	p.Agent, p.node = a, n
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- a.Run(ctx, n) }()
	s.t.Cleanup(func() { p.stop(s.t) })
	return p
}

func (p *puller) stop(t *testing.T) {
	t.Helper()
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("the puller did not stop within 15 s")
	}
	if t.Failed() {
		t.Logf("puller log:\n%s", p.logs)
	}
}

func (p *puller) status(name string) agent.Status {
	for _, s := range p.Statuses() {
		if s.Name == name {
			return s
		}
	}
	return agent.Status{}
}

// counter counts the requests that reach the API server through a rest
// config, by method and path, and the status patches that succeeded.
type counter struct {
	mu      sync.Mutex
	byPath  map[string]int // "PATCH /apis/.../status" → successful requests
	lists   int
	watches int
	listQ   []url.Values                      // the query of each list that succeeded
	rewrite func(*http.Request) *http.Request // if set, what is sent instead of each request
}

func (c *counter) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			c.mu.Lock()
			rewrite := c.rewrite
			c.mu.Unlock()
			if rewrite != nil {
				r = rewrite(r)
			}
			resp, err := rt.RoundTrip(r)
			if err == nil && resp.StatusCode < 300 {
				c.mu.Lock()
				if c.byPath == nil {
					c.byPath = map[string]int{}
				}
				c.byPath[r.Method+" "+r.URL.Path]++
				if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/nodeartifacts") {
					if r.URL.Query().Get("watch") == "true" {
						c.watches++
					} else {
						c.lists++
						c.listQ = append(c.listQ, r.URL.Query())
					}
				}
				c.mu.Unlock()
			}
			return resp, err
		})
	})
	return cfg
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func statusPath(ns, name string) string {
	return "PATCH /apis/barge.dev/v1alpha1/namespaces/" + ns + "/nodeartifacts/" + name + "/status"
}

func (c *counter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byPath[key]
}

func (c *counter) listQueries() []url.Values {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.listQ)
}

func (c *counter) listsAndWatches() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lists, c.watches
}

// tcpProxy forwards TCP connections to the API server; cut closes every
// connection and refuses new ones until restore, like a link that went down.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *tcpProxy) forward(c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(up) {
		c.Close()
		if up != nil {
			up.Close()
		}
		return
	}
	go func() { io.Copy(up, c); up.Close() }()
	io.Copy(c, up)
	c.Close()
}

func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *tcpProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

// config is pullerConfig through the proxy.
func (p *tcpProxy) config(t *testing.T) *rest.Config {
	cfg := pullerConfig(t)
	u, _ := url.Parse(cfg.Host)
	u.Host = p.ln.Addr().String()
	cfg.Host = u.String()
	return cfg
}

func apiHostPort(t *testing.T) string {
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
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

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

func randomString(n int, seed uint64) string {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}
