package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestChangedBlobIsVerifiedAgain: a workload that writes through a hard
// link to a committed blob (after chmod-ing it writable, or as root) changes
// the store's copy. Exists must hash such a blob again and report it missing
// so that it is fetched again, while an untouched blob, even one that was
// hard-linked and chmod-ed 0444 as unpacking does, costs no hash.
func TestChangedBlobIsVerifiedAgain(t *testing.T) {
	ctx := context.Background()
	modify := map[string]func(t *testing.T, path string){
		"chmod, write, chmod back": func(t *testing.T, path string) {
			chmod(t, path, 0o644)
			writeAt(t, path, 100, []byte("tampered"))
			chmod(t, path, 0o444)
		},
		"written, mode and mtime restored": func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			chmod(t, path, 0o644)
			writeAt(t, path, 100, []byte("tampered"))
			chmod(t, path, 0o444)
			if err := os.Chtimes(path, time.Time{}, fi.ModTime()); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, change := range modify {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(filepath.Join(dir, "store"), Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			changed, changedDesc := testBlob(300<<10, 1)
			kept, keptDesc := testBlob(200<<10, 2)
			for _, b := range []struct {
				data []byte
				desc ocispec.Descriptor
			}{{changed, changedDesc}, {kept, keptDesc}} {
				if err := s.Push(ctx, b.desc, bytes.NewReader(b.data)); err != nil {
					t.Fatal(err)
				}
				// What unpacking does to every blob it uses.
				link := filepath.Join(dir, b.desc.Digest.Encoded())
				if err := os.Link(s.BlobPath(b.desc.Digest), link); err != nil {
					t.Fatal(err)
				}
				chmod(t, link, 0o444)
			}
			assertExists(t, s, keptDesc, true)
			assertExists(t, s, changedDesc, true)
			if n := s.Rehashed(); n != 0 {
				t.Fatalf("Exists hashed %d bytes of blobs that nobody changed", n)
			}

			change(t, filepath.Join(dir, changedDesc.Digest.Encoded()))
			assertExists(t, s, changedDesc, false)
			if n := s.Rehashed(); n != changedDesc.Size {
				t.Errorf("Exists hashed %d bytes; want the changed blob's %d", n, changedDesc.Size)
			}
			assertExists(t, s, keptDesc, true)
			if n := s.Rehashed(); n != changedDesc.Size {
				t.Errorf("the unchanged blob was hashed again: %d bytes in all", n)
			}
			if err := s.Push(ctx, changedDesc, bytes.NewReader(changed)); err != nil {
				t.Fatalf("fetch the changed blob again: %v", err)
			}
			assertBlob(t, s, changedDesc, changed)
			assertBlob(t, s, keptDesc, kept)
			assertExists(t, s, changedDesc, true)
			if n := s.Rehashed(); n != changedDesc.Size {
				t.Errorf("the blob fetched again was hashed again: %d bytes in all", n)
			}
		})
	}
}

// TestUnstampedBlobIsVerifiedOnce: a blob committed before stamps existed
// (or whose stamp was lost) is hashed once, then trusted by its stat.
func TestUnstampedBlobIsVerifiedOnce(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(100<<10, 3)
	if err := s.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.stampPath(desc.Digest)); err != nil {
		t.Fatal(err)
	}
	assertExists(t, s, desc, true)
	assertExists(t, s, desc, true)
	if n := s.Rehashed(); n != desc.Size {
		t.Errorf("hashed %d bytes; want the blob's %d once", n, desc.Size)
	}
}

// TestFetchTouchKeepsStamp: recording the access time changes the ctime;
// that alone must not make the next Exists hash the blob.
func TestFetchTouchKeepsStamp(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(100<<10, 4)
	if err := s.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * accessResolution)
	if err := os.Chtimes(s.BlobPath(desc.Digest), old, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Our own Chtimes above is a change too: Exists hashes once for it.
	assertExists(t, s, desc, true)
	before := s.Rehashed()
	assertBlob(t, s, desc, data) // Fetch touches the access time
	fi, err := os.Stat(s.BlobPath(desc.Digest))
	if err != nil {
		t.Fatal(err)
	}
	if accessTime(fi).Before(time.Now().Add(-time.Minute)) {
		t.Fatalf("Fetch did not record the access: atime %v", accessTime(fi))
	}
	assertExists(t, s, desc, true)
	if n := s.Rehashed() - before; n != 0 {
		t.Errorf("Exists hashed %d bytes after Fetch only recorded an access", n)
	}
}

func FuzzParseStamp(f *testing.F) {
	f.Add([]byte(fileStamp{Ino: 12, Nlink: 2, Size: 1 << 30, MtimeNs: 1e18, CtimeNs: 2e18, Mode: 0o444}.String()))
	f.Add([]byte("v1 1 1 1 1 1 777\n"))
	f.Add([]byte("v2 1 1 1 1 1 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStamp(b)
		if err != nil {
			return
		}
		again, err := parseStamp([]byte(st.String()))
		if err != nil || again != st {
			t.Fatalf("stamp %q does not round-trip: %+v, %v", b, again, err)
		}
	})
}

func assertExists(t *testing.T, s *Store, desc ocispec.Descriptor, want bool) {
	t.Helper()
	got, err := s.Exists(context.Background(), desc)
	if err != nil {
		t.Fatalf("Exists %s: %v", desc.Digest, err)
	}
	if got != want {
		t.Fatalf("Exists %s = %v, want %v", desc.Digest, got, want)
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
