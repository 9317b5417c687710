package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/registry"
)

// gate is a Reporter that holds the first worker that reports waiting for a
// download slot inside Report, so that the test decides when it goes on.
type gate struct {
	mu       sync.Mutex
	waiting  int
	held     chan struct{} // closed when the first waiter is held
	release  chan struct{}
	waitings chan struct{} // one per waiting report
}

func (g *gate) Report(s Status) {
	if !strings.Contains(s.Message, "waiting for a free download slot") {
		return
	}
	g.mu.Lock()
	g.waiting++
	first := g.waiting == 1
	g.mu.Unlock()
	g.waitings <- struct{}{}
	if first {
		close(g.held)
		<-g.release
	}
}

// TestReplacedWorkerKeepsNewPin: a worker replaced while it waits for a
// download slot (its entry changed) must not, as it exits, drop the pin its
// successor took on the version already in the store. Otherwise a
// collection while the successor waits for a slot deletes those blobs and
// the successor downloads them all again.
func TestReplacedWorkerKeepsNewPin(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := registry.StartForTest(t)
	weights := strings.Repeat("weights of version two\n", 40000)
	target := reg.PushForTest(t, "models/pinned", "v2", map[string]string{"weights.bin": weights}).Digest
	ref := reg.Host() + "/models/pinned@" + target.String()

	g := &gate{held: make(chan struct{}), release: make(chan struct{}), waitings: make(chan struct{}, 8)}
	a, err := New(Options{Root: t.TempDir(), Concurrency: 1, Reporter: g, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// An earlier run fetched the version and did not activate it.
	manifest, art, _, err := fetch.Pull(ctx, a.st, ref, fetch.Options{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	// Another pull holds the only download slot.
	a.slots <- struct{}{}

	r := &runner{a: a, ctx: ctx, tasks: map[string]*task{}, finished: make(chan *task, 8)}
	t.Cleanup(r.stop)
	r.apply([]Desired{{Name: "pinned", Reference: ref}}, false)
	<-g.held
	// The entry changes while its worker waits: a new worker replaces it.
	r.apply([]Desired{{Name: "pinned", Reference: ref, Insecure: true}}, false)
	close(g.release)
	<-g.waitings
	select {
	case <-g.waitings: // the successor waits for the slot too
	case <-time.After(10 * time.Second):
		t.Fatal("the new worker did not start")
	}

	res, err := a.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]ocispec.Descriptor{manifest, art.Config}, art.FileLayers()...) {
		if ok, _ := a.st.Exists(ctx, d); !ok {
			t.Errorf("collection while the new worker waited for a slot deleted %s (%d blobs deleted): the replaced worker dropped its pin", d.Digest, res.BlobsDeleted)
		}
	}

	<-a.slots
	deadline := time.Now().Add(20 * time.Second)
	for {
		a.mu.Lock()
		s := a.statuses["pinned"]
		a.mu.Unlock()
		if s.Phase == Ready && s.Digest == target {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not Ready with %s: %+v", target, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := os.ReadFile(filepath.Join(a.ArtifactDir("pinned"), "current", "weights.bin"))
	if err != nil || string(got) != weights {
		t.Fatalf("weights.bin of the activated version: %d bytes, %v", len(got), err)
	}
}
