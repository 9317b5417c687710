package e2e

import (
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bargeml/barge/registry"
)

// countingProxy sits in front of a registry and counts the blob bytes it
// sends, to prove what a resumed pull did not download again. With a rate
// set it sends no faster, 64 KiB at a time, so that little sits in socket
// buffers when a client dies and what it counts is what the client got.
type countingProxy struct {
	*httptest.Server
	blobBytes atomic.Int64
	rate      atomic.Int64
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	u, _ := url.Parse(target)
	p := &countingProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/sha256:") && resp.Request.Method == http.MethodGet {
			resp.Body = &countingBody{ReadCloser: resp.Body, p: p}
		}
		return nil
	}
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

type countingBody struct {
	io.ReadCloser
	p *countingProxy
}

func (c *countingBody) Read(b []byte) (int, error) {
	if rate := c.p.rate.Load(); rate > 0 {
		b = b[:min(len(b), 64<<10)]
		time.Sleep(time.Duration(float64(len(b)) / float64(rate) * float64(time.Second)))
	}
	n, err := c.ReadCloser.Read(b)
	c.p.blobBytes.Add(int64(n))
	return n, err
}

// A pull killed half way and run again completes, and the registry sends at
// most 10% more than the artifact.
func TestPullResumesAfterSIGKILL(t *testing.T) {
	reg := registry.StartForTest(t)
	const size = 128 << 20
	src := t.TempDir()
	f, _ := os.Create(filepath.Join(src, "weights.bin"))
	io.CopyN(f, rand.Reader, size)
	f.Close()
	proxy := newCountingProxy(t, reg.URL())
	host := strings.TrimPrefix(proxy.URL, "http://")
	ref := host + "/models/big:1"
	must(t, barge(t, "push", src, ref))
	proxy.blobBytes.Store(0)

	cache := t.TempDir()
	dest := filepath.Join(t.TempDir(), "out")
	proxy.rate.Store(16 << 20)
	cmd := exec.Command(bargeBin, "pull", "--cache", cache, ref, dest)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once half the layer is in the ingest.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the pull never got half way")
		}
		matches, _ := filepath.Glob(filepath.Join(cache, "ingest", "*", "data"))
		var got int64
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil {
				got = max(got, fi.Size())
			}
		}
		if got >= size/2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("a killed pull left %s behind", dest)
	}
	first := proxy.blobBytes.Load()
	proxy.rate.Store(0)

	r := must(t, barge(t, "pull", "--cache", cache, ref, dest))
	if !strings.Contains(r.stderr, "Resuming") || !strings.Contains(r.stderr, "resumed 1 partial download") {
		t.Errorf("the rerun did not say it resumed:\n%s", r.stderr)
	}
	sameTree(t, tree(t, dest, ".barge-pull"), tree(t, src))
	total := proxy.blobBytes.Load()
	t.Logf("killed after %d MiB; total %d MiB sent for a %d MiB layer (%.3fx)", first>>20, total>>20, size>>20, float64(total)/size)
	if float64(total) > 1.10*size {
		t.Errorf("the registry sent %.2fx the layer; want at most 1.10x", float64(total)/size)
	}
}
