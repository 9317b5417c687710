package unpack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PullMarker is the file ReplaceDir leaves in a directory it created, so
// that the next pull knows the directory is its to replace.
const PullMarker = ".barge-pull"

// ReplaceDir materializes layers at dest for `barge pull REF DIR`.
//
// It builds the tree in a sibling dest.barge-staging-<random> and swaps it
// in: with one rename if dest does not exist, else with an atomic exchange
// (renameat2 RENAME_EXCHANGE) and removal of the old tree. Where the
// filesystem cannot exchange, it renames the old tree aside and the new one
// in; between those two renames dest does not exist, a window of two system
// calls that a concurrent reader may fall into. A failure before the swap
// leaves dest untouched and removes the staging directory.
//
// Unlike `oras pull -o DIR`, which adds files to DIR and leaves the others,
// ReplaceDir replaces DIR as a whole, so files that a newer version dropped
// do not linger. Because that deletes, it only replaces a directory that
// is empty or that a previous pull created (it holds PullMarker); any other
// existing directory is refused with ErrNotOwned unless opts.Overwrite is
// set, so `barge pull REF .` in a source tree cannot wipe it. A dest that is
// a file or a symlink is always refused.
func ReplaceDir(ctx context.Context, src BlobSource, layers []ocispec.Descriptor, dest string, opts Options) error {
	dest, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("pull into %s: %w", dest, err)
	}
	if err := replaceDir(ctx, src, layers, dest, opts); err != nil {
		return fmt.Errorf("pull into %s: %w", dest, err)
	}
	return nil
}

func replaceDir(ctx context.Context, src BlobSource, layers []ocispec.Descriptor, dest string, opts Options) error {
	if dest == filepath.Dir(dest) {
		return errors.New("refusing to replace a filesystem root")
	}
	if _, err := checkDest(dest, opts.Overwrite); err != nil {
		return err
	}
	// Like oras pull -o, create the parents the user named.
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	staging, err := os.MkdirTemp(filepath.Dir(dest), filepath.Base(dest)+".barge-staging-")
	if err != nil {
		return err
	}
	if err := build(ctx, src, layers, staging, opts); err != nil {
		_ = os.RemoveAll(staging)
		return err
	}
	if err := writeMarker(staging); err != nil {
		_ = os.RemoveAll(staging)
		return err
	}
	// Check again: dest may have changed while the tree was being built.
	exists, err := checkDest(dest, opts.Overwrite)
	if err == nil {
		if exists {
			err = swap(staging, dest)
		} else {
			err = os.Rename(staging, dest)
		}
	}
	if err != nil {
		_ = os.RemoveAll(staging)
		return err
	}
	return syncDir(filepath.Dir(dest))
}

// checkDest reports whether dest exists, and refuses a dest that
// ReplaceDir must not replace.
func checkDest(dest string, overwrite bool) (bool, error) {
	fi, err := os.Lstat(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return true, errors.New("exists and is a symlink, not a directory")
	}
	if !fi.IsDir() {
		return true, errors.New("exists and is not a directory")
	}
	if overwrite {
		return true, nil
	}
	if fi, err := os.Lstat(filepath.Join(dest, PullMarker)); err == nil && fi.Mode().IsRegular() {
		return true, nil
	}
	d, err := os.Open(dest)
	if err != nil {
		return true, err
	}
	defer d.Close()
	if _, err := d.Readdirnames(1); err == io.EOF {
		return true, nil
	} else if err != nil {
		return true, err
	}
	return true, fmt.Errorf("%w: it is not empty and has no %s; set Overwrite to replace it and delete what it holds", ErrNotOwned, PullMarker)
}

func writeMarker(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, PullMarker), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: the artifact has a file named %s, which barge pull reserves", ErrConflict, PullMarker)
	}
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, "Created by barge pull. The next barge pull into this directory replaces it as a whole.\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// swapAside is the portable swap: old tree aside, new tree in, old removed.
func swapAside(staging, dest string) error {
	old := dest + ".barge-old-" + rand.Text()
	if err := os.Rename(dest, old); err != nil {
		return err
	}
	if err := os.Rename(staging, dest); err != nil {
		if rerr := os.Rename(old, dest); rerr != nil {
			return fmt.Errorf("%w; restoring the previous tree from %s also failed: %v", err, old, rerr)
		}
		return err
	}
	return os.RemoveAll(old)
}
