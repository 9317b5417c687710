package fetch

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// TestMeterKeepsInterfaces: wrapping a reader to count and limit it must
// not hide io.Seeker or io.ReaderAt, and must count what passes.
func TestMeterKeepsInterfaces(t *testing.T) {
	data := []byte("0123456789")
	for _, tc := range []struct {
		name             string
		r                io.Reader
		seeker, readerAt bool
	}{
		{"bytes.Reader", bytes.NewReader(data), true, true},
		{"plain reader", io.MultiReader(bytes.NewReader(data)), false, false},
		{"seeker only", struct{ io.ReadSeeker }{bytes.NewReader(data)}, true, false},
		{"reader-at only", struct {
			io.Reader
			io.ReaderAt
		}{bytes.NewReader(data), bytes.NewReader(data)}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n int
			m := newMeter(context.Background(), tc.r, NewLimiter(1<<30), func(k int) { n += k })
			if _, ok := m.(io.Seeker); ok != tc.seeker {
				t.Errorf("io.Seeker: %v, want %v", ok, tc.seeker)
			}
			ra, ok := m.(io.ReaderAt)
			if ok != tc.readerAt {
				t.Errorf("io.ReaderAt: %v, want %v", ok, tc.readerAt)
			}
			if ok {
				p := make([]byte, 4)
				if k, err := ra.ReadAt(p, 3); k != 4 || err != nil || string(p) != "3456" {
					t.Errorf("ReadAt = %d, %v, %q", k, err, p)
				}
				n = 0
			}
			if s, ok := m.(io.Seeker); ok {
				if _, err := s.Seek(2, io.SeekStart); err != nil {
					t.Fatal(err)
				}
			}
			b, err := io.ReadAll(m)
			if err != nil || !strings.HasSuffix(string(data), string(b)) || n != len(b) {
				t.Errorf("read %q (%v), counted %d", b, err, n)
			}
		})
	}
}

// TestLimiterReader: a nil Limiter leaves a reader as it is; a Limiter's
// Reader passes every byte and keeps io.Seeker.
func TestLimiterReader(t *testing.T) {
	r := strings.NewReader("0123456789")
	var none *Limiter
	if got := none.Reader(context.Background(), r); got != io.Reader(r) {
		t.Errorf("a nil Limiter wrapped the reader: %T", got)
	}
	paced := NewLimiter(1<<20).Reader(context.Background(), r)
	if _, ok := paced.(io.Seeker); !ok {
		t.Errorf("the paced reader hides io.Seeker")
	}
	if b, err := io.ReadAll(paced); err != nil || string(b) != "0123456789" {
		t.Errorf("read %q, %v", b, err)
	}
}
