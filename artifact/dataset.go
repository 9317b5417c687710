package artifact

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/bits"
	"os"
	"path"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// DatasetOptions configures PackDataset. The zero value works.
type DatasetOptions struct {
	// ShardBytes bounds a tar shard; if <= 0, 64 MiB is used.
	ShardBytes int64
	// RawBytes is the size from which a file is its own raw layer rather
	// than a shard member; if <= 0, 16 MiB is used.
	RawBytes int64
	// Annotations are added to the manifest.
	Annotations map[string]string
	// AllowOutsideSymlinks: as in PackOptions.
	AllowOutsideSymlinks bool
	// Concurrency: as in PackOptions.
	Concurrency int
}

const (
	defaultShardBytes = 64 << 20
	defaultRawBytes   = 16 << 20
)

// shard is one layer of a dataset: a single raw file, or a tar of files of
// one directory.
type shard struct {
	files []*packFile
	tar   bool
	desc  ocispec.Descriptor
}

// PackDataset packs the files under dir as a dataset artifact with config
// (the dataset statistics, application/vnd.barge.dataset.config.v1+json)
// and returns the manifest descriptor.
//
// A dataset of many small files must not become as many layers: the files
// of each directory go into deterministic tar shards of at most ShardBytes,
// and files of RawBytes or more stay raw layers. Shard boundaries fall after
// files chosen by a hash of their path (content-defined, on names), so adding
// or removing a file changes only its own shard: the others keep their digest
// and a new version transfers only what changed.
func PackDataset(ctx context.Context, dst Storage, dir string, config []byte, opts DatasetOptions) (ocispec.Descriptor, error) {
	if !json.Valid(config) {
		return ocispec.Descriptor{}, errorf("pack %s: the dataset config is not JSON", dir)
	}
	if opts.ShardBytes <= 0 {
		opts.ShardBytes = defaultShardBytes
	}
	if opts.RawBytes <= 0 {
		opts.RawBytes = defaultRawBytes
	}
	files, err := listFiles(dir, opts.AllowOutsideSymlinks)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, f := range files {
		fi, err := os.Stat(f.abs)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("pack %s: %w", dir, err)
		}
		f.desc.Size = fi.Size()
	}
	shards := planShards(files, opts)
	limit := opts.Concurrency
	if limit <= 0 {
		limit = 2
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, s := range shards {
		g.Go(func() error { return s.describe(gctx) })
	}
	if err := g.Wait(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("pack %s: %w", dir, err)
	}
	layers := make([]layer, len(shards))
	for i, s := range shards {
		layers[i] = s
	}
	configDesc := content.NewDescriptorFromBytes(MediaTypeDatasetConfig, config)
	return publish(ctx, dst, dir, ocispec.Manifest{ArtifactType: ArtifactTypeDataset, Config: configDesc, Annotations: opts.Annotations}, config, layers, limit)
}

// planShards groups files (in lexical order) into layers.
func planShards(files []*packFile, opts DatasetOptions) []*shard {
	var shards []*shard
	var cur *shard
	var curBytes int64
	var curDir string
	var divisor uint32
	flush := func() {
		if cur != nil && len(cur.files) > 0 {
			shards = append(shards, cur)
		}
		cur, curBytes = nil, 0
	}
	for i, f := range files {
		if f.desc.Size >= opts.RawBytes {
			flush()
			shards = append(shards, &shard{files: []*packFile{f}})
			continue
		}
		dir := path.Dir(f.rel)
		if cur == nil || dir != curDir {
			flush()
			curDir = dir
			divisor = boundaryDivisor(files[i:], dir, opts)
			cur = &shard{tar: true}
		}
		cur.files = append(cur.files, f)
		curBytes += tarSize(f.desc.Size)
		if curBytes >= opts.ShardBytes-tarSize(0) ||
			(curBytes >= opts.ShardBytes/4 && pathHash(f.rel)%divisor == 0) {
			flush()
			cur = &shard{tar: true}
		}
	}
	flush()
	return shards
}

// boundaryDivisor makes the average shard about half of ShardBytes: one
// file in divisor ends a shard. It is a power of two from the directory's
// average file size, so it stays put unless that average doubles or halves.
func boundaryDivisor(files []*packFile, dir string, opts DatasetOptions) uint32 {
	var n, total int64
	for _, f := range files {
		if path.Dir(f.rel) != dir {
			break
		}
		if f.desc.Size < opts.RawBytes {
			n++
			total += tarSize(f.desc.Size)
		}
	}
	if n == 0 || total == 0 {
		return 1
	}
	perShard := max((opts.ShardBytes/2)/(total/n), 1)
	return uint32(1) << min(bits.Len64(uint64(perShard))-1, 31)
}

func pathHash(p string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(p))
	return h.Sum32()
}

// tarSize is the bytes a file of size bytes takes in a tar: a header and
// its data padded to 512.
func tarSize(size int64) int64 { return 512 + (size+511)/512*512 }

func (s *shard) descriptor() ocispec.Descriptor { return s.desc }

// describe computes the shard's layer descriptor by streaming it once.
func (s *shard) describe(ctx context.Context) error {
	if !s.tar {
		f := s.files[0]
		d, size, err := hashFile(ctx, f.abs)
		if err != nil {
			return fmt.Errorf("%s: %w", f.rel, err)
		}
		s.desc = ocispec.Descriptor{
			MediaType:   MediaTypeModelDatasetRaw,
			Digest:      d,
			Size:        size,
			Annotations: map[string]string{AnnotationTitle: f.rel, AnnotationFilepath: f.rel},
		}
		return nil
	}
	h := sha256.New()
	n, unpacked, err := s.writeTar(ctx, h)
	if err != nil {
		return err
	}
	title := s.title()
	s.desc = ocispec.Descriptor{
		MediaType: MediaTypeModelDatasetTar,
		Digest:    digest.NewDigest(digest.SHA256, h),
		Size:      n,
		Annotations: map[string]string{
			AnnotationTitle:        title,
			AnnotationFilepath:     title,
			AnnotationUnpackedSize: strconv.FormatInt(unpacked, 10),
			AnnotationShardFiles:   strconv.Itoa(len(s.files)),
		},
	}
	return nil
}

// title names a shard after its directory and its first and last files, so
// that it is unique and says what it holds: train/cat/0001.jpg..0420.jpg.tar.
func (s *shard) title() string {
	first, last := s.files[0].rel, path.Base(s.files[len(s.files)-1].rel)
	if len(s.files) == 1 {
		return first + ".tar"
	}
	return first + ".." + last + ".tar"
}

// writeTar writes the shard as a deterministic tar: sorted entries, no
// timestamps, owners or modes beyond 0644. It returns the tar's size and
// the bytes of file data in it.
func (s *shard) writeTar(ctx context.Context, w io.Writer) (int64, int64, error) {
	cw := &countWriter{w: w}
	tw := tar.NewWriter(cw)
	var unpacked int64
	for _, f := range s.files {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.rel,
			Mode:     0o644,
			Size:     f.desc.Size,
			ModTime:  time.Unix(0, 0),
			Format:   tar.FormatPAX,
		}); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", f.rel, err)
		}
		r, err := os.Open(f.abs)
		if err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(tw, io.LimitReader(r, f.desc.Size))
		r.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", f.rel, err)
		}
		if n != f.desc.Size {
			return 0, 0, errorf("%s: the file changed while it was being packed (%d bytes, was %d): pack again once it is no longer being written", f.rel, n, f.desc.Size)
		}
		unpacked += n
	}
	if err := tw.Close(); err != nil {
		return 0, 0, err
	}
	return cw.n, unpacked, nil
}

// push uploads the shard unless dst has it, regenerating the tar (it is
// deterministic) rather than keeping a copy on disk.
func (s *shard) push(ctx context.Context, dst Storage) error {
	if !s.tar {
		f := s.files[0]
		f.desc = s.desc
		return pushFile(ctx, dst, f)
	}
	if ok, err := dst.Exists(ctx, s.desc); err == nil && ok {
		return nil
	}
	pr, pw := io.Pipe()
	go func() {
		_, _, err := s.writeTar(ctx, pw)
		pw.CloseWithError(err)
	}()
	vr := content.NewVerifyReader(pr, s.desc)
	err := dst.Push(ctx, s.desc, vr)
	var verr error
	if err == nil {
		verr = vr.Verify()
	}
	// Unblock the tar writer if the push stopped early.
	pr.CloseWithError(errors.New("push ended"))
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return nil
	}
	if err != nil || verr != nil {
		if verr != nil && (errors.Is(verr, content.ErrMismatchedDigest) || errors.Is(verr, content.ErrTrailingData) || errors.Is(verr, io.ErrUnexpectedEOF)) {
			return errorf("push %s: a file of the shard changed while it was being pushed (%v): push again once the dataset is no longer being written", s.title(), verr)
		}
		if err == nil {
			err = verr
		}
		return fmt.Errorf("push %s: %w", s.title(), err)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
