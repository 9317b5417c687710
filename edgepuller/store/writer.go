package store

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// Writer writes one blob into its ingest. It holds the ingest's lock from
// Store.Writer until Commit or Close, so one digest has one writer at a time
// across goroutines and processes. A Writer is not safe for concurrent use.
type Writer struct {
	s    *Store
	desc ocispec.Descriptor
	dir  string
	lock *ingestLock

	data    *os.File
	hash    hash.Hash // sha256 of data[:offset]
	offset  int64
	flushed int64  // offset up to which writeback was started
	readBuf []byte // Absorb's, allocated on first use
	bootID  string // recorded in checkpoints; "" if unknown

	progress     *os.File // the progress checkpoint, nil without a boot id
	progressSize int64    // its length

	durable durableQueue // background durable checkpoints (checkpoint.go)
}

// writebackBytes is how often writeback of written data is started, so
// that a checkpoint's fsync, and the one at commit, find little left to do.
const writebackBytes = 4 << 20

// Writer opens the ingest for desc, resuming a partial one. Offset tells the
// caller where to continue (for HTTP, Range: bytes=<Offset>-).
//
// If another writer holds the ingest, Writer waits for it, until ctx ends.
// It returns errdef.ErrAlreadyExists if the blob is committed, also when the writer
// it waited for committed it: concurrent pulls of a digest download it once.
func (s *Store) Writer(ctx context.Context, desc ocispec.Descriptor) (*Writer, error) {
	if err := validateDigest(desc.Digest); err != nil {
		return nil, err
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("%s: %w: negative size %d in descriptor", desc.Digest, content.ErrInvalidDescriptorSize, desc.Size)
	}
	lock, err := s.lockIngest(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	w := &Writer{s: s, desc: desc, dir: s.ingestDir(desc.Digest), lock: lock, bootID: bootID()}
	w.durable.cond.L = &w.durable.mu
	if err := w.open(); err != nil {
		if w.data != nil {
			w.data.Close()
		}
		if w.progress != nil {
			w.progress.Close()
		}
		lock.unlock()
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	d := w.desc.Digest
	if _, err := os.Stat(w.s.BlobPath(d)); err == nil {
		// Whatever ingest is left is now useless; we hold the lock, so
		// nobody else is writing it.
		os.RemoveAll(w.dir)
		return fmt.Errorf("%s: %w", d, errdef.ErrAlreadyExists)
	}
	path := filepath.Join(w.dir, "data")
	if err := makeWritable(path); err != nil {
		return fmt.Errorf("%s: open ingest data: %w", d, err)
	}
	var err error
	w.data, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("%s: open ingest data: %w", d, err)
	}
	fi, err := w.data.Stat()
	if err != nil {
		return fmt.Errorf("%s: stat ingest data: %w", d, err)
	}

	// Resume from the last checkpoint it can trust (loadCheckpoint: the
	// progress one if this boot wrote it, else the durable one) and
	// truncate whatever the data file holds beyond it. Beyond a progress
	// checkpoint lie bytes of an interval not yet checkpointed; beyond a
	// durable one after a power cut, bytes that were never fsynced and may
	// be zeros or stale blocks: hashing them would turn a bad tail into a
	// digest mismatch that throws away the whole multi-GiB ingest at
	// commit. Truncating never reads the prefix.
	//
	// Without a usable checkpoint (none yet, damaged, for another size, or
	// the data file is shorter than it claims) nothing on disk is vouched
	// for, so the ingest restarts from 0.
	w.hash = sha256.New()
	if st, durable, ok := loadCheckpoint(w.dir, d, w.desc.Size, fi.Size()); ok {
		h, _ := st.hasher() // cannot fail: decodeIngestState checked it
		w.hash, w.offset, w.flushed = h, st.Offset, st.Offset
		w.durable.landed = durable
	}
	if err := w.data.Truncate(w.offset); err != nil {
		return fmt.Errorf("%s: truncate ingest data to checkpoint %d: %w", d, w.offset, err)
	}
	if w.bootID != "" {
		if err := w.openProgress(); err != nil {
			return err
		}
	}
	if _, err := w.data.Seek(w.offset, io.SeekStart); err != nil {
		return fmt.Errorf("%s: seek ingest data: %w", d, err)
	}
	if w.offset == 0 {
		// Record the total at once so Status and ListIngests can report it.
		return w.writeState()
	}
	return nil
}

// makeWritable undoes what a crash between Commit's Chmod and its rename
// leaves behind: a read-only data file that a puller without
// CAP_DAC_OVERRIDE (the chart drops every capability, and the CLI runs as
// a user) could never open again, so the blob could not be pulled until
// garbage collection removed the ingest. The caller holds the ingest's
// lock, so no one else is writing the file. If it cannot be made writable
// (it belongs to another user), it is removed and the ingest restarts.
func makeWritable(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file; remove it", path)
	}
	if fi.Mode().Perm()&0o200 != 0 {
		return nil
	}
	if os.Chmod(path, 0o644) == nil {
		return nil
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("read-only %s left by a crash during commit can be neither made writable nor removed: %w", path, err)
	}
	return nil
}

// Offset is the number of bytes of the blob the ingest holds: right after
// Store.Writer, the resume point; then it grows with every Write.
func (w *Writer) Offset() int64 { return w.offset }

// Write appends p to the ingest. Bytes beyond the descriptor's size mean the
// source is not this blob (or a server ignored a Range request and the caller
// did not Reset): Write then discards the ingest and fails with
// content.ErrTrailingData.
func (w *Writer) Write(p []byte) (int, error) {
	if w.data == nil {
		return 0, fmt.Errorf("%s: write to a closed ingest writer", w.desc.Digest)
	}
	if int64(len(p)) > w.desc.Size-w.offset {
		got := w.offset + int64(len(p))
		w.drop()
		return 0, fmt.Errorf("%s: %w: got at least %d bytes, want %d; the partial was discarded and the next pull starts from 0",
			w.desc.Digest, content.ErrTrailingData, got, w.desc.Size)
	}
	written := 0
	for len(p) > 0 {
		// Split at checkpoint boundaries so checkpoints land on multiples of
		// CheckpointBytes whatever the caller's chunking: a crash then loses
		// less than one interval.
		interval := w.s.checkpointFor(w.desc.Size)
		next := (w.offset/interval + 1) * interval
		chunk := p[:min(int64(len(p)), next-w.offset)]
		// At the offset, not the file position: Absorb moves the prefix
		// without writing.
		n, err := w.data.WriteAt(chunk, w.offset)
		w.hash.Write(chunk[:n])
		w.offset += int64(n)
		written += n
		if err != nil {
			return written, fmt.Errorf("%s: write ingest data at offset %d: %w", w.desc.Digest, w.offset, err)
		}
		if w.offset-w.flushed >= writebackBytes && !w.s.noSync {
			startWriteback(w.data, w.flushed, w.offset-w.flushed)
			w.flushed = w.offset
		}
		if w.offset == next {
			if err := w.checkpointAsync(); err != nil {
				return written, err
			}
		}
		p = p[n:]
	}
	return written, nil
}

// checkpoint makes data[:offset] durable and then records the hash state
// covering it, before returning. The order matters: a state file must never
// describe bytes that a power cut could still take away.
func (w *Writer) checkpoint() error {
	if err := w.waitCheckpoint(); err != nil {
		return err
	}
	if w.offset == w.landed() {
		return nil
	}
	st, err := w.state()
	if err != nil {
		return err
	}
	if err := w.persist(st, false); err != nil {
		return err
	}
	w.setLanded(st.Offset)
	return nil
}

// state is the checkpoint of data[:offset].
func (w *Writer) state() (ingestState, error) {
	hs, err := w.hash.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return ingestState{}, fmt.Errorf("%s: save hash state: %w", w.desc.Digest, err)
	}
	return ingestState{Digest: w.desc.Digest, Total: w.desc.Size, Offset: w.offset, Hash: hs, BootID: w.bootID}, nil
}

// persist makes the durable checkpoint st: it syncs the data file (which
// holds at least st.Offset bytes), then replaces the state file atomically
// (temp file + rename). It runs on the Writer's goroutine or, for one
// checkpoint at a time, on its own (background); it touches no field of
// the Writer but reads the data file's descriptor.
//
// On the Writer's goroutine (a new ingest, Reset, Close) the state file is
// fsynced and the directory is not: if the rename is lost, the older state
// it replaced is still valid, since the data only grew past it.
//
// In the background the directory is fsynced too, so that the offset the
// download's pace counts on (durableQueue.landed) is on disk, which is
// what bounds a power cut's loss; the state file's own fsync is skipped
// on a filesystem that writes a file renamed over another before the
// rename commits (Store.renameFlushes: ext4), as the directory's fsync
// commits both. Nobody waits for those fsyncs but the next background
// checkpoint.
func (w *Writer) persist(st ingestState, background bool) error {
	if !w.s.noSync {
		if err := w.data.Sync(); err != nil {
			return fmt.Errorf("%s: sync ingest data: %w", w.desc.Digest, err)
		}
	}
	b, err := st.MarshalBinary()
	if err != nil {
		return err
	}
	syncState := !w.s.noSync && !(background && w.s.renameFlushes)
	if err := writeFileAtomic(filepath.Join(w.dir, stateFile), b, syncState); err != nil {
		return fmt.Errorf("%s: save ingest checkpoint: %w", w.desc.Digest, err)
	}
	if background && !w.s.noSync {
		if err := syncDir(w.dir); err != nil {
			return fmt.Errorf("%s: sync ingest directory: %w", w.desc.Digest, err)
		}
	}
	return nil
}

// writeState records the current offset at once, for a new or reset
// ingest: the durable checkpoint first, then the progress one, so that a
// crash between the two never leaves a progress checkpoint from before a
// Reset further than the durable one (loadCheckpoint takes the further).
func (w *Writer) writeState() error {
	if err := w.waitCheckpoint(); err != nil {
		return err
	}
	st, err := w.state()
	if err != nil {
		return err
	}
	if err := w.persist(st, false); err != nil {
		return err
	}
	w.setLanded(st.Offset)
	if st.BootID != "" {
		return w.writeProgress(st)
	}
	return nil
}

func writeFileAtomic(path string, b []byte, sync bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Reset empties the ingest so the blob is written again from 0. Use it when
// a server answered a Range request with the whole blob.
func (w *Writer) Reset() error {
	if w.data == nil {
		return fmt.Errorf("%s: reset a closed ingest writer", w.desc.Digest)
	}
	// A checkpoint still running must not land after the reset.
	if err := w.waitCheckpoint(); err != nil {
		return err
	}
	if err := w.data.Truncate(0); err != nil {
		return fmt.Errorf("%s: reset ingest: %w", w.desc.Digest, err)
	}
	if _, err := w.data.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%s: reset ingest: %w", w.desc.Digest, err)
	}
	w.hash.Reset()
	w.offset, w.flushed = 0, 0
	return w.writeState()
}

// Commit verifies that the ingest holds exactly the blob, then moves it into
// blobs/ atomically and durably. The Writer is closed afterwards whatever the
// result. Short data (io.ErrUnexpectedEOF) is kept for a later resume; data
// that hashes to another digest (content.ErrMismatchedDigest) is discarded,
// since no byte of it can be trusted.
func (w *Writer) Commit(ctx context.Context) error {
	if w.data == nil {
		return fmt.Errorf("%s: commit a closed ingest writer", w.desc.Digest)
	}
	d := w.desc.Digest
	if err := w.waitCheckpoint(); err != nil {
		return errors.Join(err, w.Close())
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(fmt.Errorf("%s: commit: %w", d, err), w.Close())
	}
	if w.offset != w.desc.Size {
		err := fmt.Errorf("%s: %w: want %d bytes, got %d; the partial is kept and the next pull resumes at %d",
			d, io.ErrUnexpectedEOF, w.desc.Size, w.offset, w.offset)
		return errors.Join(err, w.Close())
	}
	if got := digest.NewDigest(digest.SHA256, w.hash); got != d {
		w.drop()
		return fmt.Errorf("%s: %w: want %s, got %s; the downloaded data is not this blob, the partial was discarded and the next pull starts from 0",
			d, content.ErrMismatchedDigest, d, got)
	}

	defer w.release()
	if !w.s.noSync {
		if err := w.data.Sync(); err != nil {
			return fmt.Errorf("%s: commit: sync data: %w", d, err)
		}
	}
	if err := w.data.Chmod(0o444); err != nil {
		return fmt.Errorf("%s: commit: make blob read-only: %w", d, err)
	}
	if err := os.Rename(filepath.Join(w.dir, "data"), w.s.BlobPath(d)); err != nil {
		return fmt.Errorf("%s: commit: move into blobs: %w", d, err)
	}
	if fi, err := os.Stat(w.s.BlobPath(d)); err == nil {
		w.s.stamp(d, fi)
	}
	if !w.s.noSync {
		if err := syncDir(w.s.blobDir()); err != nil {
			return fmt.Errorf("%s: commit: sync blobs directory: %w", d, err)
		}
	}
	// The blob is committed; a leftover ingest directory is only clutter
	// that the next Writer or AbortIngest of this digest removes.
	os.RemoveAll(w.dir)
	return nil
}

// Close releases the ingest, keeping what was written for a later resume.
// It checkpoints first, so a resume loses nothing that was written.
// Close after Commit is a no-op.
func (w *Writer) Close() error {
	if w.data == nil {
		return nil
	}
	defer w.release()
	return w.checkpoint()
}

// drop discards the ingest and releases the Writer.
func (w *Writer) drop() {
	w.waitCheckpoint()
	w.closeFiles()
	// Remove while still holding the lock, so that no writer opens a
	// half-deleted ingest.
	os.RemoveAll(w.dir)
	w.lock.unlock()
}

// release closes the data file and the lock. It is idempotent.
func (w *Writer) release() {
	w.waitCheckpoint()
	w.closeFiles()
	w.lock.unlock()
}

// closeFiles closes the data file and the progress checkpoint.
func (w *Writer) closeFiles() {
	if w.data != nil {
		w.data.Close()
		w.data = nil
	}
	if w.progress != nil {
		w.progress.Close()
		w.progress = nil
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return err
	}
	return nil
}
