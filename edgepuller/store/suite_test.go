package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// TestSuite runs the conformance suite with the durable default and with
// NoSync. The checkpoint is small so that blobs spanning several checkpoints
// stay small; TestOpenDefaults covers the 16 MiB default.
func TestSuite(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"sync", Options{CheckpointBytes: 4 << 10}},
		{"nosync", Options{CheckpointBytes: 4 << 10, NoSync: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runSuite(t, func(t *testing.T) *Store {
				s, err := Open(t.TempDir(), tc.opts)
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
		})
	}
}

// runSuite is the store's contract, in the shape of containerd's
// core/content/testsuite: every case gets a fresh store from newStore.
func runSuite(t *testing.T, newStore func(t *testing.T) *Store) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s *Store)
	}{
		{"WriteCommitFetch", testWriteCommitFetch},
		{"EmptyBlob", testEmptyBlob},
		{"Resume", testResume},
		{"CrashAtOffsets", testCrashAtOffsets},
		{"WrongDigest", testWrongDigest},
		{"ShortData", testShortData},
		{"TooLongData", testTooLongData},
		{"ExistsDelete", testExistsDelete},
		{"AlreadyExists", testAlreadyExists},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newStore(t)) })
	}
}

func testWriteCommitFetch(t *testing.T, s *Store) {
	ctx := context.Background()
	data, desc := testBlob(3*s.checkpoint+123, 1)
	if err := s.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatalf("Push: %v", err)
	}
	rc, err := s.Fetch(ctx, desc)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	defer rc.Close()
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("Fetch returned %T, want *os.File so callers can seek and ReadAt", rc)
	}
	got, err := content.ReadAll(rc, desc) // verifies size and digest
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetched blob differs from pushed one (err %v)", err)
	}
	if _, err := s.Status(ctx, desc.Digest); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("ingest left behind after commit: Status err = %v", err)
	}
}

func testEmptyBlob(t *testing.T, s *Store) {
	ctx := context.Background()
	_, desc := testBlob(0, 0)
	if err := s.Push(ctx, desc, strings.NewReader("")); err != nil {
		t.Fatalf("Push of the empty blob: %v", err)
	}
	assertBlob(t, s, desc, nil)
}

func testResume(t *testing.T, s *Store) {
	ctx := context.Background()
	for i, tc := range []struct {
		name string
		// wrap returns the reader to resume with and a report of what it did.
		wrap func(data []byte) (io.Reader, *readStats)
		// wantRead is how many bytes the resume may read from the source.
		wantRead func(size, off int64) int64
		wantSeek bool
	}{
		{"seeker", newSeekReader, func(size, off int64) int64 { return size - off }, true},
		{"readerAt", newReaderAtOnly, func(size, off int64) int64 { return size - off }, false},
		{"discard", newPlainReader, func(size, _ int64) int64 { return size }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, desc := testBlob(3*s.checkpoint+77, uint64(10+i))
			cut := s.checkpoint + 500 // deliberately between checkpoints
			err := s.Push(ctx, desc, &cutReader{r: bytes.NewReader(data), n: cut})
			if !errors.Is(err, errCut) {
				t.Fatalf("first Push: err = %v, want the source's error", err)
			}
			if st, err := s.Status(ctx, desc.Digest); err != nil || st.Offset != cut || st.Total != desc.Size {
				t.Fatalf("after a failed Push: Status = %+v, %v; want offset %d of %d kept", st, err, cut, desc.Size)
			}

			r, stats := tc.wrap(data)
			if err := s.Push(ctx, desc, r); err != nil {
				t.Fatalf("resuming Push: %v", err)
			}
			if want := tc.wantRead(desc.Size, cut); stats.read != want {
				t.Errorf("resume read %d bytes from the source, want %d", stats.read, want)
			}
			if tc.wantSeek && stats.seekedTo != cut {
				t.Errorf("resume seeked to %d, want %d", stats.seekedTo, cut)
			}
			assertBlob(t, s, desc, data)
		})
	}
}

// testCrashAtOffsets kills a writer (no Close, no checkpoint) at the edges
// of a checkpoint and checks the resume keeps exactly the checkpointed
// prefix and reads only the rest.
func testCrashAtOffsets(t *testing.T, s *Store) {
	ctx := context.Background()
	cp := s.checkpoint
	size := 2*cp + 99
	for i, n := range []int64{0, 1, cp - 1, cp, cp + 1, 2 * cp, size - 1, size} {
		data, desc := testBlob(size, uint64(100+i))
		w, err := s.Writer(ctx, desc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data[:n]); err != nil {
			t.Fatal(err)
		}
		crash(w)

		want := n / cp * cp
		st, err := s.Status(ctx, desc.Digest)
		if err != nil || st.Offset != want {
			t.Fatalf("crash at %d: Status = %+v, %v; want resume offset %d", n, st, err, want)
		}
		r, stats := newSeekReader(data)
		if err := s.Push(ctx, desc, r); err != nil {
			t.Fatalf("crash at %d: resume: %v", n, err)
		}
		if stats.read != size-want {
			t.Errorf("crash at %d: resume read %d bytes, want %d", n, stats.read, size-want)
		}
		assertBlob(t, s, desc, data)
	}
}

func testWrongDigest(t *testing.T, s *Store) {
	ctx := context.Background()
	data, _ := testBlob(2*s.checkpoint+5, 20)
	_, desc := testBlob(int64(len(data)), 21) // same size, other content
	err := s.Push(ctx, desc, bytes.NewReader(data))
	if !errors.Is(err, content.ErrMismatchedDigest) {
		t.Fatalf("Push of other content: err = %v, want ErrMismatchedDigest", err)
	}
	for _, want := range []string{desc.Digest.String(), digest.FromBytes(data).String(), "starts from 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	assertNoBlob(t, s, desc)
	if _, err := s.Status(ctx, desc.Digest); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("bad data kept as an ingest (Status err = %v); the next pull would resume from garbage", err)
	}
}

func testShortData(t *testing.T, s *Store) {
	ctx := context.Background()
	data, desc := testBlob(2*s.checkpoint+5, 30)
	short := desc.Size - 10
	err := s.Push(ctx, desc, bytes.NewReader(data[:short]))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Push of short data: err = %v, want io.ErrUnexpectedEOF", err)
	}
	if !strings.Contains(err.Error(), desc.Digest.String()) {
		t.Errorf("error %q does not name the digest", err)
	}
	assertNoBlob(t, s, desc)
	// A short read is a dropped connection, not bad data: keep it all.
	r, stats := newSeekReader(data)
	if err := s.Push(ctx, desc, r); err != nil {
		t.Fatal(err)
	}
	if stats.read != 10 {
		t.Errorf("resume after short data read %d bytes, want the 10 missing", stats.read)
	}
	assertBlob(t, s, desc, data)
}

func testTooLongData(t *testing.T, s *Store) {
	ctx := context.Background()
	data, desc := testBlob(s.checkpoint+5, 40)
	for _, tc := range []struct {
		name string
		wrap func([]byte) (io.Reader, *readStats)
	}{
		{"plain", newPlainReader}, {"seeker", newSeekReader}, {"readerAt", newReaderAtOnly},
	} {
		r, _ := tc.wrap(append(bytes.Clone(data), 'x'))
		err := s.Push(ctx, desc, r)
		if !errors.Is(err, content.ErrTrailingData) || !strings.Contains(err.Error(), desc.Digest.String()) {
			t.Fatalf("%s: Push of too much data: err = %v, want ErrTrailingData naming the digest", tc.name, err)
		}
		assertNoBlob(t, s, desc)
		if _, err := s.Status(ctx, desc.Digest); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("%s: too-long data kept as an ingest (Status err = %v)", tc.name, err)
		}
	}

	// Through the Writer, the extra bytes are refused before they land.
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(append(bytes.Clone(data), 'x')); !errors.Is(err, content.ErrTrailingData) {
		t.Fatalf("Writer.Write past the size: err = %v, want ErrTrailingData", err)
	}
	if err := w.Commit(ctx); err == nil {
		t.Fatal("Commit after a refused write succeeded")
	}
	assertNoBlob(t, s, desc)
}

func testExistsDelete(t *testing.T, s *Store) {
	ctx := context.Background()
	data, desc := testBlob(100, 50)
	exists := func() bool {
		t.Helper()
		ok, err := s.Exists(ctx, desc)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if exists() {
		t.Fatal("Exists before Push")
	}
	if _, err := s.Fetch(ctx, desc); !errors.Is(err, errdef.ErrNotFound) || !strings.Contains(err.Error(), desc.Digest.String()) {
		t.Fatalf("Fetch of a missing blob: err = %v, want ErrNotFound naming the digest", err)
	}
	if err := s.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if !exists() {
		t.Fatal("not Exists after Push")
	}
	if err := s.Delete(ctx, desc); err != nil {
		t.Fatal(err)
	}
	if exists() {
		t.Fatal("Exists after Delete")
	}
	if err := s.Delete(ctx, desc); !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("second Delete: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Fetch(ctx, desc); !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("Fetch after Delete: err = %v, want ErrNotFound", err)
	}
}

func testAlreadyExists(t *testing.T, s *Store) {
	ctx := context.Background()
	data, desc := testBlob(s.checkpoint*2, 60)
	if err := s.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	r, stats := newPlainReader(data)
	if err := s.Push(ctx, desc, r); !errors.Is(err, errdef.ErrAlreadyExists) || !strings.Contains(err.Error(), desc.Digest.String()) {
		t.Fatalf("re-Push: err = %v, want ErrAlreadyExists naming the digest", err)
	}
	if stats.read != 0 {
		t.Errorf("re-Push read %d bytes of a blob the store already has", stats.read)
	}
	if _, err := s.Writer(ctx, desc); !errors.Is(err, errdef.ErrAlreadyExists) {
		t.Fatalf("Writer of a committed blob: err = %v, want ErrAlreadyExists", err)
	}
}

// --- helpers shared by the package's tests ---

// testBlob returns size pseudo-random bytes (fixed by seed) and their descriptor.
func testBlob(size int64, seed uint64) ([]byte, ocispec.Descriptor) {
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(data)
	return data, ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: size}
}

// crash abandons w as a SIGKILL would: the kernel closes the files and
// drops the flock, but nothing is checkpointed. It comes after the durable
// checkpoints queued in the background have landed, so that tests know
// both checkpoint files; one cut short by the crash leaves the previous
// state file, which is still right (TestOtherBootFallsBackToDurable
// covers a durable checkpoint behind the progress one).
func crash(w *Writer) {
	w.landDurable()
	w.waitCheckpoint()
	w.closeFiles()
	w.lock.unlock()
}

// landDurable waits until the background durable checkpoints, the
// pending one included, have landed.
func (w *Writer) landDurable() {
	q := &w.durable
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.running {
		q.cond.Wait()
	}
}

func assertBlob(t *testing.T, s *Store, desc ocispec.Descriptor, want []byte) {
	t.Helper()
	rc, err := s.Fetch(context.Background(), desc)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("stored blob %s is wrong: %d bytes, digest %s", desc.Digest, len(got), digest.FromBytes(got))
	}
}

// assertNoBlob checks both the API and the disk: blobs/ must never hold a
// file that is not a whole, verified blob.
func assertNoBlob(t *testing.T, s *Store, desc ocispec.Descriptor) {
	t.Helper()
	if ok, err := s.Exists(context.Background(), desc); err != nil || ok {
		t.Fatalf("Exists = %v, %v; want no blob", ok, err)
	}
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(s.BlobPath(digest.NewDigestFromEncoded(digest.SHA256, e.Name())))
		if err != nil || digest.FromBytes(b).Encoded() != e.Name() {
			t.Errorf("blobs/ holds %s whose content does not match its name", e.Name())
		}
	}
}

var errCut = errors.New("connection reset (test)")

// cutReader fails after n bytes, like a download whose connection drops.
type cutReader struct {
	r io.Reader
	n int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errCut
	}
	n, err := c.r.Read(p[:min(int64(len(p)), c.n)])
	c.n -= int64(n)
	return n, err
}

// readStats counts what a resume did to its source.
type readStats struct {
	read     int64 // bytes returned by Read or ReadAt
	seekedTo int64
}

type plainReader struct {
	r     io.Reader
	stats *readStats
}

func (p *plainReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.stats.read += int64(n)
	return n, err
}

func newPlainReader(data []byte) (io.Reader, *readStats) {
	st := &readStats{}
	return &plainReader{r: bytes.NewReader(data), stats: st}, st
}

type seekReader struct {
	plainReader
	sk io.Seeker
}

func (s *seekReader) Seek(off int64, whence int) (int64, error) {
	n, err := s.sk.Seek(off, whence)
	s.stats.seekedTo = n
	return n, err
}

func newSeekReader(data []byte) (io.Reader, *readStats) {
	st := &readStats{}
	br := bytes.NewReader(data)
	return &seekReader{plainReader: plainReader{r: br, stats: st}, sk: br}, st
}

// readerAtOnly has Read and ReadAt but no Seek, like a multipart section.
type readerAtOnly struct {
	plainReader
	ra io.ReaderAt
}

func (r *readerAtOnly) ReadAt(b []byte, off int64) (int, error) {
	n, err := r.ra.ReadAt(b, off)
	r.stats.read += int64(n)
	return n, err
}

func newReaderAtOnly(data []byte) (io.Reader, *readStats) {
	st := &readStats{}
	br := bytes.NewReader(data)
	return &readerAtOnly{plainReader: plainReader{r: br, stats: st}, ra: br}, st
}
