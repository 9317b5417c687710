package peer

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
)

// followPoll is how often a stream waiting for a download looks at its
// file again; 20ms adds little to a LAN hop and costs a stat.
const followPoll = 20 * time.Millisecond

// streamBuffer is the one buffer of a stream: memory stays bounded however
// large the blob and however many bytes have arrived.
const streamBuffer = 64 << 10

// Reasons a stream ends before its last byte. None of them means the bytes
// sent were wrong; the client resumes with Range from where it got to,
// here or at its next source.
var (
	errShrunk    = errors.New("the download was reset or resumed from an earlier checkpoint")
	errReplaced  = errors.New("the download was discarded and started over")
	errWithdrawn = errors.New("this node stopped fetching the blob before it was complete")
	errShort     = errors.New("the committed blob is shorter than announced")
)

// follow writes bytes [pos, end) of blob d to w: from the committed blob,
// or from its ingest as the download appends to it, waiting while it has
// not reached pos yet. It returns nil once end is reached.
func (s *Server) follow(ctx context.Context, w http.ResponseWriter, d digest.Digest, pos, end int64) error {
	f := &follower{s: s, d: d}
	defer f.close()
	rc := http.NewResponseController(w)
	buf := make([]byte, streamBuffer)
	for pos < end {
		n, err := f.read(buf[:min(int64(len(buf)), end-pos)], pos)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			pos += int64(n)
			continue
		}
		if err != nil {
			return err
		}
		// Nothing new: let the client have what was sent, then wait for
		// the writer, or for the announcement to change.
		rc.Flush()
		_, _, changed := s.announcement(d)
		t := time.NewTimer(followPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// follower reads one blob while it arrives: the file it has open, the
// ingest's data file or the committed blob, and the largest size it saw,
// so that a truncation is noticed.
type follower struct {
	s    *Server
	d    digest.Digest
	f    *os.File
	fi   fs.FileInfo // identity of f
	seen int64
}

// read reads bytes at pos that are there now. It returns 0, nil when more
// may come, and an error when the bytes at pos will not come from this
// download.
func (fl *follower) read(p []byte, pos int64) (int, error) {
	for range 3 { // the file may move (commit) between looks; a few tries suffice
		if fl.f != nil {
			fi, err := fl.f.Stat()
			if err != nil {
				return 0, err
			}
			size := fi.Size()
			if size < fl.seen {
				return 0, errShrunk
			}
			fl.seen = size
			if size > pos {
				n, err := fl.f.ReadAt(p[:min(int64(len(p)), size-pos)], pos)
				if n > 0 || err == nil {
					return n, nil
				}
				return 0, err
			}
		}
		// Nothing beyond pos in the file we have: find out what comes next.
		switched, err := fl.next()
		if err != nil || !switched {
			return 0, err
		}
	}
	return 0, nil
}

// next decides, when the open file has nothing beyond the position, what
// the stream reads from now. It returns true if it opened another file.
func (fl *follower) next() (bool, error) {
	blob := fl.s.st.BlobPath(fl.d)
	if bi, err := os.Stat(blob); err == nil {
		if fl.f != nil && os.SameFile(fl.fi, bi) {
			return false, errShort // the committed blob is all there is
		}
		// Committed from another file (or we had none): its bytes are
		// verified, and the same as any correct ingest's.
		return fl.open(blob)
	}
	ingest := fl.s.st.IngestPath(fl.d)
	ii, err := os.Stat(ingest)
	switch {
	case err == nil && fl.f == nil:
		return fl.open(ingest)
	case err == nil && !os.SameFile(fl.fi, ii), fl.f != nil && errors.Is(err, fs.ErrNotExist):
		if _, err := os.Stat(blob); err == nil {
			return true, nil // committed between the two looks: look again
		}
		// The bytes sent came from a download that was thrown away
		// (digest mismatch, trailing data): the client starts over.
		return false, errReplaced
	}
	if _, announced, _ := fl.s.announcement(fl.d); !announced {
		return false, errWithdrawn
	}
	return false, nil // still arriving, or about to start
}

func (fl *follower) open(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // moved since the look: look again next time
	}
	if err != nil {
		return false, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return false, err
	}
	fl.close()
	fl.f, fl.fi, fl.seen = f, fi, 0
	return true, nil
}

func (fl *follower) close() {
	if fl.f != nil {
		fl.f.Close()
		fl.f = nil
	}
}
