package e2e

import (
	"crypto/rand"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bargeml/barge/registry"
)

// uploadProxy sits in front of a registry and counts the blob bytes clients
// upload (PATCH and PUT bodies), and can call a function once, from its
// copy loop, when the count reaches a mark: a kill at an exact point,
// whatever the client's speed.
type uploadProxy struct {
	*httptest.Server
	sent atomic.Int64

	mu   sync.Mutex
	at   int64
	trip func()
}

func newUploadProxy(t *testing.T, target string) *uploadProxy {
	u, _ := url.Parse(target)
	p := &uploadProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ErrorLog = log.New(io.Discard, "", 0) // the killed client's cut body
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/uploads/") && r.Body != nil && (r.Method == http.MethodPatch || r.Method == http.MethodPut) {
			r.Body = &uploadBody{ReadCloser: r.Body, p: p}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *uploadProxy) tripAt(n int64, fn func()) {
	p.mu.Lock()
	p.at, p.trip = n, fn
	p.mu.Unlock()
}

type uploadBody struct {
	io.ReadCloser
	p *uploadProxy
}

func (b *uploadBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf[:min(len(buf), 64<<10)])
	total := b.p.sent.Add(int64(n))
	b.p.mu.Lock()
	var fire func()
	if b.p.trip != nil && total >= b.p.at {
		fire, b.p.trip = b.p.trip, nil
	}
	b.p.mu.Unlock()
	if fire != nil {
		fire()
	}
	return n, err
}

// A `barge push` SIGKILLed half way through a 64 MiB file, run again,
// resumes at the registry's offset: the two runs upload at most 1.05x the
// file plus one 4 MiB chunk, and oras pulls back the same bytes.
func TestPushResumesAfterSIGKILL(t *testing.T) {
	reg := registry.StartForTest(t)
	const size = 64 << 20
	src := t.TempDir()
	f, _ := os.Create(filepath.Join(src, "weights.bin"))
	io.CopyN(f, rand.Reader, size)
	f.Close()
	os.WriteFile(filepath.Join(src, "config.json"), []byte(`{"layers": 12}`), 0o644)
	proxy := newUploadProxy(t, reg.URL())
	ref := strings.TrimPrefix(proxy.URL, "http://") + "/models/pushed:1"
	env := []string{"XDG_CACHE_HOME=" + t.TempDir()}

	cmd := exec.Command(bargeBin, "push", src, ref)
	cmd.Env = append(os.Environ(), env...)
	var killed atomic.Bool
	proxy.tripAt(size/2, func() {
		killed.Store(true)
		cmd.Process.Kill()
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("the first push neither finished nor got killed")
	}
	if !killed.Load() {
		t.Fatal("the first push finished before half of the file went up")
	}
	first := proxy.sent.Load()

	r := must(t, command{env: env}.run(t, bargeBin, "push", src, ref))
	if !strings.Contains(r.stderr, "Resuming") || !strings.Contains(r.stderr, "weights.bin") {
		t.Errorf("the rerun did not say it resumed:\n%s", r.stderr)
	}
	total := proxy.sent.Load()
	t.Logf("killed after %d MiB; %d MiB uploaded in all for a %d MiB file (%.4fx)", first>>20, total>>20, size>>20, float64(total)/size)
	if limit := 1.05*size + 4<<20; float64(total) > limit {
		t.Errorf("uploaded %.3fx the file over the kill and the rerun; want at most 1.05x plus one 4 MiB chunk", float64(total)/size)
	}

	out := t.TempDir()
	must(t, command{dir: out}.run(t, orasBin, "pull", "--plain-http", reg.Host()+"/models/pushed:1"))
	sameTree(t, tree(t, out), tree(t, src))
}
