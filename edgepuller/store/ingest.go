package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/errdef"
)

// Status describes a partial download.
type Status struct {
	Digest digest.Digest
	// Offset is where a resume would continue: the last checkpoint, or 0 if
	// the ingest has none that can be trusted.
	Offset int64
	// Total is the blob's size, 0 if the ingest has no readable state yet.
	Total int64
	// UpdatedAt is when data was last written; an old one marks an
	// abandoned download that AbortIngest can reclaim.
	UpdatedAt time.Time
}

// Status reports the ingest of d without taking its lock, so it also works
// while a download is running. It returns errdef.ErrNotFound if there is none.
func (s *Store) Status(ctx context.Context, d digest.Digest) (Status, error) {
	if err := validateDigest(d); err != nil {
		return Status{}, err
	}
	dir := s.ingestDir(d)
	di, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return Status{}, fmt.Errorf("%s: ingest: %w", d, errdef.ErrNotFound)
	}
	if err != nil {
		return Status{}, fmt.Errorf("%s: stat ingest: %w", d, err)
	}
	st := Status{Digest: d, UpdatedAt: di.ModTime()}
	var dataSize int64 = -1
	if fi, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		dataSize, st.UpdatedAt = fi.Size(), fi.ModTime()
	}
	// The same rules as a resume (Writer.open), so the reported offset is
	// the one the next pull will really start from.
	if is, _, ok := loadCheckpoint(dir, d, -1, max(dataSize, 0)); ok {
		st.Total, st.Offset = is.Total, is.Offset
	} else if is, _, ok := loadCheckpoint(dir, d, -1, math.MaxInt64); ok {
		st.Total = is.Total // data missing or short: nothing to resume
	}
	return st, nil
}

// ListIngests returns the status of every partial download, including
// damaged ones (Offset 0), so that a garbage collector can find them all.
func (s *Store) ListIngests(ctx context.Context) ([]Status, error) {
	entries, err := os.ReadDir(s.ingestRoot())
	if err != nil {
		return nil, fmt.Errorf("list ingests in %s: %w", s.root, err)
	}
	var out []Status
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if !e.IsDir() || validateDigest(d) != nil {
			continue
		}
		st, err := s.Status(ctx, d)
		if errors.Is(err, errdef.ErrNotFound) {
			continue // committed or aborted since ReadDir
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// AbortIngest discards the partial download of d. It waits, until ctx ends,
// for a writer that is still using it. It returns errdef.ErrNotFound if there is none.
func (s *Store) AbortIngest(ctx context.Context, d digest.Digest) error {
	if err := validateDigest(d); err != nil {
		return err
	}
	if _, err := os.Stat(s.ingestDir(d)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: ingest: %w", d, errdef.ErrNotFound)
	}
	lock, err := s.lockIngest(ctx, d)
	if err != nil {
		return fmt.Errorf("abort ingest: %w", err)
	}
	defer lock.unlock()
	if err := os.RemoveAll(s.ingestDir(d)); err != nil {
		return fmt.Errorf("%s: abort ingest: %w", d, err)
	}
	return nil
}

// IngestPath returns the data file of d's partial download, for a reader
// that follows a blob while it arrives (a node's peer server). The file
// only grows while a Writer appends to it; a Writer that resumes truncates
// it to its last checkpoint and Reset truncates it to 0; a digest mismatch
// or trailing data removes it; Commit renames it to BlobPath(d), so a
// handle opened on it then reads the committed blob. Its bytes are not
// verified until Commit. It returns "" if d is not a valid sha256 digest.
func (s *Store) IngestPath(d digest.Digest) string {
	if validateDigest(d) != nil {
		return ""
	}
	return filepath.Join(s.ingestDir(d), "data")
}
