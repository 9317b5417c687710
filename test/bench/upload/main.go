// Command upload benchmarks resumable pushes: the bytes `barge push` sends
// for a 256 MiB file when the connection is cut at 50% (it continues in the
// same run) and when the process is SIGKILLed at 50% (it continues on the
// rerun), against a plain `oras push`, which starts again from byte 0 both
// times. Figures are ratios of the file's size. Run it with `make bench`;
// it writes its section of docs/benchmarks.md when given -doc.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bargeml/barge/registry"
	"github.com/bargeml/barge/test/bench/benchdoc"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding barge and oras")
	doc := flag.String("doc", "", "markdown file whose upload section is replaced with the results")
	sizeMiB := flag.Int64("size-mib", 256, "size of the pushed file, MiB")
	runs := flag.Int("runs", 3, "runs of each scenario and tool; the median is reported")
	workdir := flag.String("workdir", os.TempDir(), "where the registry and the file go")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := run(ctx, *bin, *doc, *sizeMiB<<20, *runs, *workdir); err != nil {
		fmt.Fprintln(os.Stderr, "bench upload:", err)
		os.Exit(1)
	}
}

type bench struct {
	barge, oras string
	work, file  string
	size        int64
	reg         *registry.Registry
	proxy       *proxy
	round       int
}

func run(ctx context.Context, bin, doc string, size int64, runs int, workdir string) error {
	began := time.Now()
	work, err := os.MkdirTemp(workdir, "barge-bench-upload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	b := &bench{work: work, size: size}
	for _, p := range []*string{&b.barge, &b.oras} {
		name := "barge"
		if p == &b.oras {
			name = "oras"
		}
		if *p, err = filepath.Abs(filepath.Join(bin, name)); err != nil {
			return err
		}
		if _, err := os.Stat(*p); err != nil {
			return fmt.Errorf("%w: run make build tools (or make bench)", err)
		}
	}
	b.reg, err = registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0", Root: filepath.Join(work, "registry")})
	if err != nil {
		return err
	}
	defer b.reg.Close(context.Background())
	if b.proxy, err = startProxy(b.reg.URL()); err != nil {
		return err
	}
	defer b.proxy.close()

	src := filepath.Join(work, "src")
	os.MkdirAll(src, 0o755)
	b.file = filepath.Join(src, "update.safetensors")
	benchdoc.Logf("generating %d MiB of random bytes", size>>20)
	if err := writeRandom(b.file, size); err != nil {
		return err
	}

	results := map[string][]float64{}
	for i := range runs {
		for _, tool := range []string{"barge", "oras"} {
			for _, sc := range scenarios {
				sent, err := b.scenario(ctx, tool, sc)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", tool, sc.name(), err)
				}
				results[tool+"/"+sc.name()] = append(results[tool+"/"+sc.name()], float64(sent)/float64(size))
				benchdoc.Logf("run %d: %s after a %s: %.4fx", i+1, tool, sc.name(), float64(sent)/float64(size))
			}
		}
	}

	var out strings.Builder
	fmt.Fprintf(&out, "Measured %s on %d CPUs; load average %s; %d runs each, medians; took %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), benchdoc.LoadAvg(), runs, time.Since(began).Round(time.Second))
	fmt.Fprintf(&out, "Bytes uploaded (PATCH and PUT bodies) to push one %d MiB file, as a multiple of its size:\n\n", size>>20)
	fmt.Fprintln(&out, "| fault | barge push | oras push | target (barge) | met? |")
	fmt.Fprintln(&out, "|---|---|---|---|---|")
	row := func(label, key string, limit float64, limitText string) {
		bm, om := median(results["barge/"+key]), median(results["oras/"+key])
		met := "no"
		if bm <= limit {
			met = "yes"
		}
		fmt.Fprintf(&out, "| %s | %.4fx (%s) | %.4fx (%s) | %s | %s |\n", label, bm, spread(results["barge/"+key]), om, spread(results["oras/"+key]), limitText, met)
	}
	row("connection cut at 50%, same command continues (barge) or is run again (oras)", scenarios[0].name(), 1.05, "≤ 1.05x")
	row("connection cut at 50% + 2 MiB (inside a chunk)", scenarios[1].name(), 1.05, "≤ 1.05x")
	row("SIGKILL at 50%, then the same command again", scenarios[2].name(), 1.05+float64(4<<20)/float64(size), "≤ 1.05x + one 4 MiB chunk")
	row("SIGKILL at 50% + 2 MiB", scenarios[3].name(), 1.05+float64(4<<20)/float64(size), "≤ 1.05x + one 4 MiB chunk")
	fmt.Print("\n" + out.String())
	if doc != "" {
		return benchdoc.WriteSection(doc, "upload", out.String())
	}
	return nil
}

// fault is a cut or a SIGKILL once half the file plus extra bytes have
// gone up. 50% of 256 MiB is a 4 MiB chunk boundary; 2 MiB more lands
// inside a chunk.
type fault struct {
	kind  string // cut or kill
	extra int64
}

func (f fault) name() string {
	if f.extra == 0 {
		return f.kind
	}
	return fmt.Sprintf("%s+%dMiB", f.kind, f.extra>>20)
}

var scenarios = []fault{{"cut", 0}, {"cut", 2 << 20}, {"kill", 0}, {"kill", 2 << 20}}

// scenario pushes the file to a new repository with tool, faulting it,
// runs it again if it failed, checks the blob arrived, and returns the
// upload bytes of both runs.
func (b *bench) scenario(ctx context.Context, tool string, f fault) (int64, error) {
	b.round++
	fault := f.kind
	ref := fmt.Sprintf("%s/bench/upload-%s-%s-%d:1", b.proxy.host, tool, fault, b.round)
	cache := filepath.Join(b.work, fmt.Sprintf("cache-%d", b.round)) // barge's upload state: one per scenario, kept across its two runs
	args := []string{b.barge, "push", filepath.Dir(b.file), ref}
	dir := ""
	if tool == "oras" {
		args = []string{b.oras, "push", "--plain-http", ref, filepath.Base(b.file)}
		dir = filepath.Dir(b.file)
	}
	b.proxy.reset()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "XDG_CACHE_HOME="+cache, "HOME="+b.work)
	switch fault {
	case "cut":
		b.proxy.cutAt(b.size/2 + f.extra)
	case "kill":
		b.proxy.tripAt(b.size/2+f.extra, func() { cmd.Process.Signal(syscall.SIGKILL) })
	}
	out, firstErr := cmd.CombinedOutput()
	if !b.proxy.fired.Load() {
		return 0, fmt.Errorf("the %s never happened (the push sent %d bytes): %v\n%s", fault, b.proxy.sent.Load(), firstErr, out)
	}
	if firstErr != nil {
		again := exec.CommandContext(ctx, args[0], args[1:]...)
		again.Dir, again.Env = dir, cmd.Env
		if out, err := again.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("the rerun failed: %v\n%s", err, out)
		}
	} else if tool == "oras" || fault == "kill" {
		return 0, fmt.Errorf("the push succeeded despite the %s:\n%s", fault, out)
	}
	if err := b.check(ctx, ref); err != nil {
		return 0, err
	}
	return b.proxy.sent.Load(), nil
}

// check HEADs the file's blob in the pushed repository, straight at the
// registry.
func (b *bench) check(ctx context.Context, ref string) error {
	repo := strings.TrimPrefix(strings.SplitN(ref, ":1", 2)[0], b.proxy.host+"/")
	d, err := fileDigest(b.file)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, b.reg.URL()+"/v2/"+repo+"/blobs/"+d, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: the file's blob %s is not in the registry (%s)", ref, d, resp.Status)
	}
	return nil
}

// proxy sits between the client and the registry and counts the blob bytes
// clients upload (bodies of POST, PATCH and PUT under /blobs/uploads/). It
// can cut the connection once the count reaches a mark (the client's
// connection is dropped without an answer; the registry's request ends
// short), or call a function then (a SIGKILL at an exact point).
type proxy struct {
	host string
	srv  *http.Server
	sent atomic.Int64

	mu    sync.Mutex
	mark  int64
	cut   bool
	trip  func()
	fired atomic.Bool
}

var errCut = errors.New("bench: connection cut on purpose")

func startProxy(target string) (*proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	p := &proxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		panic(http.ErrAbortHandler) // drop the client's connection, as a cut link does
	}
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/uploads/") && r.Body != nil && r.Method != http.MethodGet {
			r.Body = &body{ReadCloser: r.Body, p: p}
		}
		rp.ServeHTTP(w, r)
	})}
	ln, err := listen()
	if err != nil {
		return nil, err
	}
	p.host, p.srv = ln.Addr().String(), srv
	go srv.Serve(ln)
	return p, nil
}

func (p *proxy) close() { p.srv.Close() }

func (p *proxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent.Store(0)
	p.mark, p.cut, p.trip = 0, false, nil
	p.fired.Store(false)
}

func (p *proxy) cutAt(n int64) {
	p.mu.Lock()
	p.mark, p.cut = n, true
	p.mu.Unlock()
}

func (p *proxy) tripAt(n int64, fn func()) {
	p.mu.Lock()
	p.mark, p.trip = n, fn
	p.mu.Unlock()
}

type body struct {
	io.ReadCloser
	p *proxy
}

func (b *body) Read(buf []byte) (int, error) {
	p := b.p
	p.mu.Lock()
	armed := (p.cut || p.trip != nil) && !p.fired.Load()
	if armed && p.cut {
		left := p.mark - p.sent.Load()
		if left <= 0 {
			p.fired.Store(true)
			p.mu.Unlock()
			return 0, errCut
		}
		buf = buf[:min(int64(len(buf)), left)]
	}
	p.mu.Unlock()
	n, err := b.ReadCloser.Read(buf)
	total := p.sent.Add(int64(n))
	p.mu.Lock()
	var fire func()
	if p.trip != nil && !p.fired.Load() && total >= p.mark {
		fire = p.trip
		p.fired.Store(true)
	}
	p.mu.Unlock()
	if fire != nil {
		fire()
	}
	return n, err
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func spread(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.4f-%.4f", slices.Min(xs), slices.Max(xs))
}

func writeRandom(path string, size int64) error {
	var s [32]byte
	s[0] = 42
	r := rand.NewChaCha8(s)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, r, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
