package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/registry"
)

// binary is the daemon under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "barge-edgepuller-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "barge-edgepuller")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	if err := controlPlane.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// site is a registry, a proxy in front of it that counts and paces what it
// serves, and a node directory with its desired file.
type site struct {
	t       *testing.T
	reg     *registry.Registry
	proxy   *proxy
	host    string // the proxy's host:port
	root    string
	desired string
}

func newSite(t *testing.T) *site {
	// On disk: the in-memory driver takes seconds to store tens of MiB.
	reg, err := registry.Start(context.Background(), registry.Options{Addr: "127.0.0.1:0", Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := reg.Close(ctx); err != nil {
			t.Errorf("stop registry: %v", err)
		}
	})
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	p := &proxy{}
	p.rp = httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: reg.Host()})
	p.rp.FlushInterval = -1
	p.rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method == http.MethodGet {
			r.Body = &pacedBody{ReadCloser: r.Body, p: p}
		}
		return nil
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	return &site{t: t, reg: reg, proxy: p, host: strings.TrimPrefix(srv.URL, "http://"),
		root: filepath.Join(dir, "root"), desired: filepath.Join(dir, "desired.yaml")}
}

// proxy forwards to the registry. It counts the body bytes it sends, and
// sends at most rate bytes per second when rate is set.
type proxy struct {
	rp   *httputil.ReverseProxy
	sent atomic.Int64
	rate atomic.Int64
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.rp.ServeHTTP(w, r) }

type pacedBody struct {
	io.ReadCloser
	p *proxy
}

func (b *pacedBody) Read(buf []byte) (int, error) {
	rate := b.p.rate.Load()
	if rate > 0 {
		// 64 KiB at a time, paced, so little sits in socket buffers and
		// what the proxy counts is what the daemon received.
		const chunk = 64 << 10
		if len(buf) > chunk {
			buf = buf[:chunk]
		}
		time.Sleep(time.Duration(float64(len(buf)) / float64(rate) * float64(time.Second)))
	}
	n, err := b.ReadCloser.Read(buf)
	b.p.sent.Add(int64(n))
	return n, err
}

// push packs files as a model into repo, tags it, and returns the manifest
// digest and the artifact's size (manifest, config and layers).
func (s *site) push(repo, tag string, files map[string]string) (digest.Digest, int64) {
	s.t.Helper()
	desc := s.reg.PushForTest(s.t, repo, tag, files)
	r, err := remote.NewRepository(s.reg.Host() + "/" + repo)
	if err != nil {
		s.t.Fatal(err)
	}
	r.PlainHTTP = true
	a, err := artifact.Inspect(context.Background(), r, desc)
	if err != nil {
		s.t.Fatal(err)
	}
	return desc.Digest, a.Size
}

// writeDesired replaces the desired file the way editors and ConfigMaps
// do: a new file renamed over the old one.
func (s *site) writeDesired(entries ...string) {
	s.t.Helper()
	s.writeRaw("artifacts:\n" + strings.Join(entries, ""))
}

func (s *site) writeRaw(content string) {
	s.t.Helper()
	tmp := s.desired + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, s.desired); err != nil {
		s.t.Fatal(err)
	}
}

func (s *site) entry(name, repoRef string) string {
	return fmt.Sprintf("  - name: %s\n    reference: %s/%s\n    insecure: true\n", name, s.host, repoRef)
}

func (s *site) read(name, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(s.root, "artifacts", filepath.FromSlash(name), "current", file))
	return string(b), err
}

func (s *site) mustRead(name, file string) string {
	s.t.Helper()
	got, err := s.read(name, file)
	if err != nil {
		s.t.Fatalf("a workload reading %s/current/%s: %v", name, file, err)
	}
	return got
}

func (s *site) hasBlob(content string) bool {
	_, err := os.Stat(filepath.Join(s.root, "store", "blobs", "sha256", digest.FromString(content).Encoded()))
	return err == nil
}

// daemon is a running barge-edgepuller.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *logBuffer
	addr   string // metrics address
	exited chan struct{}
	err    error
}

func (s *site) start(extra ...string) *daemon {
	s.t.Helper()
	return s.startArgs(append([]string{"--root", s.root, "--desired", s.desired, "--metrics-addr", "127.0.0.1:0",
		"--poll-interval", "100ms", "--log-level", "debug"}, extra...)...)
}

func (s *site) startArgs(args ...string) *daemon {
	s.t.Helper()
	d := &daemon{t: s.t, cmd: exec.Command(binary, args...), logs: &logBuffer{}, exited: make(chan struct{})}
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	s.t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
		if s.t.Failed() {
			s.t.Logf("daemon log:\n%s", d.logs)
		}
	})
	m := d.waitLog(regexp.MustCompile(`msg="serving metrics" addr=(\S+)`))
	d.addr = m[1]
	return d
}

// stop sends SIGTERM and expects a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.t.Fatal("the daemon did not exit within 10 s of SIGTERM")
	}
	if d.err != nil {
		d.t.Fatalf("the daemon exited with %v after SIGTERM", d.err)
	}
}

func (d *daemon) kill() {
	d.cmd.Process.Kill()
	<-d.exited
}

// waitLog waits for a log line matching re and returns its submatches.
func (d *daemon) waitLog(re *regexp.Regexp) []string {
	d.t.Helper()
	var m []string
	waitFor(d.t, "a log line matching "+re.String(), func() bool {
		m = re.FindStringSubmatch(d.logs.String())
		return m != nil
	})
	return m
}

func (d *daemon) get(path string) []byte {
	d.t.Helper()
	resp, err := http.Get("http://" + d.addr + path)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		d.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	return b
}

func (d *daemon) statuses() map[string]agent.Status {
	d.t.Helper()
	var list []agent.Status
	if err := json.Unmarshal(d.get("/status"), &list); err != nil {
		d.t.Fatal(err)
	}
	out := map[string]agent.Status{}
	for _, s := range list {
		out[s.Name] = s
	}
	return out
}

func (d *daemon) waitReady(name string, dg digest.Digest) agent.Status {
	d.t.Helper()
	var s agent.Status
	waitFor(d.t, name+" Ready at "+dg.String(), func() bool {
		s = d.statuses()[name]
		return s.Phase == agent.Ready && s.Digest == dg
	})
	return s
}

// metrics scrapes /metrics into "name{labels}" → value.
func (d *daemon) metrics() map[string]float64 {
	d.t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(d.get("/metrics")))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func randomString(n int, seed uint64) string {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

// (a) The daemon keeps two artifacts materialized from the desired file,
// (b) rolls a new tag out atomically while a workload reads, and (c)
// removes the files of an entry taken out of the file.
func TestDaemonKeepsRollsOutAndRemoves(t *testing.T) {
	s := newSite(t)
	v1, _ := s.push("models/resnet", "1.0", map[string]string{"model.onnx": "resnet v1", "labels.txt": "cat\ndog\n"})
	yolo, _ := s.push("models/yolo", "1.0", map[string]string{"yolo.onnx": "yolo weights", "pre/resize.py": "resize()"})
	s.writeDesired(s.entry("resnet", "models/resnet:1.0"), s.entry("vision/yolo", "models/yolo:1.0"))
	d := s.start()

	// (a)
	st := d.waitReady("resnet", v1)
	d.waitReady("vision/yolo", yolo)
	for name, want := range map[string]string{"model.onnx": "resnet v1", "labels.txt": "cat\ndog\n"} {
		if got := s.mustRead("resnet", name); got != want {
			t.Errorf("resnet/current/%s = %q, want %q", name, got, want)
		}
	}
	if got := s.mustRead("vision/yolo", "pre/resize.py"); got != "resize()" {
		t.Errorf("vision/yolo/current/pre/resize.py = %q", got)
	}
	if st.Path != filepath.Join(s.root, "artifacts", "resnet", "current") {
		t.Errorf("reported path %q", st.Path)
	}

	// (b) v2 carries 8 MiB more, paced at 8 MiB/s: a second during which
	// the old version must go on being served whole.
	v2, _ := s.push("models/resnet", "2.0", map[string]string{"model.onnx": "resnet v2", "labels.txt": "cat\ndog\n",
		"extra.bin": randomString(8<<20, 1)})
	var (
		mu      sync.Mutex
		seen    []string
		readErr error
	)
	sawV2 := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return readErr != nil || len(seen) > 0 && seen[len(seen)-1] == "resnet v2"
	}
	stop, readerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := s.read("resnet", "model.onnx")
			mu.Lock()
			if err != nil {
				readErr = err
				mu.Unlock()
				return
			}
			if len(seen) == 0 || seen[len(seen)-1] != got {
				seen = append(seen, got)
			}
			mu.Unlock()
		}
	}()
	s.proxy.rate.Store(8 << 20)
	s.writeDesired(s.entry("resnet", "models/resnet:2.0"), s.entry("vision/yolo", "models/yolo:1.0"))
	waitFor(t, "resnet:2.0 being pulled", func() bool {
		st := d.statuses()["resnet"]
		return st.Phase == agent.Pulling && strings.HasSuffix(st.Reference, ":2.0")
	})
	if got := s.mustRead("resnet", "model.onnx"); got != "resnet v1" {
		t.Errorf("while v2 is pulled, current/model.onnx = %q; want v1 still", got)
	}
	if st := d.statuses()["resnet"]; st.Digest != v1 {
		t.Errorf("while v2 is pulled, the status says %s is current, want v1 %s", st.Digest, v1)
	}
	d.waitReady("resnet", v2)
	// Ready is reported once current is switched; on a loaded machine the
	// reader may not have run since.
	waitFor(t, "the reader to see v2", sawV2)
	close(stop)
	<-readerDone
	s.proxy.rate.Store(0)
	if readErr != nil {
		t.Errorf("a reader of resnet/current/model.onnx failed during the rollout: %v", readErr)
	}
	if strings.Join(seen, ",") != "resnet v1,resnet v2" {
		t.Errorf("a reader saw %q during the rollout; want v1 then v2 and nothing else", seen)
	}
	if got := s.mustRead("resnet", "extra.bin"); len(got) != 8<<20 {
		t.Errorf("extra.bin has %d bytes", len(got))
	}

	// (c)
	s.writeDesired(s.entry("resnet", "models/resnet:2.0"))
	waitFor(t, "vision/yolo's files removed", func() bool {
		_, err := os.Stat(filepath.Join(s.root, "artifacts", "vision"))
		return os.IsNotExist(err)
	})
	waitFor(t, "yolo's blobs collected", func() bool { return !s.hasBlob("yolo weights") })
	if s.mustRead("resnet", "model.onnx") != "resnet v2" || !s.hasBlob("resnet v2") {
		t.Error("removing yolo touched resnet")
	}
	// Its status goes once the removal is recorded, which may trail the
	// files by a moment.
	waitFor(t, "the removed artifact no longer reported", func() bool {
		_, ok := d.statuses()["vision/yolo"]
		return !ok
	})
	d.stop()
}

// (d) An edit that breaks the YAML is logged with the file and the line,
// and the previous desired state stays; fixing the file resumes.
func TestDaemonKeepsStateOnInvalidFile(t *testing.T) {
	s := newSite(t)
	a, _ := s.push("models/a", "1", map[string]string{"a.bin": "aaa"})
	b, _ := s.push("models/b", "1", map[string]string{"b.bin": "bbb"})
	s.writeDesired(s.entry("a", "models/a:1"))
	d := s.start()
	d.waitReady("a", a)

	// Line 4 is indented one space too few; b would replace a if taken.
	s.writeRaw("artifacts:\n  - name: b\n    reference: " + s.host + "/models/b:1\n   insecure: true\n")
	d.waitLog(regexp.MustCompile(regexp.QuoteMeta(`desired file `+s.desired+`, line 4: `) + `.*keeping the last good desired state`))
	time.Sleep(300 * time.Millisecond)
	if s.mustRead("a", "a.bin") != "aaa" {
		t.Error("a's files changed after an invalid edit")
	}
	if st := d.statuses(); st["a"].Phase != agent.Ready || len(st) != 1 {
		t.Errorf("statuses after an invalid edit: %+v", st)
	}

	// An entry that is valid YAML but not a valid artifact is refused too.
	s.writeRaw("artifacts:\n  - name: a\n    reference: " + s.host + "/models/a:1\n    insecure: true\n  - name: b\n    reference: " + s.host + "/models/b\n")
	d.waitLog(regexp.MustCompile(regexp.QuoteMeta(`desired file `+s.desired+`, line 5: artifact #2 (b): `) + `.*names no version`))

	s.writeDesired(s.entry("a", "models/a:1"), s.entry("b", "models/b:1"))
	d.waitReady("b", b)
	d.stop()
}

// (e) Restarted with its registry stopped and its desired file gone, the
// daemon serves what is on disk and reports it Ready.
func TestDaemonRestartOffline(t *testing.T) {
	s := newSite(t)
	a, _ := s.push("models/a", "1", map[string]string{"a.bin": "aaa"})
	b, _ := s.push("models/b", "1", map[string]string{"b.bin": "bbb"})
	s.writeDesired(s.entry("a", "models/a:1"), s.entry("b", "models/b@"+b.String()))
	d := s.start()
	d.waitReady("a", a)
	d.waitReady("b", b)
	d.stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.reg.Close(ctx); err != nil {
		t.Fatal(err)
	}
	os.Remove(s.desired)

	d = s.start()
	d.waitReady("a", a)
	d.waitReady("b", b)
	if s.mustRead("a", "a.bin") != "aaa" || s.mustRead("b", "b.bin") != "bbb" {
		t.Error("files changed across the offline restart")
	}
	d.waitLog(regexp.MustCompile(`desired file does not exist; keeping the last desired state`))
	waitFor(t, "a's status to say the registry is unreachable", func() bool {
		st := d.statuses()["a"]
		return st.Phase == agent.Ready && strings.Contains(st.Message, "cannot check for a newer version")
	})
	if m := d.metrics(); m[`barge_edgepuller_artifacts{phase="Ready"}`] != 2 {
		t.Errorf("artifacts{phase=Ready} = %v, want 2", m[`barge_edgepuller_artifacts{phase="Ready"}`])
	}
	d.stop()
}

// (f) Killed in the middle of a pull, then stopped by SIGTERM in the
// middle of the rest, the daemon finishes the pull on the third start,
// downloading little more than the artifact's size in all.
func TestDaemonResumesAfterKill(t *testing.T) {
	s := newSite(t)
	const size = 40 << 20
	weightsBin := randomString(size, 2)
	m, total := s.push("models/big", "1", map[string]string{"weights.bin": weightsBin, "config.json": "{}"})
	s.proxy.rate.Store(16 << 20) // 2.5 s for the whole artifact
	s.writeDesired(s.entry("big", "models/big:1"))
	st, err := store.Open(filepath.Join(s.root, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	weights := digest.FromString(weightsBin)
	// Offset is the partial's last checkpoint: where a resume continues.
	waitPartial := func(atLeast int64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("a partial download of %d bytes", atLeast), func() bool {
			in, err := st.Status(context.Background(), weights)
			return err == nil && in.Offset >= atLeast
		})
	}

	d := s.start()
	waitPartial(size / 3)
	d.kill()
	if sent := s.proxy.sent.Load(); sent >= total {
		t.Fatalf("the whole artifact (%d bytes) was sent before the kill; the test proves nothing", sent)
	}

	d = s.start()
	waitPartial(2 * size / 3)
	d.stop() // SIGTERM: exits 0 within 10 s, asserted by stop
	if in, err := st.Status(context.Background(), weights); err != nil || in.Offset < 2*size/3 {
		t.Fatalf("after SIGTERM the partial is %+v, %v; want it kept", in, err)
	}
	if _, err := s.read("big", "weights.bin"); err == nil {
		t.Fatal("weights.bin is visible before its pull finished")
	}

	d = s.start()
	d.waitReady("big", m)
	if got := s.mustRead("big", "weights.bin"); got != weightsBin {
		t.Error("weights.bin differs from what was pushed")
	}
	sent := s.proxy.sent.Load()
	if float64(sent) > 1.1*float64(total) {
		t.Errorf("the registry sent %d bytes for a %d-byte artifact (%.2fx), want at most 1.1x", sent, total, float64(sent)/float64(total))
	}
	if got := d.metrics()["barge_edgepuller_resumes_total"]; got != 1 {
		t.Errorf("resumes_total = %v after the third start, want 1", got)
	}
	t.Logf("the registry sent %d bytes for a %d-byte artifact over three starts (%.3fx)", sent, total, float64(sent)/float64(total))
	d.stop()
}

// (h) /metrics exposes the counters with sane values: a second artifact
// sharing a layer with the first reuses it.
func TestDaemonMetrics(t *testing.T) {
	s := newSite(t)
	shared := randomString(1<<20, 3)
	a, sizeA := s.push("models/a", "1", map[string]string{"base.bin": shared, "a.bin": "head a"})
	b, _ := s.push("models/b", "1", map[string]string{"base.bin": shared, "b.bin": "head b"})
	s.writeDesired(s.entry("a", "models/a:1"))
	d := s.start()
	d.waitReady("a", a)
	s.writeDesired(s.entry("a", "models/a:1"), s.entry("b", "models/b:1"))
	d.waitReady("b", b)

	m := d.metrics()
	fetched, reused := m["barge_edgepuller_bytes_fetched_total"], m["barge_edgepuller_bytes_reused_total"]
	if fetched < float64(sizeA) || fetched > float64(sizeA)+float64(100<<10) {
		t.Errorf("bytes_fetched_total = %v; want a's %d bytes and b's few own ones", fetched, sizeA)
	}
	if reused < float64(len(shared)) {
		t.Errorf("bytes_reused_total = %v, want at least the shared layer's %d bytes", reused, len(shared))
	}
	if got := m["barge_edgepuller_pull_duration_seconds_count"]; got != 2 {
		t.Errorf("pull_duration_seconds_count = %v, want 2", got)
	}
	if got := m[`barge_edgepuller_artifacts{phase="Ready"}`]; got != 2 {
		t.Errorf(`artifacts{phase="Ready"} = %v, want 2`, got)
	}
	for _, name := range []string{"barge_edgepuller_resumes_total", "barge_edgepuller_gc_bytes_freed_total", `barge_edgepuller_artifacts{phase="Failed"}`} {
		if _, ok := m[name]; !ok {
			t.Errorf("%s not exposed", name)
		}
	}
	if got := string(d.get("/healthz")); got != "ok\n" {
		t.Errorf("/healthz = %q", got)
	}
	d.stop()
}
