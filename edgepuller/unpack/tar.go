package unpack

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// tarState is one tar layer being extracted.
type tarState struct {
	index int
	// base confines entries when the layer carries AnnotationUnpack: like
	// oras, entry names start at the artifact directory and must lie inside
	// the directory named by the title ("model/" entries for title "model").
	base   string
	files  map[string]bool // regular files of this layer: hard-link targets
	budget int64           // regular-file bytes still allowed
	last   string          // last entry name, for errors between entries
}

func (b *builder) tarLayer(i int) error {
	desc := b.layers[i]
	l := &tarState{index: i, base: ".", files: make(map[string]bool)}
	if desc.Annotations[AnnotationUnpack] == "true" {
		name := title(desc)
		if name == "" {
			return fmt.Errorf("%s is set but the layer has no title naming the directory", AnnotationUnpack)
		}
		p, err := cleanPath(name)
		if err == nil {
			err = b.opts.checkPath(p)
		}
		if err == nil {
			err = b.prepare(p, kindDir, i)
		}
		if err == nil && p != "." {
			err = b.mkdir(p, i)
		}
		if err != nil {
			return fmt.Errorf("title %q: %w", name, err)
		}
		l.base = p
	}

	blob, err := b.blobPath(desc)
	if err != nil {
		return err
	}
	f, err := os.Open(blob)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("blob not in store: %w", err)
		}
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := checkBlob(desc, fi); err != nil {
		return err
	}

	br := bufio.NewReaderSize(f, 32<<10)
	magic, _ := br.Peek(2)
	gzipped := len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b

	// Limits: a plain tar cannot hold more file bytes than itself (sparse
	// entries aside, which the budget catches); a compressed one gets
	// MaxExpansion times its size. The publisher's annotation comes from
	// the same untrusted manifest, so it may lower that cap, never raise it.
	headroom := desc.Size // what the stream may hold beyond file bytes
	if gzipped {
		headroom = mulCapped(desc.Size, b.opts.maxExpansion())
	}
	l.budget = headroom
	if s, ok := desc.Annotations[AnnotationUnpackedSize]; ok {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("annotation %s=%q is not a size in bytes", AnnotationUnpackedSize, s)
		}
		l.budget = min(n, l.budget)
	}

	var r io.Reader = br
	if gzipped {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("read gzip: %w", err)
		}
		defer zr.Close()
		// The budget only counts file bytes; headers and padding of many
		// tiny entries could still inflate without end, so the stream gets
		// a bound of its own.
		bound := l.budget + headroom
		if bound < 0 { // both near the int64 limit: no bound worth having
			bound = math.MaxInt64 - 1 // Read adds one
		}
		r = &boundedReader{r: zr, max: bound, stats: b.opts.stats}
	}
	tr := tar.NewReader(ctxReader{b.ctx, r})
	for entries := 0; ; entries++ {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if l.last == "" {
				return fmt.Errorf("read tar: %w", err)
			}
			return fmt.Errorf("read tar after entry %q: %w", shorten(l.last), err)
		}
		l.last = hdr.Name
		if entries >= b.opts.maxEntries() {
			return fmt.Errorf("entry %q: %w: the layer has more than %d entries (MaxEntries); split it into several layers", shorten(hdr.Name), ErrLimit, b.opts.maxEntries())
		}
		if err := b.tarEntry(l, hdr, tr); err != nil {
			return fmt.Errorf("entry %q: %w", shorten(hdr.Name), err)
		}
		if st := b.opts.stats; st != nil {
			st.entries++
			if st.afterEntry != nil {
				st.afterEntry()
			}
		}
	}
}

func (b *builder) tarEntry(l *tarState, hdr *tar.Header, tr io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return fmt.Errorf("%w: device files and fifos are not allowed (type %q)", ErrUnsafeEntry, hdr.Typeflag)
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	default:
		return fmt.Errorf("%w: unsupported entry type %q", ErrUnsafeEntry, hdr.Typeflag)
	}
	p, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if err := b.opts.checkPath(p); err != nil {
		return err
	}
	if !within(p, l.base) {
		return fmt.Errorf("%w: outside %q, the directory this layer unpacks into", ErrUnsafeEntry, l.base)
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := b.prepare(p, kindDir, l.index); err != nil {
			return err
		}
		return b.mkdir(p, l.index)

	case tar.TypeSymlink:
		if len(hdr.Linkname) > b.opts.maxPathLength() {
			return fmt.Errorf("%w: symlink target is %d bytes long, more than the %d allowed (MaxPathLength)", ErrLimit, len(hdr.Linkname), b.opts.maxPathLength())
		}
		if err := checkSymlink(p, hdr.Linkname); err != nil {
			return err
		}
		if err := b.prepare(p, kindSymlink, l.index); err != nil {
			return err
		}
		parent, name := splitPath(p)
		d, err := b.dirs.at(parent)
		if err != nil {
			return err
		}
		if err := d.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		b.nodes[p] = node{kind: kindSymlink, layer: l.index}
		return nil

	case tar.TypeLink:
		target, err := cleanPath(hdr.Linkname)
		if err == nil {
			err = b.opts.checkPath(target)
		}
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", shorten(hdr.Linkname), err)
		}
		if !l.files[target] {
			return fmt.Errorf("%w: hard link target %q is not a file extracted earlier from this layer", ErrUnsafeEntry, hdr.Linkname)
		}
		if err := b.prepare(p, kindHardlink, l.index); err != nil {
			return err
		}
		if err := b.root.Link(target, p); err != nil {
			return err
		}
		b.nodes[p] = node{kind: kindHardlink, layer: l.index}
		return nil
	}

	// A regular file.
	if hdr.Size > l.budget {
		return fmt.Errorf("%w: %d bytes, %d left of the layer's limit", ErrTooLarge, hdr.Size, l.budget)
	}
	if err := b.prepare(p, kindFile, l.index); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if hdr.Mode&0o111 != 0 {
		mode = 0o755
	}
	parent, name := splitPath(p)
	d, err := b.dirs.at(parent)
	if err != nil {
		return err
	}
	f, err := d.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	b.nodes[p] = node{kind: kindFile, layer: l.index}
	n, err := io.CopyBuffer(f, io.LimitReader(tr, hdr.Size), b.buf)
	l.budget -= n
	if b.opts.stats != nil {
		b.opts.stats.written += n
	}
	if err == nil && n != hdr.Size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		// Chmod: the create mode went through the umask.
		err = f.Chmod(mode)
	}
	if err == nil && !b.opts.noSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	l.files[p] = true
	return nil
}

// checkSymlink accepts a relative target whose ".." components all come
// first and climb no higher than the artifact directory. A ".." after a name
// is refused: the kernel applies it to wherever that name resolves, which
// may be another symlink, so its meaning cannot be decided from the text.
// With that rule, and no entry written through a symlink, every link in the
// tree resolves inside it whatever order the links are created in.
func checkSymlink(p, target string) error {
	if target == "" {
		return fmt.Errorf("%w: empty symlink target", ErrUnsafeEntry)
	}
	if strings.HasPrefix(target, "/") {
		return fmt.Errorf("%w: symlink to absolute path %q points outside the artifact", ErrUnsafeEntry, target)
	}
	depth := strings.Count(p, "/") // directories above the link
	ups, named := 0, false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if named {
				return fmt.Errorf("%w: symlink target %q has \"..\" after a name", ErrUnsafeEntry, target)
			}
			ups++
			if ups > depth {
				return fmt.Errorf("%w: symlink target %q points outside the artifact", ErrUnsafeEntry, target)
			}
		default:
			named = true
		}
	}
	return nil
}

// boundedReader fails once more than max bytes have come out of r.
type boundedReader struct {
	r     io.Reader
	n     int64
	max   int64
	stats *stats
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n > b.max {
		return 0, fmt.Errorf("%w: decompressed stream passed %d bytes", ErrTooLarge, b.max)
	}
	if rest := b.max - b.n + 1; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.stats != nil {
		b.stats.read += int64(n)
		if b.stats.afterRead != nil {
			b.stats.afterRead()
		}
	}
	if b.n > b.max {
		return n, fmt.Errorf("%w: decompressed stream passed %d bytes", ErrTooLarge, b.max)
	}
	return n, err
}

// mulCapped is a*b for non-negative a and b, or the largest int64 when that
// overflows.
func mulCapped(a, b int64) int64 {
	if a != 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}

// shorten keeps an error readable when a hostile name is megabytes long.
func shorten(name string) string {
	const keep = 200
	if len(name) <= keep {
		return name
	}
	return fmt.Sprintf("%s…(%d bytes)…%s", name[:keep/2], len(name), name[len(name)-keep/2:])
}
