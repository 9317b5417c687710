package store

import (
	"fmt"
	"os"
	"sync/atomic"

	"oras.land/oras-go/v2/content"
)

// A Segment writes one byte range of a blob ahead of its ingest's
// contiguous prefix, so that several connections can download one large
// blob at once (parallel Range requests). Its bytes are neither hashed nor
// checkpointed when written: Writer.Absorb reads them back, in order, once
// everything before them is there, and only then do they count. A crash
// or a Writer that is closed or resumed loses whatever segments wrote
// beyond the prefix, never anything of the prefix, and nothing is
// committed that was not hashed.
//
// The ingest's data file has holes while segments run: its size is not
// the number of good bytes. A reader that follows the ingest by its size
// (Store.IngestPath, the peer server) must not be pointed at a blob
// downloaded in segments.
//
// Segments of one Writer may run on different goroutines, each Segment on
// one; Writer.Absorb may run alongside them on another. The Writer must
// not be closed, committed or reset while a Segment writes.
type Segment struct {
	w          *Writer
	f          *os.File // the ingest's data file
	start, end int64
	next       atomic.Int64 // data[start:next] is written
	flushed    int64
}

// Segment returns a writer for data[start:end], which must lie beyond the
// prefix (start >= Offset()) and within the blob.
func (w *Writer) Segment(start, end int64) (*Segment, error) {
	if w.data == nil {
		return nil, fmt.Errorf("%s: segment of a closed ingest writer", w.desc.Digest)
	}
	if start < w.offset || start > end || end > w.desc.Size {
		return nil, fmt.Errorf("%s: segment [%d, %d) is not beyond the written prefix (%d) within the blob (%d bytes)",
			w.desc.Digest, start, end, w.offset, w.desc.Size)
	}
	s := &Segment{w: w, f: w.data, start: start, end: end, flushed: start}
	s.next.Store(start)
	return s, nil
}

// Start and End are the segment's range; Written is where it has got to:
// data[Start():Written()] is on file (not yet verified).
func (s *Segment) Start() int64   { return s.start }
func (s *Segment) End() int64     { return s.end }
func (s *Segment) Written() int64 { return s.next.Load() }

// Write writes p at the segment's position. Bytes beyond the segment's end
// fail with content.ErrTrailingData, and nothing of p is written: the
// source sent more than the range it was asked for.
func (s *Segment) Write(p []byte) (int, error) {
	w := s.w
	next := s.next.Load()
	if int64(len(p)) > s.end-next {
		return 0, fmt.Errorf("%s: %w: segment [%d, %d) got at least %d bytes", w.desc.Digest, content.ErrTrailingData, s.start, s.end, next+int64(len(p))-s.start)
	}
	f := s.f
	n, err := f.WriteAt(p, next)
	s.next.Store(next + int64(n))
	if err != nil {
		return n, fmt.Errorf("%s: write ingest data at offset %d: %w", w.desc.Digest, next+int64(n), err)
	}
	if now := next + int64(n); now-s.flushed >= writebackBytes && !w.s.noSync {
		startWriteback(f, s.flushed, now-s.flushed)
		s.flushed = now
	}
	return n, nil
}

// Absorb makes data[Offset():end], written by Segments, part of the
// prefix: it reads the bytes back from the data file (from the page cache,
// as they were just written), hashes them and checkpoints as Write does.
// The caller guarantees that segments wrote all of that range.
func (w *Writer) Absorb(end int64) error {
	if w.data == nil {
		return fmt.Errorf("%s: absorb into a closed ingest writer", w.desc.Digest)
	}
	if end < w.offset || end > w.desc.Size {
		return fmt.Errorf("%s: absorb up to %d: outside [%d, %d]", w.desc.Digest, end, w.offset, w.desc.Size)
	}
	if w.readBuf == nil {
		w.readBuf = make([]byte, absorbBuffer)
	}
	for w.offset < end {
		interval := w.s.checkpointFor(w.desc.Size)
		next := min((w.offset/interval+1)*interval, end)
		chunk := w.readBuf[:min(int64(len(w.readBuf)), next-w.offset)]
		n, err := w.data.ReadAt(chunk, w.offset)
		if n < len(chunk) {
			return fmt.Errorf("%s: read back ingest data at offset %d: %w", w.desc.Digest, w.offset+int64(n), err)
		}
		w.hash.Write(chunk)
		w.offset += int64(n)
		// Segments started writeback of what they wrote.
		w.flushed = max(w.flushed, w.offset)
		if w.offset%interval == 0 {
			if err := w.checkpointAsync(); err != nil {
				return err
			}
		}
	}
	return nil
}

// absorbBuffer is the read-back buffer of Absorb.
const absorbBuffer = 1 << 20

// DiscardAhead drops what segments wrote beyond the prefix, so that the
// data file holds the prefix alone again: use it when segments stop before
// they were all absorbed, before writing on with Write.
func (w *Writer) DiscardAhead() error {
	if w.data == nil {
		return fmt.Errorf("%s: discard ahead of a closed ingest writer", w.desc.Digest)
	}
	if err := w.data.Truncate(w.offset); err != nil {
		return fmt.Errorf("%s: truncate ingest data to %d: %w", w.desc.Digest, w.offset, err)
	}
	return nil
}
