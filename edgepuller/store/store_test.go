package store

import (
	"bytes"
	"context"
	"errors"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

func TestOpenDefaults(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.noSync {
		t.Error("zero Options do not sync")
	}
	// A crash costs under 2% of a blob, within [1 MiB, 16 MiB].
	for _, tt := range []struct{ size, want int64 }{
		{0, 1 << 20}, {10 << 20, 1 << 20}, {256 << 20, 4 << 20}, {1 << 30, 16 << 20}, {8 << 30, 16 << 20},
	} {
		if got := s.checkpointFor(tt.size); got != tt.want {
			t.Errorf("checkpoint for %d bytes = %d, want %d", tt.size, got, tt.want)
		}
	}
	if got := (&Store{checkpoint: 4096}).checkpointFor(1 << 30); got != 4096 {
		t.Errorf("explicit CheckpointBytes ignored: %d", got)
	}
	for _, dir := range []string{"blobs/sha256", "ingest"} {
		if fi, err := os.Stat(filepath.Join(root, dir)); err != nil || !fi.IsDir() {
			t.Errorf("Open did not create %s: %v", dir, err)
		}
	}
}

// TestPermissions: files others may read but not write, directories they
// may enter; committed blobs read-only so a hard link cannot alter them.
func TestPermissions(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(3000, 5)
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:2000]); err != nil {
		t.Fatal(err)
	}
	ingest := s.ingestDir(desc.Digest)
	for _, tc := range []struct {
		path string
		max  fs.FileMode // umask may only take bits away
	}{
		{s.blobDir(), 0o755},
		{s.ingestRoot(), 0o755},
		{ingest, 0o755},
		{filepath.Join(ingest, "data"), 0o644},
		{filepath.Join(ingest, "state"), 0o644},
		{filepath.Join(ingest, progressFile), 0o644},
		{filepath.Join(ingest, "lock"), 0o644},
	} {
		checkPerm(t, tc.path, tc.max)
	}
	if _, err := w.Write(data[2000:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	checkPerm(t, s.BlobPath(desc.Digest), 0o444)
}

func checkPerm(t *testing.T, path string, max fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	owner := max & 0o700
	if perm := fi.Mode().Perm(); perm&^max != 0 || perm&owner != owner {
		t.Errorf("%s has mode %v, want %v", path, perm, max)
	}
}

func TestFetchWrongSize(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(100, 6)
	if err := s.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	desc.Size = 99
	if _, err := s.Fetch(ctx, desc); !errors.Is(err, content.ErrInvalidDescriptorSize) {
		t.Fatalf("Fetch with a wrong size: err = %v, want ErrInvalidDescriptorSize", err)
	}
}

// TestInvalidDigest: a digest from a manifest is outside input; a malformed
// one must be refused before it becomes a path.
func TestInvalidDigest(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := Open(filepath.Join(root, "store"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{
		"",
		"sha256:abc",
		"sha256:../../../../escaped",
		"sha256:" + digest.Digest(strings.Repeat("A", 64)),
		"sha512:" + digest.Digest(strings.Repeat("ab", 64)),
	} {
		desc := ocispec.Descriptor{Digest: d, Size: 1}
		for name, err := range map[string]error{
			"Push":   s.Push(ctx, desc, strings.NewReader("x")),
			"Delete": s.Delete(ctx, desc),
			"Abort":  s.AbortIngest(ctx, d),
		} {
			if !errors.Is(err, errdef.ErrInvalidDigest) {
				t.Errorf("%s(%q): err = %v, want ErrInvalidDigest", name, d, err)
			}
		}
		if _, err := s.Fetch(ctx, desc); !errors.Is(err, errdef.ErrInvalidDigest) {
			t.Errorf("Fetch(%q): err = %v, want ErrInvalidDigest", d, err)
		}
		if _, err := s.Exists(ctx, desc); !errors.Is(err, errdef.ErrInvalidDigest) {
			t.Errorf("Exists(%q): err = %v, want ErrInvalidDigest", d, err)
		}
		if _, err := s.Status(ctx, d); !errors.Is(err, errdef.ErrInvalidDigest) {
			t.Errorf("Status(%q): err = %v, want ErrInvalidDigest", d, err)
		}
		if p := s.BlobPath(d); p != "" {
			t.Errorf("BlobPath(%q) = %q, want \"\"", d, p)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 1 {
		t.Errorf("something was created next to the store: %v", entries)
	}
}

func TestBlobPathHardLink(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := Open(filepath.Join(root, "store"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(5000, 7)
	if err := s.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "model.bin")
	if err := os.Link(s.BlobPath(desc.Digest), link); err != nil {
		t.Fatalf("hard-link the blob: %v", err)
	}
	if err := s.Delete(ctx, desc); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(link); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("linked model lost its data when the blob was deleted: %v", err)
	}
}

// TestWalkForGC: a collector walks blobs, sees their sizes and last use,
// and deletes the stale ones as it goes.
func TestWalkForGC(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	descs := make([]ocispec.Descriptor, 3)
	for i := range descs {
		data, desc := testBlob(int64(100*(i+1)), uint64(200+i))
		if err := s.Push(ctx, desc, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(s.BlobPath(desc.Digest), old, time.Time{}); err != nil {
			t.Fatal(err)
		}
		descs[i] = desc
	}
	// Using a blob must make it young again, even on a noatime mount.
	rc, err := s.Fetch(ctx, descs[1])
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()

	seen := map[digest.Digest]int64{}
	err = s.Walk(ctx, func(b BlobInfo) error {
		seen[b.Digest] = b.Size
		if time.Since(b.AccessedAt) > 24*time.Hour {
			return s.Delete(ctx, ocispec.Descriptor{Digest: b.Digest, Size: b.Size})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, desc := range descs {
		if seen[desc.Digest] != desc.Size {
			t.Errorf("Walk reported blob %d with size %d, want %d", i, seen[desc.Digest], desc.Size)
		}
		ok, _ := s.Exists(ctx, desc)
		if want := i == 1; ok != want {
			t.Errorf("blob %d exists = %v after GC, want %v (only the fetched one is recent)", i, ok, want)
		}
	}

	stop := errors.New("stop")
	calls := 0
	if err := s.Walk(ctx, func(BlobInfo) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("Walk did not stop at fn's error: err %v after %d calls", err, calls)
	}
}

func TestListAndAbortIngests(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 1024, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	a, adesc := testBlob(5000, 11)
	_, bdesc := testBlob(7000, 12)
	w, err := s.Writer(ctx, adesc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(a[:2500]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wb, err := s.Writer(ctx, bdesc) // left open: a download in progress
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Close()

	list, err := s.ListIngests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[digest.Digest]Status{}
	for _, st := range list {
		got[st.Digest] = st
	}
	if st := got[adesc.Digest]; len(list) != 2 || st.Offset != 2500 || st.Total != 5000 || time.Since(st.UpdatedAt) > time.Minute {
		t.Fatalf("ListIngests = %+v; want 2 ingests, %s at 2500 of 5000 updated just now", list, adesc.Digest)
	}
	if st := got[bdesc.Digest]; st.Offset != 0 || st.Total != 7000 {
		t.Errorf("ingest just opened: %+v, want offset 0 of 7000", st)
	}

	if err := s.AbortIngest(ctx, adesc.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(ctx, adesc.Digest); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Status after AbortIngest: err = %v, want ErrNotFound", err)
	}
	if err := s.AbortIngest(ctx, adesc.Digest); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("second AbortIngest: err = %v, want ErrNotFound", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := s.AbortIngest(short, bdesc.Digest); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AbortIngest of a download in progress: err = %v, want it to wait for the writer", err)
	}
}

// TestWriterReset: the server ignored Range and sent the blob from byte 0.
func TestWriterReset(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 1024, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(5000, 13)
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:3000]); err != nil {
		t.Fatal(err)
	}
	if err := w.Reset(); err != nil {
		t.Fatal(err)
	}
	if w.Offset() != 0 {
		t.Fatalf("Offset after Reset = %d", w.Offset())
	}
	if st, _ := s.Status(ctx, desc.Digest); st.Offset != 0 {
		t.Errorf("Status after Reset: offset %d; a crash now would resume from stale bytes", st.Offset)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("write the whole blob after Reset: %v", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, desc, data)
}

// TestPushCanceled: a pull cancelled mid-way keeps what it wrote.
func TestPushCanceled(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 64 << 10, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(2<<20, 14)
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancelAfter{r: bytes.NewReader(data), n: 1 << 20, cancel: cancel}
	if err := s.Push(ctx, desc, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("Push with cancelled context: err = %v, want context.Canceled", err)
	}
	st, err := s.Status(context.Background(), desc.Digest)
	if err != nil || st.Offset < 1<<20 {
		t.Fatalf("after cancel: Status = %+v, %v; want the first MiB kept", st, err)
	}
	if err := s.Push(context.Background(), desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, desc, data)
}

type cancelAfter struct {
	r      *bytes.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// TestImports keeps the store free of Kubernetes and network code, as
// doc.go promises: it runs on the edge node next to the model.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{"k8s.io/", "sigs.k8s.io/", "net", "oras.land/oras-go/v2/registry", "github.com/bargeml/barge/controllers"}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		pf, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range pf.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == strings.TrimSuffix(bad, "/") || strings.HasPrefix(path, strings.TrimSuffix(bad, "/")+"/") {
					t.Errorf("%s imports %s", f, path)
				}
			}
		}
	}
}
