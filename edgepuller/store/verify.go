package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
)

// A committed blob is a hard link away from every workload that mounts the
// unpacked artifact. A workload with a writable mount (or one that chmods
// the file back and writes) changes the store's copy behind its digest, and
// the next pull that reuses the blob would hand the damage on. So Commit
// records what the file looked like, and Exists hashes the blob again only
// when its stat no longer matches: a reuse costs a stat and a small read,
// not a full hash, unless the file was touched.

// fileStamp is what Commit records of a blob's file. Content cannot change
// without changing the inode's ctime; ctime also changes when a link is
// made or removed (as unpacking and garbage collection do), so a ctime
// change that comes with a link-count change is taken as that and recorded.
type fileStamp struct {
	Ino, Nlink       uint64
	Size             int64
	MtimeNs, CtimeNs int64
	Mode             fs.FileMode
}

const stampVersion = "v1"

func (f fileStamp) String() string {
	return fmt.Sprintf("%s %d %d %d %d %d %o\n", stampVersion, f.Ino, f.Nlink, f.Size, f.MtimeNs, f.CtimeNs, uint32(f.Mode))
}

// parseStamp reads what String wrote. Anything else is an error, and the
// blob is then hashed again, as if it had no stamp.
func parseStamp(b []byte) (fileStamp, error) {
	var f fileStamp
	var v string
	var mode uint32
	if len(b) > 200 || !strings.HasSuffix(string(b), "\n") {
		return f, errors.New("not a blob stamp")
	}
	n, err := fmt.Sscanf(string(b), "%s %d %d %d %d %d %o\n", &v, &f.Ino, &f.Nlink, &f.Size, &f.MtimeNs, &f.CtimeNs, &mode)
	if err != nil || n != 7 || v != stampVersion || f.Size < 0 || fs.FileMode(mode)&^fs.ModePerm != 0 {
		return fileStamp{}, fmt.Errorf("not a blob stamp: %v", err)
	}
	f.Mode = fs.FileMode(mode)
	return f, nil
}

// sameContent reports whether a file stamped was cannot have had its
// content changed to become now.
func (was fileStamp) sameContent(now fileStamp) bool {
	return was.Ino == now.Ino && was.Size == now.Size && was.MtimeNs == now.MtimeNs && was.Mode == now.Mode &&
		(was.CtimeNs == now.CtimeNs || was.Nlink != now.Nlink)
}

func (s *Store) stampDir() string                 { return filepath.Join(s.root, "verified") }
func (s *Store) stampPath(d digest.Digest) string { return filepath.Join(s.stampDir(), d.Encoded()) }

// stamp records fi as the verified state of blob d. Best effort: without a
// stamp the blob is only hashed once more, so no fsync either.
func (s *Store) stamp(d digest.Digest, fi fs.FileInfo) {
	_ = writeFileAtomic(s.stampPath(d), []byte(stampOf(fi).String()), false)
}

func (s *Store) readStamp(d digest.Digest) (fileStamp, bool) {
	b, err := os.ReadFile(s.stampPath(d))
	if err != nil {
		return fileStamp{}, false
	}
	f, err := parseStamp(b)
	return f, err == nil
}

// unchanged reports whether blob d, now fi, is as it was when last
// verified; it records a link-count change so that the next check compares
// against it.
func (s *Store) unchanged(d digest.Digest, fi fs.FileInfo) bool {
	was, ok := s.readStamp(d)
	if !ok {
		return false
	}
	now := stampOf(fi)
	if !was.sameContent(now) {
		return false
	}
	if was != now {
		s.stamp(d, fi)
	}
	return true
}

// reverify hashes the blob d at path again. If it no longer matches its
// digest, the blob is removed so that the caller fetches it again, and
// reverify reports false.
func (s *Store) reverify(ctx context.Context, d digest.Digest, path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: open blob to verify it again: %w", d, err)
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("%s: stat blob: %w", d, err)
	}
	v := d.Algorithm().Digester()
	n, err := io.Copy(v.Hash(), ctxReader{ctx, f})
	s.rehashed.Add(n)
	if err != nil {
		return false, fmt.Errorf("%s: verify changed blob again: %w", d, err)
	}
	after, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("%s: stat blob: %w", d, err)
	}
	if v.Digest() == d && stampOf(before).sameContent(stampOf(after)) {
		s.stamp(d, after)
		return true, nil
	}
	// Remove only the file we hashed: a good copy committed meanwhile by
	// another process must stay.
	if named, err := os.Lstat(path); err == nil && os.SameFile(named, before) {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("%s: remove blob that changed on disk since it was committed: %w", d, err)
		}
		os.Remove(s.stampPath(d))
	}
	return false, nil
}

// Rehashed is how many bytes of committed blobs the store has hashed again
// because their files changed since they were verified (see Exists).
func (s *Store) Rehashed() int64 { return s.rehashed.Load() }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
