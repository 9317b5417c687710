package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Annotations read from layer descriptors.
const (
	// AnnotationFilepath is ModelPack's relative path of a layer's file; it is
	// used when a layer has no org.opencontainers.image.title.
	AnnotationFilepath = "org.cncf.model.filepath"
	// AnnotationUnpack marks a tar layer that oras pull unpacks into the
	// directory named by its title.
	AnnotationUnpack = "io.deis.oras.content.unpack"
	// AnnotationUnpackedSize is the total size in bytes of the regular files
	// in a tar layer; extraction stops with ErrTooLarge past it.
	AnnotationUnpackedSize = "dev.barge.unpacked-size"
)

// Errors returned, wrapped with the layer and entry they concern.
var (
	// ErrUnsafeEntry: an entry or title escapes the artifact directory,
	// writes through a symlink, links outside, or is a device, fifo or
	// unsupported type.
	ErrUnsafeEntry = errors.New("unsafe entry")
	// ErrConflict: two entries (in one layer or across layers) claim one path.
	ErrConflict = errors.New("path already written")
	// ErrTooLarge: a tar layer expands past its limit.
	ErrTooLarge = errors.New("unpacked size exceeds limit")
	// ErrSizeMismatch: a blob on disk has another size than its descriptor.
	ErrSizeMismatch = errors.New("blob size differs from descriptor")
	// ErrNotOwned: ReplaceDir would delete a directory it did not create.
	ErrNotOwned = errors.New("directory not created by barge pull")
	// ErrInUse: Remove was asked to delete the version current points at.
	ErrInUse = errors.New("version is current")
)

// BlobSource is the part of the blob store that unpack needs: the path of a
// committed, verified blob. The path need not exist; a missing blob is an
// error at unpack time.
type BlobSource interface {
	BlobPath(d digest.Digest) string
}

// Options tunes unpacking. The zero value works.
type Options struct {
	// MaxExpansion bounds a compressed tar layer without the
	// dev.barge.unpacked-size annotation to MaxExpansion times its
	// compressed size. If <= 0, 100 is used.
	MaxExpansion int64
	// Overwrite lets ReplaceDir replace a non-empty directory that a
	// previous pull did not create, deleting what it holds.
	Overwrite bool

	// link creates hard links; nil means os.Link. Tests inject failures.
	link func(oldname, newname string) error
	// stats, when set, receives byte counts; tests use it to prove that
	// extraction stopped early.
	stats *stats
	// noSync skips fsync, which makes fuzzing a hundred times faster.
	noSync bool
}

type stats struct {
	written int64 // regular-file bytes written by tar extraction
	read    int64 // decompressed tar-stream bytes read
}

func (o Options) maxExpansion() int64 {
	if o.MaxExpansion <= 0 {
		return 100
	}
	return o.MaxExpansion
}

// Build materializes layers into dir, which it creates and which must not
// exist; its parent must. On error it removes dir and everything in it.
// Build is not atomic: use Activate or ReplaceDir to publish a tree that
// others read.
func Build(ctx context.Context, src BlobSource, layers []ocispec.Descriptor, dir string, opts Options) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("build: %w", err) // names dir already
	}
	if err := build(ctx, src, layers, dir, opts); err != nil {
		_ = os.RemoveAll(dir)
		return fmt.Errorf("build %s: %w", dir, err)
	}
	return nil
}

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
	kindHardlink
)

type node struct {
	kind  kind
	layer int
}

// builder fills one fresh directory that nobody else writes. Because of
// that, nodes is a complete picture of the tree, and every safety decision
// is taken on it rather than on what the filesystem says later.
type builder struct {
	ctx    context.Context
	src    BlobSource
	layers []ocispec.Descriptor
	dir    string
	root   *os.Root // writes of tar entries go through it: a second fence
	opts   Options
	nodes  map[string]node // slash-separated clean relative path
	buf    []byte
}

func build(ctx context.Context, src BlobSource, layers []ocispec.Descriptor, dir string, opts Options) error {
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	b := &builder{
		ctx:    ctx,
		src:    src,
		layers: layers,
		dir:    dir,
		root:   root,
		opts:   opts,
		nodes:  make(map[string]node),
		buf:    make([]byte, 32<<10),
	}
	for i, desc := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		if isTar(desc) {
			err = b.tarLayer(i)
		} else {
			err = b.rawLayer(i)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", b.label(i), err)
		}
	}
	if opts.noSync {
		return nil
	}
	return b.syncDirs()
}

// label names a layer in errors the way a user finds it in the manifest.
func (b *builder) label(i int) string {
	desc := b.layers[i]
	if t := title(desc); t != "" {
		return fmt.Sprintf("layer %q (%s)", t, desc.Digest)
	}
	return fmt.Sprintf("layer %d (%s)", i, desc.Digest)
}

func title(desc ocispec.Descriptor) string {
	if t := desc.Annotations[ocispec.AnnotationTitle]; t != "" {
		return t
	}
	return desc.Annotations[AnnotationFilepath]
}

// isTar reports whether a layer is extracted rather than written as a file:
// the oras unpack annotation says so, or a media type names a tar (ModelPack's
// ….v1.tar, ….tar+gzip). Generic image layer types are the exception: plain
// `oras push` gives every file application/vnd.oci.image.layer.v1.tar, and
// `oras pull` writes such a titled layer as a file, so Barge does too.
func isTar(desc ocispec.Descriptor) bool {
	if desc.Annotations[AnnotationUnpack] == "true" {
		return true
	}
	mt := desc.MediaType
	if strings.HasPrefix(mt, "application/vnd.oci.image.layer.") || strings.HasPrefix(mt, "application/vnd.docker.") {
		return false
	}
	for _, suffix := range []string{"+gzip", ".gzip", ".gz", "+gz"} {
		if s, ok := strings.CutSuffix(mt, suffix); ok {
			mt = s
			break
		}
	}
	return strings.HasSuffix(mt, ".tar") || strings.HasSuffix(mt, "+tar")
}

// cleanPath turns an entry name or title into a clean slash-separated path
// relative to the artifact directory, "." for the directory itself. It
// refuses absolute paths and any ".." component, even one that would stay
// inside, so that a name always means what it says.
func cleanPath(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty path", ErrUnsafeEntry)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute path", ErrUnsafeEntry)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: path has a \"..\" component", ErrUnsafeEntry)
		}
	}
	return path.Clean(name), nil
}

// within reports whether p is base or beneath it.
func within(p, base string) bool {
	return base == "." || p == base || strings.HasPrefix(p, base+"/")
}

// prepare checks that p can be created: every parent is a directory of this
// build and not a symlink, and p itself is free (a directory may be claimed
// twice). It creates missing parents.
func (b *builder) prepare(p string, k kind, layer int) error {
	if p == "." {
		if k == kindDir {
			return nil
		}
		return fmt.Errorf("%w: names the artifact directory itself", ErrUnsafeEntry)
	}
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		q := strings.Join(parts[:i], "/")
		n, ok := b.nodes[q]
		switch {
		case !ok:
			if err := b.mkdir(q, layer); err != nil {
				return err
			}
		case n.kind == kindSymlink:
			return fmt.Errorf("%w: would write through symlink %q", ErrUnsafeEntry, q)
		case n.kind != kindDir:
			return fmt.Errorf("%w: parent %q is not a directory", ErrConflict, q)
		}
	}
	if n, ok := b.nodes[p]; ok {
		if k == kindDir && n.kind == kindDir {
			return nil
		}
		if n.layer == layer {
			return fmt.Errorf("%w: duplicate entry in this layer", ErrConflict)
		}
		return fmt.Errorf("%w: already written by %s", ErrConflict, b.label(n.layer))
	}
	return nil
}

func (b *builder) mkdir(p string, layer int) error {
	if _, ok := b.nodes[p]; ok {
		return nil
	}
	if err := b.root.Mkdir(p, 0o755); err != nil {
		return err
	}
	// Mkdir is subject to the umask; workloads of any uid must read the tree.
	if err := b.root.Chmod(p, 0o755); err != nil {
		return err
	}
	b.nodes[p] = node{kind: kindDir, layer: layer}
	return nil
}

// rawLayer places a blob at its title, sharing the store's inode when it can.
func (b *builder) rawLayer(i int) error {
	desc := b.layers[i]
	name := title(desc)
	if name == "" {
		return fmt.Errorf("no %s or %s annotation to name the file", ocispec.AnnotationTitle, AnnotationFilepath)
	}
	p, err := cleanPath(name)
	if err == nil {
		err = b.prepare(p, kindFile, i)
	}
	if err != nil {
		return fmt.Errorf("title %q: %w", name, err)
	}
	blob, err := b.blobPath(desc)
	if err != nil {
		return err
	}
	dst := filepath.Join(b.dir, filepath.FromSlash(p))
	link := b.opts.link
	if link == nil {
		link = os.Link
	}
	switch err := link(blob, dst); {
	case err == nil:
		b.nodes[p] = node{kind: kindFile, layer: i}
		fi, err := os.Lstat(dst)
		if err != nil {
			return err
		}
		if err := checkBlob(desc, fi); err != nil {
			return err
		}
		// This also makes the store's inode read-only, which it should be.
		return os.Chmod(dst, 0o444)
	case canCopyInstead(err):
		b.nodes[p] = node{kind: kindFile, layer: i}
		return b.copyBlob(desc, blob, dst)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("blob not in store: %w", err)
	default:
		return err
	}
}

func (b *builder) blobPath(desc ocispec.Descriptor) (string, error) {
	if p := b.src.BlobPath(desc.Digest); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("blob not in store: the store has no path for %s", desc.Digest)
}

// canCopyInstead reports link errors that mean "no hard link here" rather
// than "something is wrong": another filesystem, a filesystem without hard
// links, protected_hardlinks, or too many links to one inode.
func canCopyInstead(err error) bool {
	for _, e := range []error{syscall.EXDEV, syscall.EPERM, syscall.EMLINK, syscall.ENOTSUP, syscall.EOPNOTSUPP} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func checkBlob(desc ocispec.Descriptor, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("blob is not a regular file (%s)", fi.Mode().Type())
	}
	if fi.Size() != desc.Size {
		return fmt.Errorf("%w: descriptor says %d bytes, store has %d", ErrSizeMismatch, desc.Size, fi.Size())
	}
	return nil
}

func (b *builder) copyBlob(desc ocispec.Descriptor, blob, dst string) (err error) {
	in, err := os.Open(blob)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("blob not in store: %w", err)
		}
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if err := checkBlob(desc, fi); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	n, err := io.CopyBuffer(out, ctxReader{b.ctx, io.LimitReader(in, desc.Size)}, b.buf)
	if err != nil {
		return fmt.Errorf("copy blob: %w", err)
	}
	if n != desc.Size {
		return fmt.Errorf("%w: blob shrank to %d bytes while copying", ErrSizeMismatch, n)
	}
	if err := out.Chmod(0o444); err != nil || b.opts.noSync {
		return err
	}
	return out.Sync()
}

// syncDirs flushes every directory entry of the tree, so that a tree renamed
// into place after a power cut still has all its names.
func (b *builder) syncDirs() error {
	if err := syncDir(b.dir); err != nil {
		return err
	}
	for p, n := range b.nodes {
		if n.kind != kindDir {
			continue
		}
		f, err := b.root.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", p, err)
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// ctxReader stops a long copy when ctx is done.
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
