package store

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
)

// An ingest keeps two checkpoints, so that the download does not wait for
// the disk and a crash still loses little:
//
//   - progress (ingest/<hex>/progress), written at every interval boundary
//     before the download goes on: one write in place, nothing fsynced
//     (about 16 µs; see writeProgress). After a process crash (SIGKILL,
//     the OOM killer, a container restart) the page cache still holds
//     every byte written, so a resume in the same boot trusts it: a kill
//     loses less than one interval. It records the boot id and is ignored
//     in any other boot, since after a power cut or a reboot the bytes it
//     describes may never have reached the disk.
//   - durable (ingest/<hex>/state): the data fsynced, then the state
//     written and renamed into place, then the directory fsynced (see
//     persist), on a goroutine of its own. Boundaries that come while one
//     lands wait in a one-slot mailbox where the newest wins, so one
//     durable checkpoint may cover several intervals. The download waits
//     only when the durable checkpoint falls more than maxLag behind (a
//     disk much slower than the link), which bounds what a power cut
//     loses.
//
// A resume takes whichever trusted checkpoint is further (see
// loadCheckpoint); both only ever describe the verified prefix.
const (
	stateFile    = "state"
	progressFile = "progress"
)

// durableLagIntervals is how many intervals the durable checkpoint may
// fall behind the download before the download waits for it. At a
// boundary b the download goes on only once a durable checkpoint of at
// least b - 4 intervals is on disk, and it writes less than one interval
// before the next boundary: a power cut loses at most 5 intervals. Under
// load (2 cores, load average 4) the four downloads of a 1 GiB pull
// waited 10-680 ms in all for it, against 1.3-2.6 s when each boundary
// waited for the previous checkpoint.
const durableLagIntervals = 4

// bootID is this boot's id, "" if unknown (then no progress checkpoints).
var bootID = sync.OnceValue(readBootID)

// durableQueue is a Writer's background durable checkpoints: a one-slot
// mailbox (pending, the newest wins), the goroutine emptying it (running),
// and what it achieved (landed, or the first error, reported once).
type durableQueue struct {
	mu      sync.Mutex
	cond    sync.Cond // broadcast when a checkpoint lands or the goroutine stops
	pending *ingestState
	running bool
	landed  int64 // the offset the durable state on disk covers
	err     error
}

// checkpointAsync checkpoints data[:offset] at an interval boundary: the
// progress checkpoint at once, the durable one queued in the background.
func (w *Writer) checkpointAsync() error {
	st, err := w.state()
	if err != nil {
		return err
	}
	if st.BootID != "" {
		if err := w.writeProgress(st); err != nil {
			return err
		}
	}
	return w.queueDurable(st)
}

// maxLag is how far, in bytes, the durable checkpoint may fall behind the
// prefix before the download waits. Without a boot id there is no
// progress checkpoint, and the durable one alone keeps the promise of
// Options.CheckpointBytes for process crashes: one interval, as before.
func (w *Writer) maxLag() int64 {
	interval := w.s.checkpointFor(w.desc.Size)
	if w.bootID == "" {
		return interval
	}
	return durableLagIntervals * interval
}

// queueDurable puts st in the mailbox, replacing a checkpoint that has not
// started, and starts the goroutine if it is not running. It waits only
// while the landed durable checkpoint is more than maxLag behind st.
func (w *Writer) queueDurable(st ingestState) error {
	q := &w.durable
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.takeErr(); err != nil {
		return err
	}
	q.pending = &st
	if !q.running {
		q.running = true
		go w.durableLoop()
	}
	for q.running && q.err == nil && q.landed < st.Offset-w.maxLag() {
		q.cond.Wait()
	}
	return q.takeErr()
}

// durableLoop lands the newest pending checkpoint until none is left or
// one fails. It touches no field of the Writer but durable, and reads the
// data file's descriptor, which the Writer closes only after waitCheckpoint.
func (w *Writer) durableLoop() {
	q := &w.durable
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.pending != nil && q.err == nil {
		st := *q.pending
		q.pending = nil
		q.mu.Unlock()
		if w.s.beforeDurable != nil {
			w.s.beforeDurable()
		}
		err := w.persist(st, true)
		q.mu.Lock()
		if err != nil {
			q.err = err
		} else {
			q.landed = st.Offset
		}
		q.cond.Broadcast()
	}
	q.pending = nil
	q.running = false
	q.cond.Broadcast()
}

func (q *durableQueue) takeErr() error {
	err := q.err
	q.err = nil
	return err
}

// waitCheckpoint drops the durable checkpoint that has not started (the
// caller makes its own, or no longer needs one), waits for the one
// landing, if any, and returns the error of the background checkpoints.
func (w *Writer) waitCheckpoint() error {
	q := &w.durable
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = nil
	for q.running {
		q.cond.Wait()
	}
	return q.takeErr()
}

// landed is the offset the durable checkpoint on disk covers.
func (w *Writer) landed() int64 {
	w.durable.mu.Lock()
	defer w.durable.mu.Unlock()
	return w.durable.landed
}

// setLanded records a durable checkpoint made on the Writer's goroutine;
// no background checkpoint runs (the caller waited for it).
func (w *Writer) setLanded(off int64) {
	w.durable.mu.Lock()
	w.durable.landed = off
	w.durable.mu.Unlock()
}

// writeProgress overwrites the progress checkpoint in place, without any
// fsync. Not a temp file and a rename as for the durable state: while the
// durable checkpoints commit the journal, a rename on ext4 took 1.6 ms on
// average and the four downloads of a 1 GiB pull stood still 1.5-2.0 s in
// all for it; a write in place takes about 16 µs. One write(2) of a few
// hundred bytes at offset 0 lies in one page, which a kill cannot tear; a
// torn or mixed file (a reader racing the write, a length that changed)
// fails the CRC and the resume falls back to the durable checkpoint. A
// power cut may leave anything, and the file is not trusted then anyway.
func (w *Writer) writeProgress(st ingestState) error {
	b, err := st.MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := w.progress.WriteAt(b, 0); err != nil {
		return fmt.Errorf("%s: save ingest progress: %w", w.desc.Digest, err)
	}
	if n := int64(len(b)); n != w.progressSize {
		if err := w.progress.Truncate(n); err != nil {
			return fmt.Errorf("%s: save ingest progress: %w", w.desc.Digest, err)
		}
		w.progressSize = n
	}
	return nil
}

// openProgress opens the progress checkpoint for writeProgress. Anything
// but a regular file in its place (a directory, a symlink that would send
// the writes elsewhere) is removed first: the caller holds the lock, and
// the worst a missing progress checkpoint costs is a resume from the
// durable one.
func (w *Writer) openProgress() error {
	path := filepath.Join(w.dir, progressFile)
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("%s: remove %s, which is not a regular file: %w", w.desc.Digest, path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("%s: open ingest progress: %w", w.desc.Digest, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("%s: stat ingest progress: %w", w.desc.Digest, err)
	}
	w.progress, w.progressSize = f, fi.Size()
	return nil
}

// loadCheckpoint returns the checkpoint a resume of d continues from, and
// the offset of the durable one (0 if there is none it can trust). total
// is the blob's size, or < 0 if not known (Status). A checkpoint is
// trusted if it decodes, is for d (and total), and the data file holds at
// least its offset; a progress checkpoint also only in the boot that
// wrote it. Of two trusted ones the further wins: both describe the
// verified prefix, written in order, and Reset and a new ingest rewrite
// both (durable first), so the further one is never stale.
func loadCheckpoint(dir string, d digest.Digest, total, dataSize int64) (st ingestState, durable int64, ok bool) {
	read := func(name string) (ingestState, bool) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return ingestState{}, false
		}
		st, err := decodeIngestState(b)
		if err != nil || st.Digest != d || (total >= 0 && st.Total != total) || st.Offset > dataSize {
			return ingestState{}, false
		}
		return st, true
	}
	dst, dok := read(stateFile)
	pst, pok := read(progressFile)
	pok = pok && pst.BootID != "" && pst.BootID == bootID()
	if dok {
		durable = dst.Offset
	}
	switch {
	case pok && (!dok || pst.Offset >= dst.Offset):
		return pst, durable, true
	case dok:
		return dst, durable, true
	}
	return ingestState{}, 0, false
}
