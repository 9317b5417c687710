package upload_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/upload"
)

// recorder keeps the events of an upload.
type recorder struct {
	mu     sync.Mutex
	events []upload.Event
}

func (r *recorder) record(e upload.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) count(k upload.EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func stateFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A blob above the threshold goes up in chunks, arrives whole, and leaves
// no state behind.
func TestPushFileInChunks(t *testing.T) {
	reg := startRegistry(t)
	path, desc := writeRandom(t, 1<<20+123, 1)
	var rec recorder
	state := t.TempDir()
	repo := repository(t, reg.Host(), "models/chunked", upload.Options{StateDir: state, ChunkSize: 64 << 10, Progress: rec.record})
	if err := repo.PushFile(context.Background(), desc, path); err != nil {
		t.Fatal(err)
	}
	sameBlob(t, reg.Host(), "models/chunked", desc, path)
	if n, want := rec.count(upload.Progress), 17; n != want {
		t.Errorf("%d chunks acknowledged; want %d (1 MiB + 123 bytes in 64 KiB chunks)", n, want)
	}
	if rec.count(upload.Started) != 1 || rec.count(upload.Done) != 1 || rec.count(upload.Restarted) != 0 {
		t.Errorf("events: %+v", rec.events)
	}
	if left := stateFiles(t, state); len(left) != 0 {
		t.Errorf("a finished upload left state behind: %v", left)
	}
}

// artifact.Pack uses PushFile for files, and the ordinary push for the
// rest: the artifact reads back whole, small files included.
func TestPackPushesFilesThroughPushFile(t *testing.T) {
	reg := startRegistry(t)
	path, desc := writeRandom(t, 3<<20, 2)
	dir := filepath.Dir(path)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"a": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	repo := repository(t, reg.Host(), "models/packed", upload.Options{StateDir: t.TempDir(), ChunkSize: 256 << 10, Progress: rec.record})
	ctx := context.Background()
	m, err := artifact.Pack(ctx, repo, dir, artifact.PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Inspect(ctx, repo, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Files) != 2 {
		t.Fatalf("the artifact has %d files; want 2", len(a.Files))
	}
	sameBlob(t, reg.Host(), "models/packed", desc, path)
	if rec.count(upload.Done) != 1 {
		t.Errorf("want one chunked upload (the 3 MiB file), got events %+v", rec.events)
	}
	// Packed again: nothing is uploaded.
	before := rec.count(upload.Started)
	if _, err := artifact.Pack(ctx, repo, dir, artifact.PackOptions{}); err != nil {
		t.Fatal(err)
	}
	if rec.count(upload.Started) != before {
		t.Error("a second pack uploaded the file again")
	}
}
