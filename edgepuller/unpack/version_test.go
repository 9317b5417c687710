package unpack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// version i of a small model: three files in three kinds of layer, each
// saying which version it belongs to.
func modelVersion(t testing.TB, s *dirStore, i int) (digest.Digest, []ocispec.Descriptor, map[string][]byte) {
	tag := fmt.Sprintf("v%03d;", i)
	files := map[string][]byte{
		"weights.bin": []byte(strings.Repeat(tag, 256<<10/len(tag))),
		"src/pre.py":  []byte(tag + "preprocess"),
		"data/a.csv":  []byte(tag + "1,2\n"),
	}
	layers := s.descs(t,
		raw("weights.bin", string(files["weights.bin"])),
		tarLayer("src", file("src/pre.py", string(files["src/pre.py"]))),
		orasDir("data", file("data/a.csv", string(files["data/a.csv"]))),
	)
	return digest.FromString(tag), layers, files
}

// TestActivateAtomicSwitch switches current between versions, building some
// and reusing others, while readers read through current. A reader must
// never miss a file nor see part of one, and a reader that opens current
// once must see every file from the same version.
func TestActivateAtomicSwitch(t *testing.T) {
	s := newStore(t)
	root := t.TempDir()
	const nVersions, nActivations = 6, 60
	type version struct {
		d      digest.Digest
		layers []ocispec.Descriptor
		files  map[string][]byte
	}
	var versions []version
	byTag := map[string]int{}
	for i := range nVersions {
		d, layers, files := modelVersion(t, s, i)
		versions = append(versions, version{d, layers, files})
		byTag[fmt.Sprintf("v%03d;", i)] = i
	}
	// whichVersion returns the version a file's content belongs to, or -1
	// when the content is not exactly one version's file.
	whichVersion := func(name string, b []byte) int {
		if len(b) < 5 {
			return -1
		}
		i, ok := byTag[string(b[:5])]
		if !ok || !bytes.Equal(b, versions[i].files[name]) {
			return -1
		}
		return i
	}
	if _, err := Activate(context.Background(), s, versions[0].layers, root, versions[0].d, Options{}); err != nil {
		t.Fatal(err)
	}

	var (
		stop          = make(chan struct{})
		wg            sync.WaitGroup
		reads, mixed  atomic.Int64
		seen          sync.Map
		failOnce      sync.Once
		firstFailure  error
		recordFailure = func(err error) { failOnce.Do(func() { firstFailure = err }) }
	)
	wg.Add(2)
	go func() { // one file at a time, through the current symlink
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(filepath.Join(root, "current", "weights.bin"))
			if err != nil {
				recordFailure(err)
				return
			}
			v := whichVersion("weights.bin", b)
			if v < 0 {
				recordFailure(fmt.Errorf("read %d bytes of weights.bin that are no version's", len(b)))
				return
			}
			seen.Store(v, true)
			reads.Add(1)
		}
	}()
	go func() { // all files of the version current names when opened
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := os.OpenRoot(filepath.Join(root, "current"))
			if err != nil {
				recordFailure(err)
				return
			}
			got := map[int]bool{}
			for name := range versions[0].files {
				b, err := r.ReadFile(name)
				if err != nil {
					recordFailure(err)
					r.Close()
					return
				}
				got[whichVersion(name, b)] = true
			}
			r.Close()
			if len(got) != 1 || got[-1] {
				mixed.Add(1)
			}
			reads.Add(1)
		}
	}()

	for k := range nActivations {
		v := versions[(k+1)%nVersions]
		path, err := Activate(context.Background(), s, v.layers, root, v.d, Options{})
		if err != nil {
			t.Error(err)
			break
		}
		if want := filepath.Join(root, "versions", "sha256-"+v.d.Encoded()); path != want {
			t.Errorf("Activate returned %s, want %s", path, want)
		}
	}
	close(stop)
	wg.Wait()

	if firstFailure != nil {
		t.Fatalf("a reader failed: %v", firstFailure)
	}
	if n := mixed.Load(); n > 0 {
		t.Errorf("%d reads through one open of current saw files of several versions", n)
	}
	nSeen := 0
	seen.Range(func(any, any) bool { nSeen++; return true })
	if nSeen < 2 {
		t.Errorf("readers saw %d versions in %d reads; the test did not overlap reads with switches", nSeen, reads.Load())
	}
	t.Logf("%d reads, %d versions seen", reads.Load(), nSeen)
}

func TestVersionsKeptUntilRemove(t *testing.T) {
	s := newStore(t)
	root := t.TempDir()
	d1, l1, _ := modelVersion(t, s, 1)
	d2, l2, _ := modelVersion(t, s, 2)
	p1, err := Activate(context.Background(), s, l1, root, d1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Activate(context.Background(), s, l2, root, d2, Options{}); err != nil {
		t.Fatal(err)
	}

	want := []digest.Digest{d1, d2}
	slices.Sort(want)
	if got, err := Versions(root); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Versions = %v, %v; want %v", got, err, want)
	}
	if cur, err := Current(root); err != nil || cur != d2 {
		t.Fatalf("Current = %s, %v; want %s", cur, err, d2)
	}
	if got := readFile(t, filepath.Join(p1, "src/pre.py")); !strings.HasPrefix(got, "v001;") {
		t.Errorf("previous version changed: %q", got)
	}

	if err := Remove(root, d2); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove(current) = %v, want ErrInUse", err)
	}
	if err := Remove(root, d1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removed version still there: %v", err)
	}
	if got, _ := Versions(root); !slices.Equal(got, []digest.Digest{d2}) {
		t.Errorf("Versions after Remove = %v", got)
	}
	if err := Remove(root, d1); err != nil {
		t.Errorf("removing a removed version: %v", err)
	}
	entries, _ := os.ReadDir(root)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"current", "versions"}) {
		t.Errorf("root holds %v; want only current and versions", names)
	}
}

// TestActivateReusesVersion: going back to a version that is still on disk
// touches no blob.
func TestActivateReusesVersion(t *testing.T) {
	s := newStore(t)
	root := t.TempDir()
	var links atomic.Int64
	opts := Options{link: func(oldname, newname string) error {
		links.Add(1)
		return os.Link(oldname, newname)
	}}
	d1, l1, _ := modelVersion(t, s, 1)
	d2, l2, _ := modelVersion(t, s, 2)
	for _, v := range []struct {
		d digest.Digest
		l []ocispec.Descriptor
	}{{d1, l1}, {d2, l2}} {
		if _, err := Activate(context.Background(), s, v.l, root, v.d, opts); err != nil {
			t.Fatal(err)
		}
	}
	before := links.Load()
	// Back to version 1, with its blobs gone from the store: only a reuse
	// can succeed.
	for _, l := range l1 {
		if err := os.Remove(s.BlobPath(l.Digest)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Activate(context.Background(), s, l1, root, d1, opts); err != nil {
		t.Fatal(err)
	}
	if n := links.Load() - before; n != 0 {
		t.Errorf("reactivating an existing version linked %d blobs", n)
	}
	if cur, _ := Current(root); cur != d1 {
		t.Errorf("Current = %s, want %s", cur, d1)
	}
}

func TestActivateRefusesBadInput(t *testing.T) {
	s := newStore(t)
	_, layers, _ := modelVersion(t, s, 1)
	for _, tc := range []struct {
		name  string
		d     digest.Digest
		setup func(root string)
	}{
		{"malformed digest", "sha256:nothex", func(string) {}},
		{"unknown algorithm", "md5:d41d8cd98f00b204e9800998ecf8427e", func(string) {}},
		{"current is a real directory", digest.FromString("x"), func(root string) { os.Mkdir(filepath.Join(root, "current"), 0o755) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tc.setup(root)
			before := snapshot(t, root)
			_, err := Activate(context.Background(), s, layers, root, tc.d, Options{})
			if err == nil {
				t.Fatal("Activate succeeded")
			}
			t.Log(err)
			if tc.name != "current is a real directory" {
				if d := diffSnapshots(before, snapshot(t, root)); d != "" {
					t.Errorf("root changed:\n%s", d)
				}
			}
		})
	}
}

// TestActivateRemovesLeftovers: what a crash leaves in root (a half-built
// staging tree, a half-deleted version, a temporary link) is gone after the
// next Activate, and never taken for a version.
func TestActivateRemovesLeftovers(t *testing.T) {
	s := newStore(t)
	root := t.TempDir()
	for _, p := range []string{".staging-123/weights.bin", ".trash-456/src/pre.py"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte("partial"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("versions/nowhere", filepath.Join(root, ".current-789")); err != nil {
		t.Fatal(err)
	}
	d, layers, _ := modelVersion(t, s, 1)
	if _, err := Activate(context.Background(), s, layers, root, d, Options{}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(root)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"current", "versions"}) {
		t.Errorf("root holds %v; want only current and versions", names)
	}
}
