package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"oras.land/oras-go/v2/content"
)

// TestSegmentsOutOfOrder writes a blob as four segments on four
// goroutines, the last first, while the prefix absorbs them in order: the
// committed blob is right, and checkpoints only ever cover the prefix.
func TestSegmentsOutOfOrder(t *testing.T) {
	ctx := context.Background()
	for _, opts := range []Options{{CheckpointBytes: 4 << 10}, {CheckpointBytes: 4 << 10, NoSync: true}} {
		s, err := Open(t.TempDir(), opts)
		if err != nil {
			t.Fatal(err)
		}
		data, desc := testBlob(4*10<<10+333, 1)
		w, err := s.Writer(ctx, desc)
		if err != nil {
			t.Fatal(err)
		}
		segs := segmentsOf(t, w, 4)
		var wg sync.WaitGroup
		for i := len(segs) - 1; i >= 0; i-- {
			wg.Add(1)
			go func(sg *Segment) {
				defer wg.Done()
				for off := sg.Start(); off < sg.End(); off += 1000 {
					if _, err := sg.Write(data[off:min(off+1000, sg.End())]); err != nil {
						t.Error(err)
						return
					}
				}
			}(segs[i])
		}
		// Absorb as the segments go, as the fetcher does.
		for _, sg := range segs {
			for w.Offset() < sg.End() {
				if err := w.Absorb(sg.Written()); err != nil {
					t.Fatal(err)
				}
			}
			if st, err := s.Status(ctx, desc.Digest); err != nil || st.Offset > w.Offset() {
				t.Fatalf("Status = %+v, %v: a checkpoint beyond the prefix %d", st, err, w.Offset())
			}
		}
		wg.Wait()
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		assertBlob(t, s, desc, data)
	}
}

// TestSegmentsCrash abandons a segmented download as a SIGKILL would, with
// later segments complete and the first one cut: the resume starts at the
// prefix's last checkpoint, reads only the rest, and nothing that was not
// hashed is committed.
func TestSegmentsCrash(t *testing.T) {
	ctx := context.Background()
	const cp = 4 << 10
	s, err := Open(t.TempDir(), Options{CheckpointBytes: cp})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(4*10<<10, 2)
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	segs := segmentsOf(t, w, 4)
	for _, sg := range segs[1:] {
		if _, err := sg.Write(data[sg.Start():sg.End()]); err != nil {
			t.Fatal(err)
		}
	}
	cut := segs[0].Start() + 2*cp + 100 // the first segment is cut between checkpoints
	if _, err := segs[0].Write(data[:cut]); err != nil {
		t.Fatal(err)
	}
	if err := w.Absorb(segs[0].Written()); err != nil {
		t.Fatal(err)
	}
	crash(w)

	st, err := s.Status(ctx, desc.Digest)
	if err != nil || st.Offset != cut/cp*cp {
		t.Fatalf("after a crash with the prefix at %d: Status = %+v, %v; want the checkpoint at %d", cut, st, err, cut/cp*cp)
	}
	r, stats := newSeekReader(data)
	if err := s.Push(ctx, desc, r); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if want := desc.Size - st.Offset; stats.read != want {
		t.Errorf("resume read %d bytes, want %d (from the checkpoint)", stats.read, want)
	}
	assertBlob(t, s, desc, data)
}

// TestSegmentsWrongBytes: a segment that wrote bytes of another blob is
// caught at commit (the prefix hashes what is on file), and nothing is
// committed.
func TestSegmentsWrongBytes(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 4 << 10, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(4*10<<10, 3)
	other, _ := testBlob(desc.Size, 4)
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	for i, sg := range segmentsOf(t, w, 4) {
		src := data
		if i == 2 {
			src = other
		}
		if _, err := sg.Write(src[sg.Start():sg.End()]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Absorb(desc.Size); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); !errors.Is(err, content.ErrMismatchedDigest) {
		t.Fatalf("Commit = %v, want ErrMismatchedDigest", err)
	}
	assertNoBlob(t, s, desc)
}

// TestSegmentBounds: a segment cannot start inside the prefix, and one
// whose source sends more than its range writes none of it.
func TestSegmentBounds(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 4 << 10, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(20<<10, 5)
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data[:5000]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Segment(4000, 8000); err == nil {
		t.Error("a segment inside the prefix was accepted")
	}
	if _, err := w.Segment(6000, desc.Size+1); err == nil {
		t.Error("a segment beyond the blob was accepted")
	}
	sg, err := w.Segment(6000, 8000)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := sg.Write(data[6000:8001]); !errors.Is(err, content.ErrTrailingData) || n != 0 {
		t.Fatalf("Write past the segment = %d, %v; want 0, ErrTrailingData", n, err)
	}
	if _, err := sg.Write(data[6000:7000]); err != nil {
		t.Fatal(err)
	}
	// The segment stops; what it wrote is dropped, the prefix goes on.
	if err := w.DiscardAhead(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(s.ingestDir(desc.Digest), "data")); err != nil || fi.Size() != 5000 {
		t.Fatalf("after DiscardAhead the data file is %v, %v; want the 5000-byte prefix", fi, err)
	}
	if _, err := w.Write(data[5000:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, desc, data)
}

// segmentsOf splits the rest of w's blob into n segments.
func segmentsOf(t *testing.T, w *Writer, n int) []*Segment {
	t.Helper()
	var segs []*Segment
	size := w.desc.Size - w.Offset()
	for i := range int64(n) {
		sg, err := w.Segment(w.Offset()+i*size/int64(n), w.Offset()+(i+1)*size/int64(n))
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, sg)
	}
	return segs
}
