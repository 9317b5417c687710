package fetch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bargeml/barge/edgepuller/store"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// A large blob is downloaded from the origin with several Range requests
// at once, each writing its segment at its offset into the ingest
// (store.Segment) while this goroutine hashes the contiguous prefix in
// order (Writer.Absorb). The checkpoint stays the prefix: a kill or a cut
// loses what segments wrote beyond it, never verified bytes, and the next
// attempt (or pull) resumes from the prefix with one stream or several.
var (
	// minSegment is the smallest segment: below it the extra request and
	// TCP slow start cost more than a second stream brings.
	minSegment int64 = 64 << 20
	// segmentAlign keeps segment boundaries on whole MiB.
	segmentAlign int64 = 1 << 20
	// segmentLatency is the origin's fastest answer to a metadata request
	// (tag, manifest) from which a blob is fetched in segments. Below it
	// one TCP stream fills the link, and segments only cost CPU: the
	// prefix is read back from the page cache to be hashed, and on
	// loopback, with 2 cores, a 4 GiB layer took 1.6x as long in 4
	// segments as in one stream. At 50 ms one stream is held back by its
	// window, as aria2 and hf_transfer found.
	segmentLatency = 10 * time.Millisecond
)

// latency is the metadata client of a pull; it keeps the fastest answer
// of the origin host.
type latency struct {
	c       remote.Client
	host    string
	fastest atomic.Int64 // nanoseconds; 0 until the origin answered
}

func (l *latency) Do(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := l.c.Do(req)
	if err == nil && req.URL.Host == l.host {
		d := int64(time.Since(start))
		for {
			old := l.fastest.Load()
			if old != 0 && old <= d || l.fastest.CompareAndSwap(old, d) {
				break
			}
		}
	}
	return resp, err
}

// long reports an origin whose fastest answer took segmentLatency or
// more; false before any answer (FetchBlob alone asks no metadata).
func (l *latency) long() bool {
	d := l.fastest.Load()
	return d > 0 && time.Duration(d) >= segmentLatency
}

const (
	// segmentRetries bounds the resumes of one cut segment without
	// progress before the whole blob falls back to one stream.
	segmentRetries = 3
)

// errNoRange marks an origin that answered a bounded Range request with
// the whole blob: segments cannot work with it.
var errNoRange = errors.New("ignores Range requests")

// segmentsFor decides how many segments the rest of desc gets from src:
// 1 means one stream (the plain attempt). It reserves the extra streams;
// the caller gives them back with releaseExtra.
func (d *download) segmentsFor(src source) int {
	p := d.p
	left := d.desc.Size - d.w.Offset()
	if !src.origin() || p.opts.Announce != nil || p.opts.Segments < 2 || left < 2*minSegment || !p.originLatency.long() {
		return 1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.noRange {
		return 1
	}
	// The layers still to come will want a stream each: only what they
	// leave of Concurrency goes to segments.
	busy := max(p.streams, p.pending) + p.extra
	n := min(int64(p.opts.Segments), left/minSegment, int64(p.opts.Concurrency-busy+1))
	if n < 2 {
		return 1
	}
	p.extra += int(n) - 1
	return int(n)
}

// releaseExtra gives back the extra streams of a segmented attempt.
func (p *puller) releaseExtra(n int) {
	p.mu.Lock()
	p.extra -= n
	p.mu.Unlock()
}

// setPending adds delta to the layers of the pull not done yet.
func (p *puller) setPending(delta int) {
	p.mu.Lock()
	p.pending += delta
	p.mu.Unlock()
}

// segmented downloads the rest of the blob from src in n segments. When it
// fails, the prefix keeps every byte that was contiguous and verified by
// the hash so far, what lies beyond is dropped, and the caller's loop
// carries on with one stream from there.
func (d *download) segmented(ctx context.Context, src source, n int) *attemptError {
	w, size := d.w, d.desc.Size
	off := w.Offset()
	step := ((size - off) / int64(n)) / segmentAlign * segmentAlign
	segs := make([]*store.Segment, n)
	for i := range segs {
		start, end := off+int64(i)*step, off+int64(i+1)*step
		if i == n-1 {
			end = size
		}
		sg, err := w.Segment(start, end)
		if err != nil {
			return failf(local, "%w", err)
		}
		segs[i] = sg
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	moved := make(chan struct{}, 1)
	// first is the failure that stopped the segments; the others then end
	// with the cancellation, which says nothing.
	var (
		first     *attemptError
		firstOnce sync.Once
		wg        sync.WaitGroup
	)
	for _, sg := range segs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.segment(sctx, src, sg, moved); err != nil {
				firstOnce.Do(func() { first = err })
				cancel()
			}
			select {
			case moved <- struct{}{}:
			default:
			}
		}()
	}

	// Hash the prefix as the segments come in, in order: the bytes are in
	// the page cache, just written. absorb takes the prefix up to upto,
	// which the segment holding the prefix's end has written.
	var lerr *attemptError
	absorb := func(upto int64) bool {
		if upto <= w.Offset() {
			return false
		}
		if err := w.Absorb(upto); err != nil {
			lerr = failf(local, "write to the blob store: %w", err)
			cancel()
			return false
		}
		d.progress()
		return true
	}
	for _, sg := range segs {
		for w.Offset() < sg.End() && sctx.Err() == nil {
			if !absorb(sg.Written()) {
				select {
				case <-moved:
				case <-sctx.Done():
				}
			}
		}
	}
	wg.Wait()
	// A segment failed: keep what is contiguous, drop what lies beyond.
	for _, sg := range segs {
		absorb(sg.Written())
		if lerr != nil || w.Offset() < sg.End() {
			break
		}
	}
	if lerr != nil {
		return lerr
	}
	if w.Offset() == size {
		return nil
	}
	if err := w.DiscardAhead(); err != nil {
		return failf(local, "%w", err)
	}
	if first != nil {
		return first
	}
	return failf(transient, "%s: download in %d segments stopped at offset %d of %d", src, n, w.Offset(), size)
}

// segment downloads one segment, resuming it where a cut left it a few
// times; any other failure ends it, and with it the segmented attempt.
func (d *download) segment(ctx context.Context, src source, sg *store.Segment, moved chan<- struct{}) *attemptError {
	buf := make([]byte, min(bufferSize, sg.End()-sg.Start()))
	for tries := 0; ; {
		before := sg.Written()
		err := d.segmentAttempt(ctx, src, sg, buf, moved)
		if err == nil || err.kind != transient || err.retryAfter > 0 || ctx.Err() != nil {
			return err
		}
		if sg.Written() > before {
			tries = 0
		}
		if tries++; tries > segmentRetries {
			return err
		}
		d.p.retries.Add(1)
		if serr := sleep(ctx, d.p.opts.Backoff(tries)); serr != nil {
			return err
		}
	}
}

// segmentAttempt sends one GET for the rest of the segment and writes what
// arrives at its offset.
func (d *download) segmentAttempt(ctx context.Context, src source, sg *store.Segment, buf []byte, moved chan<- struct{}) *attemptError {
	p := d.p
	from, end := sg.Written(), sg.End()
	ref := p.ref
	ref.Reference = d.desc.Digest.String()

	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(p.opts.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	req, err := http.NewRequestWithContext(auth.AppendRepositoryScope(actx, ref, auth.ActionPull), http.MethodGet, src.blobURL(ref), nil)
	if err != nil {
		return failf(local, "%s: build request: %w", src, err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, end-1))
	resp, err := p.blobClient(src).Do(req)
	stall.Stop()
	if err != nil {
		return d.networkError(actx, src, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err == nil && (cr.First != from || cr.Last != end-1 || (cr.Total >= 0 && cr.Total != d.desc.Size)) {
			err = fmt.Errorf("Content-Range %q is not bytes %d-%d/%d", resp.Header.Get("Content-Range"), from, end-1, d.desc.Size)
		}
		if err != nil {
			return d.noSegments(src, fmt.Errorf("%s answered Range bytes=%d-%d with %v", src, from, end-1, err))
		}
	case http.StatusOK:
		return d.noSegments(src, fmt.Errorf("%s %w: it answered Range bytes=%d-%d with the whole blob", src, errNoRange, from, end-1))
	case http.StatusRequestedRangeNotSatisfiable:
		// One stream finds out what is wrong (and resets if the blob
		// there is shorter).
		return d.noSegments(src, fmt.Errorf("%s refused Range bytes=%d-%d (HTTP 416)", src, from, end-1))
	default:
		return statusError(src, resp)
	}

	body := newMeter(actx, &stallReader{r: resp.Body, t: stall, d: p.opts.StallTimeout}, p.limit, func(n int) { p.received(src, int64(n)) })
	for sg.Written() < end {
		n, rerr := body.Read(buf[:min(int64(len(buf)), end-sg.Written())])
		if n > 0 {
			if _, err := sg.Write(buf[:n]); err != nil {
				return failf(local, "write to the blob store: %w", err)
			}
			select {
			case moved <- struct{}{}:
			default:
			}
		}
		if rerr != nil && sg.Written() < end {
			if errors.Is(context.Cause(actx), errStalled) {
				return failf(transient, "%s sent nothing for %s at offset %d of %d", src, p.opts.StallTimeout, sg.Written(), d.desc.Size)
			}
			return failf(transient, "%s: segment cut at offset %d of %d: %v", src, sg.Written(), d.desc.Size, rerr)
		}
	}
	return nil
}

// noSegments stops segments for the rest of the pull: the blob continues
// with one stream at once.
func (d *download) noSegments(src source, err error) *attemptError {
	d.p.mu.Lock()
	d.p.noRange = true
	d.p.mu.Unlock()
	return &attemptError{kind: fallback, err: fmt.Errorf("%w; going on with one stream", err)}
}
