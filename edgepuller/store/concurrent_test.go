package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"oras.land/oras-go/v2/errdef"
)

// slowReader yields small reads with a pause, so that pushes which are not
// properly serialised would overlap, and counts bytes into a shared total.
type slowReader struct {
	r     io.Reader
	total *atomic.Int64
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	n, err := s.r.Read(p[:min(len(p), 8<<10)])
	s.total.Add(int64(n))
	return n, err
}

// TestConcurrentPushesDownloadOnce: eight pulls of one digest at once
// read the source once between them; one commits, the rest learn the blob
// exists.
func TestConcurrentPushesDownloadOnce(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(256<<10, 3)
	var total atomic.Int64
	errs := make([]error, 8)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			<-start
			errs[i] = s.Push(ctx, desc, &slowReader{r: bytes.NewReader(data), total: &total})
		})
	}
	close(start)
	wg.Wait()

	var ok, exists int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, errdef.ErrAlreadyExists):
			exists++
		default:
			t.Errorf("Push: %v", err)
		}
	}
	if ok != 1 || exists != len(errs)-1 {
		t.Errorf("%d pushes committed and %d saw ErrAlreadyExists; want 1 and %d", ok, exists, len(errs)-1)
	}
	if got := total.Load(); got != desc.Size {
		t.Errorf("the source was read for %d bytes, want %d: one download shared by all", got, desc.Size)
	}
	assertBlob(t, s, desc, data)
}

// TestWaiterResumesAfterFailure: a second pull waits while the first holds
// the ingest, then continues the first one's partial rather than starting over.
func TestWaiterResumesAfterFailure(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(100<<10, 4)
	first, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	const got = 40<<10 + 5
	if _, err := first.Write(data[:got]); err != nil {
		t.Fatal(err)
	}

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := s.Writer(short, desc); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Writer while the first is open: err = %v, want DeadlineExceeded", err)
	}

	done := make(chan error, 1)
	r, stats := newSeekReader(data)
	go func() { done <- s.Push(ctx, desc, r) }()
	select {
	case err := <-done:
		t.Fatalf("second Push did not wait for the first: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := first.Close(); err != nil { // the first download failed: keep its bytes
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("second Push after the first failed: %v", err)
	}
	if stats.seekedTo != got || stats.read != desc.Size-got {
		t.Errorf("second Push seeked to %d and read %d bytes; want %d and %d", stats.seekedTo, stats.read, got, desc.Size-got)
	}
	assertBlob(t, s, desc, data)
}
