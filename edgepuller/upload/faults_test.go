package upload_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"oras.land/oras-go/v2/content"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/upload"
	"github.com/bargeml/barge/registry"
)

const faultSize = 64 << 20

func fastBackoff(int) time.Duration { return 10 * time.Millisecond }

// A connection cut at 50% of a 64 MiB blob: the push continues in the same
// call at the registry's offset, and what went up in all is at most 1.05x
// the blob.
func TestCutAtHalfResumesInTheSameCall(t *testing.T) {
	reg := startRegistry(t)
	path, desc := writeRandom(t, faultSize, 3)
	proxy := startCutProxy(t, reg.Host())
	cut := proxy.cutAfter(faultSize / 2)
	var rec recorder
	repo := repository(t, proxy.Host(), "models/cut", upload.Options{StateDir: t.TempDir(), Backoff: fastBackoff, Progress: rec.record})
	if err := repo.PushFile(context.Background(), desc, path); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cut:
	default:
		t.Fatal("the proxy never cut the connection")
	}
	sameBlob(t, reg.Host(), "models/cut", desc, path)
	sent := proxy.Sent()
	t.Logf("sent %d bytes for a %d-byte blob (%.4fx), %d retries", sent, faultSize, float64(sent)/faultSize, rec.count(upload.Retrying))
	if float64(sent) > 1.05*faultSize {
		t.Errorf("sent %.3fx the blob after one cut; want at most 1.05x", float64(sent)/faultSize)
	}
	if rec.count(upload.Retrying) == 0 || rec.count(upload.Restarted) != 0 || rec.count(upload.Started) != 1 {
		t.Errorf("want retries within one session; events: %v", kinds(&rec))
	}
}

func kinds(r *recorder) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		if e.Kind != upload.Progress {
			b.WriteString(e.Kind.String() + " ")
		}
	}
	return b.String()
}

// pushUntilCut starts a push through the proxy and stops it (as a kill
// would, leaving the state file) once n bytes have gone up.
func pushUntilCut(t *testing.T, proxy *cutProxy, name, path string, state string, n int64) {
	t.Helper()
	_, desc := descOf(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cut := proxy.cutAfter(n)
	go func() {
		<-cut
		cancel()
	}()
	repo := repository(t, proxy.Host(), name, upload.Options{StateDir: state, Backoff: func(int) time.Duration { return time.Second }})
	if err := repo.PushFile(ctx, desc, path); err == nil {
		t.Fatal("the push finished before the cut")
	}
	if len(stateFiles(t, state)) != 1 {
		t.Fatal("a stopped push left no state to resume from")
	}
}

func descOf(t *testing.T, path string) (string, ocispecDescriptor) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := digestReader(f)
	if err != nil {
		t.Fatal(err)
	}
	return path, d
}

// A push stopped at 50% and started again by a new Repository over the same
// state directory (a new process) resumes at the registry's offset.
func TestStoppedPushResumesFromState(t *testing.T) {
	reg := startRegistry(t)
	path, desc := writeRandom(t, faultSize, 4)
	proxy := startCutProxy(t, reg.Host())
	state := t.TempDir()
	pushUntilCut(t, proxy, "models/resume", path, state, faultSize/2)

	var rec recorder
	repo := repository(t, proxy.Host(), "models/resume", upload.Options{StateDir: state, Backoff: fastBackoff, Progress: rec.record})
	if err := repo.PushFile(context.Background(), desc, path); err != nil {
		t.Fatal(err)
	}
	sameBlob(t, reg.Host(), "models/resume", desc, path)
	resumedAt := int64(-1)
	for _, e := range rec.events {
		if e.Kind == upload.Resumed {
			resumedAt = e.Offset
		}
	}
	sent := proxy.Sent()
	t.Logf("resumed at %d; sent %d bytes in all for %d (%.4fx)", resumedAt, sent, faultSize, float64(sent)/faultSize)
	if resumedAt < faultSize/2-(4<<20) {
		t.Errorf("resumed at %d; want the registry's offset near %d", resumedAt, faultSize/2)
	}
	if float64(sent) > 1.05*faultSize {
		t.Errorf("sent %.3fx the blob over the stop and the resume; want at most 1.05x", float64(sent)/faultSize)
	}
	if left := leftovers(t, state); len(left) != 0 {
		t.Errorf("state left after the upload finished: %v", left)
	}
}

// When the registry no longer has the session (purged, or cancelled as
// here), a resume starts a new one, says so in the debug log, and the blob
// arrives whole.
func TestResumeWithSessionGoneStartsAgain(t *testing.T) {
	reg := startRegistry(t)
	path, desc := writeRandom(t, faultSize, 5)
	proxy := startCutProxy(t, reg.Host())
	state := t.TempDir()
	pushUntilCut(t, proxy, "models/gone", path, state, faultSize/2)

	// Cancel the session at the registry, as its upload purging would.
	b, err := os.ReadFile(stateFiles(t, state)[0])
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Location string }
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	loc, _ := url.Parse(st.Location)
	loc.Host = reg.Host()
	cancelSession(t, loc)

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	before := proxy.Sent()
	repo := repository(t, proxy.Host(), "models/gone", upload.Options{StateDir: state, Backoff: fastBackoff, Log: log})
	if err := repo.PushFile(context.Background(), desc, path); err != nil {
		t.Fatal(err)
	}
	sameBlob(t, reg.Host(), "models/gone", desc, path)
	if !strings.Contains(logs.String(), "upload session gone, starting again") {
		t.Errorf("the debug log does not say the session was gone:\n%s", logs.String())
	}
	if again := proxy.Sent() - before; again < faultSize {
		t.Errorf("sent %d bytes after the session was lost; a new session needs all %d", again, faultSize)
	}
}

// cancelSession deletes an upload session at the registry. The saved
// Location's _state is stale after a cut (distribution refuses it with
// 416), and stays so while the registry still writes the cut body: GET a
// fresh one until the DELETE takes.
func cancelSession(t *testing.T, loc *url.URL) {
	t.Helper()
	for try := 0; ; try++ {
		resp, err := http.Get(loc.String())
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("upload status: %v %v", err, resp)
		}
		resp.Body.Close()
		fresh, _ := url.Parse(resp.Header.Get("Location"))
		fresh.Host = loc.Host
		req, _ := http.NewRequest(http.MethodDelete, fresh.String(), nil)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNoContent {
			return
		}
		if try == 50 {
			t.Fatalf("cancel the upload session: %s", resp.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A registry that refuses PATCH (405, as some do) gets the blob in one PUT.
func TestRegistryWithoutChunksGetsOnePut(t *testing.T) {
	reg := startRegistry(t)
	path, desc := writeRandom(t, 9<<20, 6)
	target, _ := url.Parse(reg.URL())
	rp := httputil.NewSingleHostReverseProxy(target)
	var patches, puts int
	var mu sync.Mutex
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.Method {
		case http.MethodPatch:
			patches++
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		case http.MethodPut:
			puts++
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(refusing.Close)
	host := strings.TrimPrefix(refusing.URL, "http://")
	repo := repository(t, host, "models/mono", upload.Options{StateDir: t.TempDir()})
	if err := repo.PushFile(context.Background(), desc, path); err != nil {
		t.Fatal(err)
	}
	sameBlob(t, reg.Host(), "models/mono", desc, path)
	if patches != 1 || puts != 1 {
		t.Errorf("%d PATCH and %d PUT; want the one refused PATCH, then one PUT", patches, puts)
	}
}

// A file that changes while it is pushed fails the pack with the message
// that says so, and publishes nothing.
func TestFileChangedWhilePushedFailsThePack(t *testing.T) {
	reg := startRegistry(t)
	path, _ := writeRandom(t, 16<<20, 7)
	var once sync.Once
	change := func(e upload.Event) {
		if e.Kind == upload.Progress {
			once.Do(func() {
				f, err := os.OpenFile(path, os.O_WRONLY, 0)
				if err != nil {
					t.Error(err)
					return
				}
				f.WriteAt([]byte("changed"), 12<<20)
				f.Close()
			})
		}
	}
	repo := repository(t, reg.Host(), "models/changed", upload.Options{StateDir: t.TempDir(), Progress: change})
	_, err := artifact.Pack(context.Background(), repo, strings.TrimSuffix(path, "/weights.bin"), artifact.PackOptions{})
	if err == nil || !strings.Contains(err.Error(), "the file changed while it was being pushed") {
		t.Fatalf("got %v; want the file-changed error", err)
	}
	if !errors.Is(err, artifact.ErrInvalid) {
		t.Errorf("%v does not wrap artifact.ErrInvalid", err)
	}
}

// PushFile itself reports a changed file as content.ErrMismatchedDigest.
func TestPushFileOfChangedFile(t *testing.T) {
	reg := startRegistry(t)
	path, desc := writeRandom(t, 9<<20, 8)
	os.WriteFile(path, bytes.Repeat([]byte{1}, 9<<20), 0o644)
	repo := repository(t, reg.Host(), "models/changed", upload.Options{StateDir: t.TempDir()})
	if err := repo.PushFile(context.Background(), desc, path); !errors.Is(err, content.ErrMismatchedDigest) {
		t.Fatalf("got %v; want content.ErrMismatchedDigest", err)
	}
}

// Push of a stream (a tar shard, say) cut at 50% resends only from the
// registry's offset: the current chunk is kept in memory.
func TestStreamPushCutAtHalf(t *testing.T) {
	reg := startRegistry(t)
	path, desc := writeRandom(t, faultSize, 9)
	proxy := startCutProxy(t, reg.Host())
	proxy.cutAfter(faultSize / 2)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	repo := repository(t, proxy.Host(), "models/stream", upload.Options{StateDir: t.TempDir(), Backoff: fastBackoff})
	if err := repo.Push(context.Background(), desc, struct{ io.Reader }{f}); err != nil {
		t.Fatal(err)
	}
	sameBlob(t, reg.Host(), "models/stream", desc, path)
	if sent := proxy.Sent(); float64(sent) > 1.05*faultSize {
		t.Errorf("sent %.3fx the blob; want at most 1.05x", float64(sent)/faultSize)
	}
}

// A state file left by a push that completed (killed after the PUT, before
// the state was removed) costs one GET and one HEAD: the registry has the
// blob, nothing is sent again.
func TestStateOfCompletedUploadSendsNothing(t *testing.T) {
	reg := startRegistry(t)
	path, desc := writeRandom(t, 16<<20, 11)
	proxy := startCutProxy(t, reg.Host())
	state := t.TempDir()
	pushUntilCut(t, proxy, "models/done", path, state, 8<<20)
	saved := stateFiles(t, state)[0]
	b, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	repo := repository(t, proxy.Host(), "models/done", upload.Options{StateDir: state, Backoff: fastBackoff})
	if err := repo.PushFile(context.Background(), desc, path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(saved, b, 0o600); err != nil {
		t.Fatal(err)
	}
	before := proxy.Sent()
	if err := repo.PushFile(context.Background(), desc, path); err != nil {
		t.Fatal(err)
	}
	if again := proxy.Sent() - before; again > 64<<10 {
		t.Errorf("sent %d bytes for a blob the registry had", again)
	}
	sameBlob(t, reg.Host(), "models/done", desc, path)
}

// A registry restarted mid-upload with a new secret (barge serve makes one
// per start) refuses the Location it signed before; the upload asks for a
// fresh one and goes on in the same session.
func TestRegistryRestartWithNewSecretKeepsTheSession(t *testing.T) {
	root := t.TempDir()
	reg, err := registry.Start(context.Background(), registry.Options{Addr: "127.0.0.1:0", Root: root})
	if err != nil {
		t.Fatal(err)
	}
	addr := reg.Host()
	t.Cleanup(func() { reg.Close(context.Background()) })
	path, desc := writeRandom(t, 32<<20, 12)
	proxy := startCutProxy(t, addr)
	var once sync.Once
	var rec recorder
	restart := func(e upload.Event) {
		rec.record(e)
		if e.Kind == upload.Progress && e.Offset >= 16<<20 {
			once.Do(func() {
				if err := reg.Close(context.Background()); err != nil {
					t.Error(err)
				}
				if reg, err = registry.Start(context.Background(), registry.Options{Addr: addr, Root: root}); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	repo := repository(t, proxy.Host(), "models/restart", upload.Options{StateDir: t.TempDir(), Backoff: fastBackoff, Progress: restart})
	if err := repo.PushFile(context.Background(), desc, path); err != nil {
		t.Fatal(err)
	}
	sameBlob(t, addr, "models/restart", desc, path)
	if rec.count(upload.Restarted) != 0 || rec.count(upload.Started) != 1 {
		t.Errorf("want one session across the registry's restart; events: %s", kinds(&rec))
	}
	// The first PATCH after the restart carries the old _state and part of
	// its chunk may go out before the refusal comes back: at most one chunk
	// is sent twice.
	if sent := proxy.Sent(); float64(sent) > 1.05*(32<<20)+4<<20 {
		t.Errorf("sent %.3fx the blob; want at most 1.05x plus one 4 MiB chunk", float64(sent)/(32<<20))
	}
}
