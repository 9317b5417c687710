package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// Options configures a Store. The zero value is what production wants.
type Options struct {
	// CheckpointBytes is how often, in bytes written, an ingest checkpoints
	// its sha256 state (see checkpoint.go). At every interval a progress
	// checkpoint is written, without fsync, before the download goes on: a
	// process crash (SIGKILL, the OOM killer, a container restart) loses
	// less than one interval of progress, as the page cache keeps the
	// bytes. The durable checkpoint (data fsynced, then the state, then its
	// directory) lands in the background, and the download waits for it
	// only when it falls more than four intervals behind: a power cut or a
	// reboot, after which the progress checkpoint is not trusted, loses at
	// most five intervals (usually one or two: a durable checkpoint takes
	// about one fsync of what arrived since the one before). Where the boot
	// id is unknown (not Linux) there is no progress checkpoint and the
	// download waits for the previous durable checkpoint at every interval:
	// a crash of either kind loses at most two intervals.
	// If <= 0, a blob's size / 64 is used, at least 1 MiB and at most
	// DefaultCheckpointBytes: a crash then costs under 2% (a power cut
	// under 8%) of a large blob in re-download, and a small blob is not
	// fsynced at every write.
	CheckpointBytes int64
	// NoSync skips every fsync. For tests and benchmarks only: without fsync
	// a power cut can leave a checkpoint that points at data never written.
	// The default syncs data before every checkpoint and at commit.
	NoSync bool
}

// DefaultCheckpointBytes is the largest checkpoint interval used when
// Options leaves CheckpointBytes unset.
const DefaultCheckpointBytes = 16 << 20

const minCheckpointBytes = 1 << 20

// checkpointFor is the checkpoint interval for a blob of size bytes.
func (s *Store) checkpointFor(size int64) int64 {
	if s.checkpoint > 0 {
		return s.checkpoint
	}
	return min(max(size/64, minCheckpointBytes), DefaultCheckpointBytes)
}

// Store is a content-addressed blob store rooted at one directory:
//
//	blobs/sha256/<hex>   committed blobs, always whole and verified
//	ingest/<hex>/data    partial download
//	ingest/<hex>/state   durable checkpoint: offset and sha256 state (see ingestState)
//	ingest/<hex>/progress  checkpoint trusted in the boot that wrote it (checkpoint.go)
//	ingest/<hex>/lock    flock shared by every process writing <hex>
//	verified/<hex>       the blob file's stat when last verified (see Exists)
//
// A Store is safe for concurrent use, also by several processes sharing root.
type Store struct {
	root       string
	checkpoint int64
	noSync     bool
	// renameFlushes: the filesystem writes a new file's data before a
	// rename of it over an existing file commits (ext4's auto_da_alloc),
	// so a state file renamed into place is never found empty or torn.
	renameFlushes bool
	locks         keyedMutex
	rehashed      atomic.Int64
	// beforeDurable, if set (tests only), runs before every background
	// durable checkpoint: a slow disk.
	beforeDurable func()
}

// Open returns the store at root, creating its directories if needed.
func Open(root string, opts Options) (*Store, error) {
	s := &Store{root: root, checkpoint: opts.CheckpointBytes, noSync: opts.NoSync, renameFlushes: renameFlushes(root)}
	for _, dir := range []string{s.blobDir(), s.ingestRoot(), s.stampDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open blob store %s: %w", root, err)
		}
	}
	return s, nil
}

// Root is the directory the store lives in.
func (s *Store) Root() string { return s.root }

func (s *Store) blobDir() string                  { return filepath.Join(s.root, "blobs", "sha256") }
func (s *Store) ingestRoot() string               { return filepath.Join(s.root, "ingest") }
func (s *Store) ingestDir(d digest.Digest) string { return filepath.Join(s.ingestRoot(), d.Encoded()) }

// BlobPath returns where the committed blob d lives, for the unpacker to
// hard-link. Committed blobs are read-only (0444) so that a link cannot be
// opened for writing by mistake and change the store behind its digest.
// It returns "" if d is not a valid sha256 digest.
func (s *Store) BlobPath(d digest.Digest) string {
	if validateDigest(d) != nil {
		return ""
	}
	return filepath.Join(s.blobDir(), d.Encoded())
}

// Fetch opens the committed blob desc. The reader is an *os.File, so callers
// get io.Seeker and io.ReaderAt (oras-go resumes and parallelises with them).
func (s *Store) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := validateDigest(desc.Digest); err != nil {
		return nil, err
	}
	f, err := os.Open(s.BlobPath(desc.Digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", desc.Digest, errdef.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: open blob: %w", desc.Digest, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: stat blob: %w", desc.Digest, err)
	}
	if fi.Size() != desc.Size {
		f.Close()
		return nil, fmt.Errorf("%s: %w: descriptor says %d bytes, the stored blob has %d; check the descriptor",
			desc.Digest, content.ErrInvalidDescriptorSize, desc.Size, fi.Size())
	}
	s.touch(desc.Digest, f.Name(), fi)
	return f, nil
}

// accessResolution bounds how often Fetch writes a blob's access time.
// Edge disks are often mounted noatime to spare flash, so the store records
// use itself; an hour is plenty for garbage collection measured in days.
const accessResolution = time.Hour

func (s *Store) touch(d digest.Digest, path string, fi fs.FileInfo) {
	now := time.Now()
	if now.Sub(accessTime(fi)) < accessResolution {
		return
	}
	// Setting the access time changes the ctime: restamp a blob that was
	// unchanged, so that the next Exists does not hash it again for it.
	unchanged := s.unchanged(d, fi)
	// Best effort: a read-only mount must not make reads fail; the blob then
	// just looks older to the garbage collector than it is.
	if os.Chtimes(path, now, time.Time{}) != nil || !unchanged {
		return
	}
	if fi, err := os.Stat(path); err == nil {
		s.stamp(d, fi)
	}
}

// Exists reports whether the blob desc is committed and still holds its
// content. A blob whose file changed since it was verified (its stat no
// longer matches: a workload wrote through a hard link) is hashed again;
// if it no longer matches its digest it is removed and Exists reports
// false, so the caller fetches it again. An unchanged blob costs a stat.
func (s *Store) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	if err := validateDigest(desc.Digest); err != nil {
		return false, err
	}
	path := s.BlobPath(desc.Digest)
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%s: stat blob: %w", desc.Digest, err)
	case s.unchanged(desc.Digest, fi):
		return true, nil
	}
	return s.reverify(ctx, desc.Digest, path)
}

// Delete removes the committed blob desc. Readers that already opened it
// keep reading it, and hard links made from BlobPath keep their data.
func (s *Store) Delete(ctx context.Context, desc ocispec.Descriptor) error {
	if err := validateDigest(desc.Digest); err != nil {
		return err
	}
	err := os.Remove(s.BlobPath(desc.Digest))
	os.Remove(s.stampPath(desc.Digest))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", desc.Digest, errdef.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("%s: delete blob: %w", desc.Digest, err)
	}
	return nil
}

// BlobInfo describes a committed blob for garbage collection.
type BlobInfo struct {
	Digest digest.Digest
	Size   int64
	// AccessedAt is when the blob was last committed or fetched, to within
	// an hour (see Fetch).
	AccessedAt time.Time
}

// Walk calls fn for every committed blob, stopping at the first error fn
// returns, which Walk then returns. fn may Delete the blob it is given.
func (s *Store) Walk(ctx context.Context, fn func(BlobInfo) error) error {
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		return fmt.Errorf("walk blobs in %s: %w", s.root, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if validateDigest(d) != nil || !e.Type().IsRegular() {
			continue // not ours; leave it alone rather than guess
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return fmt.Errorf("%s: stat blob: %w", d, err)
		}
		if err := fn(BlobInfo{Digest: d, Size: fi.Size(), AccessedAt: accessTime(fi)}); err != nil {
			return err
		}
	}
	return nil
}

// pushBuffer is the fixed copy buffer of Push: memory stays bounded whatever
// the blob size.
const pushBuffer = 256 << 10

// Push writes the blob desc from r and commits it. If an earlier attempt
// left a partial ingest of N bytes, Push resumes: it skips the first N bytes
// of r by seeking when r is an io.Seeker, else by reading through an
// io.SectionReader when r is an io.ReaderAt, else by reading and discarding
// them. The first two assume r's byte 0 is the blob's byte 0.
//
// Push returns errdef.ErrAlreadyExists if the blob is committed, also when another
// Push of the same digest committed it while this one waited. If r fails or
// ends early, the partial is kept for the next Push to resume.
func (s *Store) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	w, err := s.Writer(ctx, desc)
	if err != nil {
		return err
	}
	defer w.Close()

	off := w.Offset()
	if off > 0 {
		if r, err = skip(r, off, desc.Size); err != nil {
			return fmt.Errorf("%s: resume at offset %d: %w", desc.Digest, off, err)
		}
	}
	buf := make([]byte, min(pushBuffer, desc.Size-off+1))
	for remaining := desc.Size - off; remaining > 0; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: push interrupted at offset %d, the partial is kept: %w", desc.Digest, w.Offset(), err)
		}
		n, rerr := r.Read(buf[:min(int64(len(buf)), remaining)])
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			remaining -= int64(n)
		}
		if rerr == io.EOF {
			break // Commit reports the shortfall
		}
		if rerr != nil {
			return fmt.Errorf("%s: read content at offset %d, the partial is kept and the next push resumes there: %w",
				desc.Digest, w.Offset(), rerr)
		}
	}
	if w.Offset() == desc.Size {
		// Reading one byte more tells a source that is exactly desc.Size
		// long from one that is longer, i.e. not this blob.
		if n, _ := io.ReadFull(r, buf[:1]); n > 0 {
			w.drop()
			return fmt.Errorf("%s: %w: the source has more than the descriptor's %d bytes; the partial was discarded and the next pull starts from 0",
				desc.Digest, content.ErrTrailingData, desc.Size)
		}
	}
	return w.Commit(ctx)
}

// skip returns r advanced by off bytes of a blob of size bytes.
func skip(r io.Reader, off, size int64) (io.Reader, error) {
	if sk, ok := r.(io.Seeker); ok {
		n, err := sk.Seek(off, io.SeekStart)
		if err != nil {
			return nil, fmt.Errorf("seek: %w", err)
		}
		if n != off {
			return nil, fmt.Errorf("seek landed at %d, want %d", n, off)
		}
		return r, nil
	}
	if ra, ok := r.(io.ReaderAt); ok {
		// One byte past size so that a too-long source is still noticed.
		return io.NewSectionReader(ra, off, size-off+1), nil
	}
	n, err := io.CopyN(io.Discard, r, off)
	if err != nil {
		return nil, fmt.Errorf("discard %d bytes already stored, got %d: %w", off, n, err)
	}
	return r, nil
}

var _ content.Storage = (*Store)(nil)
