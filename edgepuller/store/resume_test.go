package store

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestReopenReadsNoPrefix proves that resuming a large partial neither
// re-reads nor re-hashes what it already holds: the process's read count
// (rchar in /proc/self/io, which counts every read(2) whatever the file)
// grows by less than one checkpoint while 32 MiB are resumed.
func TestReopenReadsNoPrefix(t *testing.T) {
	if _, err := readChars(); err != nil {
		t.Skipf("cannot count this process's reads: %v", err)
	}
	ctx := context.Background()
	const cp = 1 << 20
	s, err := Open(t.TempDir(), Options{CheckpointBytes: cp, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(40<<20, 7)
	prefix := int64(32<<20 + 300<<10) // a tail beyond the last checkpoint too
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:prefix]); err != nil {
		t.Fatal(err)
	}
	crash(w)

	before, _ := readChars()
	w, err = s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := readChars()
	if w.Offset() != 32<<20 {
		t.Errorf("resumed at %d, want the last checkpoint %d", w.Offset(), 32<<20)
	}
	if read := after - before; read >= cp {
		t.Errorf("reopening read %d bytes; it must not re-read the %d-byte prefix", read, w.Offset())
	}
	if _, err := w.Write(data[w.Offset():]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("commit with the restored hash state: %v", err)
	}
	assertBlob(t, s, desc, data)
}

func readChars() (int64, error) {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "rchar: "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, os.ErrNotExist
}

// TestReopenFallsBack damages an ingest on disk in the ways a crash, a full
// disk or a person can, and checks that the resume starts from a point it
// can vouch for and still produces the right blob. "checkpoints" damages
// both checkpoint files alike; the progress cases damage only the progress
// checkpoint, where the durable one must take over.
func TestReopenFallsBack(t *testing.T) {
	ctx := context.Background()
	const cp = 4 << 10
	both := func(f func(t *testing.T, dir, name string)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			for _, name := range []string{stateFile, progressFile} {
				f(t, dir, name)
			}
		}
	}
	for _, tc := range []struct {
		name       string
		damage     func(t *testing.T, dir string)
		wantOffset int64
	}{
		{"intact", func(*testing.T, string) {}, 2 * cp},
		{"checkpoints missing", both(rm), 0},
		{"checkpoints empty", both(func(t *testing.T, dir, name string) { write(t, dir, name, nil) }), 0},
		{"checkpoints garbage", both(func(t *testing.T, dir, name string) { write(t, dir, name, []byte("{\"offset\": 8192}")) }), 0},
		{"checkpoints truncated", both(func(t *testing.T, dir, name string) {
			edit(t, dir, name, func(b []byte) []byte { return b[:len(b)/2] })
		}), 0},
		{"checkpoints bit flipped", both(func(t *testing.T, dir, name string) {
			edit(t, dir, name, func(b []byte) []byte { b[20] ^= 1; return b })
		}), 0},
		{"data shorter than checkpoint", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "data"), cp+10); err != nil {
				t.Fatal(err)
			}
		}, 0},
		{"data missing", func(t *testing.T, dir string) { rm(t, dir, "data") }, 0},
		{"checkpoints of another blob", both(func(t *testing.T, dir, name string) {
			// Well-formed and checksummed, but for another digest: a state
			// file copied or moved by hand.
			other, odesc := testBlob(3*cp+17, 98)
			b, _ := ingestState{Digest: odesc.Digest, Total: odesc.Size, Offset: cp, Hash: sha256State(t, other[:cp]), BootID: bootID()}.MarshalBinary()
			write(t, dir, name, b)
		}), 0},
		{"progress missing", func(t *testing.T, dir string) { rm(t, dir, progressFile) }, 2 * cp},
		{"progress bit flipped", func(t *testing.T, dir string) {
			edit(t, dir, progressFile, func(b []byte) []byte { b[20] ^= 1; return b })
		}, 2 * cp},
		{"state missing", func(t *testing.T, dir string) { rm(t, dir, stateFile) }, 2 * cp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), Options{CheckpointBytes: cp})
			if err != nil {
				t.Fatal(err)
			}
			data, desc := testBlob(3*cp+17, 8)
			w, err := s.Writer(ctx, desc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data[:2*cp+100]); err != nil {
				t.Fatal(err)
			}
			crash(w)
			tc.damage(t, s.ingestDir(desc.Digest))

			if st, err := s.Status(ctx, desc.Digest); err != nil || st.Offset != tc.wantOffset {
				t.Errorf("Status = %+v, %v; want offset %d", st, err, tc.wantOffset)
			}
			r, stats := newSeekReader(data)
			if err := s.Push(ctx, desc, r); err != nil {
				t.Fatalf("resume: %v", err)
			}
			if want := desc.Size - tc.wantOffset; stats.read != want {
				t.Errorf("resume read %d bytes, want %d (from offset %d)", stats.read, want, tc.wantOffset)
			}
			assertBlob(t, s, desc, data)
		})
	}
}

// TestReopenWithOtherSize: a descriptor with the same digest but another
// size is wrong, or the ingest's was; neither can be trusted to resume.
func TestReopenWithOtherSize(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 1024, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(5000, 9)
	liar := desc
	liar.Size = 6000
	w, err := s.Writer(ctx, liar)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:3000]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Offset() != 0 {
		t.Fatalf("resumed at %d an ingest started for size %d, want 0 for size %d", w.Offset(), liar.Size, desc.Size)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, desc, data)
}

func rm(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func edit(t *testing.T, dir, name string, f func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, name, f(bytes.Clone(b)))
}
