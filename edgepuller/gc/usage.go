package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bargeml/barge/edgepuller/store"
)

// usage is what the store and the artifact directories hold on disk: every
// regular file once by identity (raw files of a version are hard links to
// store blobs, and counting both would double them), plus partial downloads.
type usage struct {
	files   map[fileID]int64
	ingests int64
}

func (u usage) total() int64 {
	n := u.ingests
	for _, size := range u.files {
		n += size
	}
	return n
}

// freed is the size of the files in u that are gone in later. Files that
// appeared since (a concurrent download) do not offset it.
func (u usage) freed(later usage) int64 {
	var n int64
	for id, size := range u.files {
		if _, ok := later.files[id]; !ok {
			n += size
		}
	}
	return n
}

func (c *collector) measure(ctx context.Context) (usage, error) {
	u := usage{files: map[fileID]int64{}}
	err := c.st.Walk(ctx, func(b store.BlobInfo) error {
		path := c.st.BlobPath(b.Digest)
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted since the walk listed it
		}
		if err != nil {
			return err
		}
		u.files[idOf(path, fi)] = fi.Size()
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("gc: measure disk usage: %w", err)
	}
	ingests, err := c.st.ListIngests(ctx)
	if err != nil {
		return u, fmt.Errorf("gc: measure disk usage: %w", err)
	}
	for _, in := range ingests {
		// The checkpoint offset is at most CheckpointBytes short of the
		// data written; the store does not say more.
		u.ingests += in.Offset
	}
	for _, root := range c.roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			u.files[idOf(path, fi)] = fi.Size()
			return nil
		})
		if err != nil {
			return u, fmt.Errorf("gc: measure disk usage of %s: %w", root, err)
		}
	}
	return u, nil
}
