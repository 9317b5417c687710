package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
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
	// ErrLimit: an entry's path is deeper or longer than allowed, or a
	// layer creates more paths than allowed (see Options).
	ErrLimit = errors.New("limit exceeded")
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
	// MaxExpansion bounds the file bytes of a compressed tar layer to
	// MaxExpansion times its compressed size (a plain tar layer to its own
	// size). The publisher's dev.barge.unpacked-size annotation may lower
	// that cap, never raise it. If <= 0, 100 is used.
	MaxExpansion int64
	// MaxPathDepth bounds the components of a path in a layer ("a/b/c"
	// has 3): tar entry names, link targets and raw titles. If <= 0, 128
	// is used.
	MaxPathDepth int
	// MaxPathLength bounds those paths in bytes. If <= 0, 4096 is used,
	// Linux's PATH_MAX, past which most tools cannot open the file anyway.
	MaxPathLength int
	// MaxEntries bounds the paths one tar layer creates: its entries and
	// the directories they imply. If <= 0, 1,000,000 is used.
	MaxEntries int
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
	opens   int64 // directories opened to reach the place of an entry
	entries int64 // tar entries extracted
	// afterEntry and afterRead, when set, run after each extracted tar
	// entry and after each read from a decompressed stream.
	afterEntry func()
	afterRead  func()
}

func (o Options) maxExpansion() int64 {
	if o.MaxExpansion <= 0 {
		return 100
	}
	return o.MaxExpansion
}

func (o Options) maxPathDepth() int {
	if o.MaxPathDepth <= 0 {
		return 128
	}
	return o.MaxPathDepth
}

func (o Options) maxPathLength() int {
	if o.MaxPathLength <= 0 {
		return 4096
	}
	return o.MaxPathLength
}

func (o Options) maxEntries() int {
	if o.MaxEntries <= 0 {
		return 1_000_000
	}
	return o.MaxEntries
}

// checkPath applies MaxPathDepth and MaxPathLength to a name from the
// manifest or a tar header, before any work is spent on it.
func (o Options) checkPath(name string) error {
	if n := strings.Count(name, "/") + 1; n > o.maxPathDepth() {
		return fmt.Errorf("%w: path is %d levels deep, more than the %d allowed (MaxPathDepth); repack the layer with a flatter tree", ErrLimit, n, o.maxPathDepth())
	}
	if n := len(name); n > o.maxPathLength() {
		return fmt.Errorf("%w: path is %d bytes long, more than the %d allowed (MaxPathLength); repack the layer with shorter names", ErrLimit, n, o.maxPathLength())
	}
	return nil
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
	dirs   dirStack // open directories below root, to write in without a walk
	opts   Options
	nodes  map[string]node // slash-separated clean relative path
	buf    []byte
	// created counts the paths the current layer created, for MaxEntries.
	created int
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
		dirs:   dirStack{root: root, stats: opts.stats},
		opts:   opts,
		nodes:  make(map[string]node),
		buf:    make([]byte, 32<<10),
	}
	defer b.dirs.close()
	for i, desc := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.created = 0
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
//
// Every node's parents are directories of the build (nothing is ever
// created beneath a file or a symlink, and nothing is replaced), so the
// walk up stops at the first parent that exists: an entry beside earlier
// ones costs one lookup, not one per level.
func (b *builder) prepare(p string, k kind, layer int) error {
	if p == "." {
		if k == kindDir {
			return nil
		}
		return fmt.Errorf("%w: names the artifact directory itself", ErrUnsafeEntry)
	}
	start := 0 // p[start:] is below the deepest parent that exists
	for end := len(p); ; {
		end = strings.LastIndexByte(p[:end], '/')
		if end < 0 {
			break
		}
		q := p[:end]
		n, ok := b.nodes[q]
		if !ok {
			continue
		}
		switch n.kind {
		case kindDir:
		case kindSymlink:
			return fmt.Errorf("%w: would write through symlink %q", ErrUnsafeEntry, q)
		default:
			return fmt.Errorf("%w: parent %q is not a directory", ErrConflict, q)
		}
		start = end + 1
		break
	}
	// Create the missing parents, top down.
	for {
		i := strings.IndexByte(p[start:], '/')
		if i < 0 {
			break
		}
		if err := b.mkdir(p[:start+i], layer); err != nil {
			return err
		}
		start += i + 1
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
	if k == kindDir {
		return nil // mkdir counts it
	}
	return b.count()
}

// count charges one created path to the layer, for MaxEntries.
func (b *builder) count() error {
	b.created++
	if b.created > b.opts.maxEntries() {
		return fmt.Errorf("%w: the layer creates more than %d paths (MaxEntries); split it into several layers", ErrLimit, b.opts.maxEntries())
	}
	return nil
}

func (b *builder) mkdir(p string, layer int) error {
	if _, ok := b.nodes[p]; ok {
		return nil
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	if err := b.count(); err != nil {
		return err
	}
	parent, name := splitPath(p)
	d, err := b.dirs.at(parent)
	if err != nil {
		return err
	}
	if err := d.Mkdir(name, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", p, err)
	}
	// Mkdir is subject to the umask; workloads of any uid must read the tree.
	if err := d.Chmod(name, 0o755); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	b.nodes[p] = node{kind: kindDir, layer: layer}
	return nil
}

// splitPath splits a clean relative path into its parent ("." at the top)
// and last component.
func splitPath(p string) (parent, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ".", p
	}
	return p[:i], p[i+1:]
}

// dirStack holds open handles of the directories on one path down from
// the artifact directory. Opening a directory through os.Root walks every
// component of its path, so reaching each new level of a deep tree from
// the top made building it quadratic (one tar entry 4,000 levels deep
// took two minutes); reaching it from the handle above costs one open.
// Consecutive entries mostly share their directory, so most cost none.
type dirStack struct {
	root  *os.Root
	stats *stats
	paths []string // paths[i] is the clean relative path of roots[i]
	roots []*os.Root
}

// at returns a handle of directory p, a clean relative path.
func (s *dirStack) at(p string) (*os.Root, error) {
	if p == "." {
		return s.root, nil
	}
	for n := len(s.paths); n > 0; n-- {
		q := s.paths[n-1]
		if p == q || strings.HasPrefix(p, q+"/") {
			break
		}
		s.roots[n-1].Close()
		s.paths, s.roots = s.paths[:n-1], s.roots[:n-1]
	}
	cur, done := s.root, 0
	if n := len(s.paths); n > 0 {
		cur, done = s.roots[n-1], len(s.paths[n-1])+1
	}
	for done < len(p)+1 {
		end := strings.IndexByte(p[done:], '/')
		if end < 0 {
			end = len(p)
		} else {
			end += done
		}
		next, err := cur.OpenRoot(p[done:end])
		if err != nil {
			return nil, err
		}
		if s.stats != nil {
			s.stats.opens++
		}
		s.paths, s.roots = append(s.paths, p[:end]), append(s.roots, next)
		cur, done = next, end+1
	}
	return cur, nil
}

func (s *dirStack) close() {
	for _, r := range s.roots {
		r.Close()
	}
	s.paths, s.roots = nil, nil
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
		err = b.opts.checkPath(p)
	}
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
// into place after a power cut still has all its names. Directories are
// visited depth first, each opened once from its parent's handle.
func (b *builder) syncDirs() error {
	if err := syncDir(b.dir); err != nil {
		return err
	}
	var dirs []string
	for p, n := range b.nodes {
		if n.kind == kindDir {
			dirs = append(dirs, p)
		}
	}
	slices.SortFunc(dirs, comparePaths)
	for _, p := range dirs {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		d, err := b.dirs.at(p)
		if err != nil {
			return err
		}
		f, err := d.Open(".")
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

// comparePaths orders paths as if "/" were the lowest byte, so that a/b
// comes right after a and before a-b: sorted, a tree is depth first.
func comparePaths(x, y string) int {
	for i := 0; i < len(x) && i < len(y); i++ {
		cx, cy := x[i], y[i]
		if cx == cy {
			continue
		}
		if cx == '/' {
			return -1
		}
		if cy == '/' {
			return 1
		}
		return int(cx) - int(cy)
	}
	return len(x) - len(y)
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
