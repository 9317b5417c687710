package unpack

import (
	"context"
	"crypto/rand"
	_ "crypto/sha256" // digest.Validate needs the algorithms registered
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Activate makes the artifact with manifest digest dgst the one that
// root/current points at, and returns the path of its version directory,
// root/versions/<algorithm>-<hex>.
//
// The version is built in root/.staging-<random> and renamed into place, so
// a version directory that exists is complete; one that already exists is
// reused without reading any blob. Then a new symlink replaces root/current
// with rename(2): a reader that opens root/current/<file> gets that file
// from the old version or from the new one, never a partial one. A reader
// that needs several files from one version resolves current once (opens it
// as a directory, or reads the link) and reads the files beneath that.
//
// The previous version stays until the caller removes it with Remove.
// Activate and Remove on one root must not run concurrently: the caller
// (the puller's one orchestrator per root) serializes them. That is what
// lets Activate delete what a crashed Activate or Remove left in root
// (.staging-*, .trash-*, .current-*): nothing else can be writing there.
func Activate(ctx context.Context, src BlobSource, layers []ocispec.Descriptor, root string, dgst digest.Digest, opts Options) (string, error) {
	name, err := versionName(dgst)
	if err != nil {
		return "", fmt.Errorf("activate %s: %w", dgst, err)
	}
	versions := filepath.Join(root, "versions")
	final := filepath.Join(versions, name)
	if err := os.MkdirAll(versions, 0o755); err != nil {
		return "", fmt.Errorf("activate %s: %w", dgst, err)
	}
	if err := removeLeftovers(root); err != nil {
		return "", fmt.Errorf("activate %s: %w", dgst, err)
	}
	if err := ensureVersion(ctx, src, layers, root, final, opts); err != nil {
		return "", fmt.Errorf("activate %s: %w", dgst, err)
	}
	if err := pointCurrent(root, filepath.Join("versions", name)); err != nil {
		return "", fmt.Errorf("activate %s: %w", dgst, err)
	}
	return final, nil
}

func ensureVersion(ctx context.Context, src BlobSource, layers []ocispec.Descriptor, root, final string, opts Options) error {
	switch fi, err := os.Lstat(final); {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("%s exists and is not a directory", final)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	staging, err := os.MkdirTemp(root, ".staging-")
	if err != nil {
		return err
	}
	if err := build(ctx, src, layers, staging, opts); err != nil {
		_ = os.RemoveAll(staging)
		return err
	}
	if err := os.Rename(staging, final); err != nil {
		_ = os.RemoveAll(staging)
		// Someone else finished the same version first: theirs is as good.
		if fi, serr := os.Lstat(final); serr == nil && fi.IsDir() {
			return nil
		}
		return err
	}
	return syncDir(filepath.Dir(final))
}

func removeLeftovers(root string) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range entries {
		for _, prefix := range []string{".staging-", ".trash-", ".current-"} {
			if strings.HasPrefix(e.Name(), prefix) {
				if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
					return fmt.Errorf("remove leftover of an interrupted run: %w", err)
				}
			}
		}
	}
	return nil
}

// pointCurrent replaces root/current by a symlink to target, atomically.
func pointCurrent(root, target string) error {
	current := filepath.Join(root, "current")
	switch fi, err := os.Lstat(current); {
	case err == nil && fi.Mode()&fs.ModeSymlink == 0:
		return fmt.Errorf("%s is not a symlink; refusing to replace it", current)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if old, err := os.Readlink(current); err == nil && old == target {
		return nil
	}
	var tmp string
	for {
		tmp = filepath.Join(root, ".current-"+rand.Text())
		err := os.Symlink(target, tmp)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	if err := os.Rename(tmp, current); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("switch current: %w", err)
	}
	return syncDir(root)
}

// Versions lists the versions materialized under root, in lexical order of
// their directory names. Entries that are not versions are skipped.
func Versions(root string) ([]digest.Digest, error) {
	entries, err := os.ReadDir(filepath.Join(root, "versions"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, e := range entries {
		if d, ok := parseVersionName(e.Name()); ok && e.IsDir() {
			out = append(out, d)
		}
	}
	return out, nil
}

// Current returns the digest root/current points at, or an error wrapping
// fs.ErrNotExist when nothing was activated yet.
func Current(root string) (digest.Digest, error) {
	target, err := os.Readlink(filepath.Join(root, "current"))
	if err != nil {
		return "", err
	}
	d, ok := parseVersionName(filepath.Base(target))
	if !ok {
		return "", fmt.Errorf("%s/current points at %q, not a version", root, target)
	}
	return d, nil
}

// Remove deletes the version dgst under root. It refuses, with ErrInUse, the
// version current points at, and succeeds if the version is already gone.
// The directory is first renamed out of versions/, so a crash halfway never
// leaves a partial tree that Activate would take for a complete one.
func Remove(root string, dgst digest.Digest) error {
	name, err := versionName(dgst)
	if err != nil {
		return fmt.Errorf("remove %s: %w", dgst, err)
	}
	switch cur, err := Current(root); {
	case err == nil && cur == dgst:
		return fmt.Errorf("remove %s: %w", dgst, ErrInUse)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("remove %s: cannot tell which version is current: %w", dgst, err)
	}
	trash := filepath.Join(root, ".trash-"+rand.Text())
	if err := os.Rename(filepath.Join(root, "versions", name), trash); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", dgst, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove %s: %w", dgst, err)
	}
	return nil
}

// versionName maps a digest to a directory name. Only registered algorithms
// are accepted; none has a "-", so the name maps back unambiguously.
func versionName(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", err
	}
	return string(d.Algorithm()) + "-" + d.Encoded(), nil
}

func parseVersionName(name string) (digest.Digest, bool) {
	alg, enc, ok := strings.Cut(name, "-")
	if !ok {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
	return d, d.Validate() == nil
}
