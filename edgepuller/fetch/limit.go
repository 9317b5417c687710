package fetch

import (
	"context"
	"io"
	"sync"
	"time"
)

// Limiter is a token bucket shared by every download it is given to: those
// of one Pull (Options.LimitRate), or of many (Options.Limiter). A reader
// takes tokens after it read, going into debt if it must: the debt is paid
// by sleeping, so the long-run rate holds whatever the read sizes.
type Limiter struct {
	rate  float64 // bytes per second
	burst int     // largest read allowed, and the bucket's capacity

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// NewLimiter returns a limiter of bytesPerSecond, or nil (no limit) if it
// is <= 0.
func NewLimiter(bytesPerSecond int64) *Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	// A tenth of a second of traffic, at least 4 KiB: small enough that
	// the rate is smooth, large enough not to cost a syscall per byte.
	burst := int(max(bytesPerSecond/10, 4<<10))
	return &Limiter{rate: float64(bytesPerSecond), burst: burst, tokens: float64(burst), last: time.Now()}
}

// Reader returns r paced by l: each read is cut to l's burst and paid for
// after, shared with everything else l paces. It keeps io.Seeker and
// io.ReaderAt when r has them. A nil l returns r.
func (l *Limiter) Reader(ctx context.Context, r io.Reader) io.Reader {
	if l == nil {
		return r
	}
	return newMeter(ctx, r, l, nil)
}

// take accounts for n bytes received and sleeps until they are paid for.
func (l *Limiter) take(ctx context.Context, n int) error {
	if l == nil || n <= 0 {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(float64(l.burst), l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n)
	var wait time.Duration
	if l.tokens < 0 {
		wait = time.Duration(-l.tokens / l.rate * float64(time.Second))
	}
	l.mu.Unlock()
	return sleep(ctx, wait)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// meter counts and rate-limits the bytes read through it. newMeter keeps
// io.Seeker and io.ReaderAt when the inner reader has them: a consumer such
// as store.Push resumes by seeking, and hiding Seek would silently turn a
// resume into a re-read from byte 0.
type meter struct {
	ctx   context.Context
	r     io.Reader
	limit *Limiter
	count func(n int)
}

func newMeter(ctx context.Context, r io.Reader, limit *Limiter, count func(n int)) io.Reader {
	m := &meter{ctx: ctx, r: r, limit: limit, count: count}
	_, seeker := r.(io.Seeker)
	_, readerAt := r.(io.ReaderAt)
	switch {
	case seeker && readerAt:
		return struct {
			*meter
			meterSeeker
			meterReaderAt
		}{m, meterSeeker{m}, meterReaderAt{m}}
	case seeker:
		return struct {
			*meter
			meterSeeker
		}{m, meterSeeker{m}}
	case readerAt:
		return struct {
			*meter
			meterReaderAt
		}{m, meterReaderAt{m}}
	}
	return m
}

func (m *meter) chunk(p []byte) []byte {
	if m.limit != nil && len(p) > m.limit.burst {
		return p[:m.limit.burst]
	}
	return p
}

func (m *meter) account(n int, err error) error {
	if n > 0 && m.count != nil {
		m.count(n)
	}
	if lerr := m.limit.take(m.ctx, n); lerr != nil && err == nil {
		err = lerr
	}
	return err
}

func (m *meter) Read(p []byte) (int, error) {
	n, err := m.r.Read(m.chunk(p))
	return n, m.account(n, err)
}

type meterSeeker struct{ m *meter }

func (s meterSeeker) Seek(offset int64, whence int) (int64, error) {
	return s.m.r.(io.Seeker).Seek(offset, whence)
}

type meterReaderAt struct{ m *meter }

// ReadAt fills p as io.ReaderAt requires, in chunks the limiter allows.
func (a meterReaderAt) ReadAt(p []byte, off int64) (int, error) {
	ra := a.m.r.(io.ReaderAt)
	total := 0
	for total < len(p) {
		n, err := ra.ReadAt(a.m.chunk(p[total:]), off+int64(total))
		total += n
		if err = a.m.account(n, err); err != nil {
			return total, err
		}
		if n == 0 {
			return total, io.ErrNoProgress
		}
	}
	return total, nil
}
