package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// Metadata is what a user says about a model beyond its files. Name and
// Version go into the ModelPack config; the rest into dev.barge.*
// annotations, which ModelPack has no field for.
type Metadata struct {
	Name      string
	Version   string
	Task      string
	Framework string
	Labels    []string
}

// PackOptions configures Pack. The zero value packs a model.
type PackOptions struct {
	// Kind is model (the default) or code.
	Kind Kind
	Metadata
	// Annotations are added to the manifest.
	Annotations map[string]string
	// AllowOutsideSymlinks packs the target of a symlink that points outside
	// the directory. By default such a symlink is refused, so a push never
	// uploads a file the user did not mean to share.
	AllowOutsideSymlinks bool
	// Created, if not zero, is written as org.opencontainers.image.created.
	// Zero keeps the manifest deterministic.
	Created time.Time
	// Concurrency is how many files are hashed and pushed at once; if <= 0,
	// the number of CPUs (at least 2) is used.
	Concurrency int
}

// Storage is where Pack writes: a registry repository or a local store.
type Storage interface {
	content.Pusher
	Exists(ctx context.Context, target ocispec.Descriptor) (bool, error)
}

// FilePusher is a Storage that uploads a file by its path, such as
// edgepuller/upload's resumable repository: it can read the file again
// from any offset, so that a cut upload continues where the registry
// stopped. It fails with an error wrapping content.ErrMismatchedDigest when
// the file no longer matches desc.
type FilePusher interface {
	PushFile(ctx context.Context, desc ocispec.Descriptor, path string) error
}

// File is one file of a directory being packed.
type packFile struct {
	rel   string // slash-separated, relative to the directory
	abs   string // what to read: the file itself or a symlink's target
	desc  ocispec.Descriptor
	mtime time.Time
}

// ModelConfig is the ModelPack model config
// (application/vnd.cncf.model.config.v1+json).
type ModelConfig struct {
	Descriptor ModelDescriptor `json:"descriptor"`
	Config     ModelSettings   `json:"config"`
	ModelFS    ModelFS         `json:"modelfs"`
}

// ModelDescriptor is the general information about a model.
type ModelDescriptor struct {
	CreatedAt *time.Time `json:"createdAt,omitempty"`
	Name      string     `json:"name,omitempty"`
	Version   string     `json:"version,omitempty"`
}

// ModelSettings is the technical metadata of a model.
type ModelSettings struct {
	Format string `json:"format,omitempty"`
}

// ModelFS lists the layers' DiffIDs; for raw layers a DiffID is the layer
// digest.
type ModelFS struct {
	Type    string          `json:"type"`
	DiffIDs []digest.Digest `json:"diffIds"`
}

// Pack packs the files under dir into dst as one artifact and returns the
// manifest descriptor. Each file is one raw layer titled by its relative
// path; blobs dst already has are not pushed again. Packing the same
// directory twice gives the same manifest digest.
func Pack(ctx context.Context, dst Storage, dir string, opts PackOptions) (ocispec.Descriptor, error) {
	kind := opts.Kind
	if kind == "" {
		kind = KindModel
	}
	if kind != KindModel && kind != KindCode {
		return ocispec.Descriptor{}, errorf("pack %s: kind %q cannot be packed from a plain directory: use model or code", dir, kind)
	}
	files, err := listFiles(dir, opts.AllowOutsideSymlinks)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	limit := opts.Concurrency
	if limit <= 0 {
		limit = max(runtime.NumCPU(), 2)
	}

	// Hash first: the manifest needs every digest, and a registry needs the
	// digest before the upload.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, f := range files {
		g.Go(func() error {
			d, size, err := hashFile(gctx, f.abs)
			if err != nil {
				return fmt.Errorf("pack %s: %w", f.rel, err)
			}
			f.desc = ocispec.Descriptor{
				MediaType: layerMediaType(kind, f.rel),
				Digest:    d,
				Size:      size,
				Annotations: map[string]string{
					AnnotationTitle:    f.rel,
					AnnotationFilepath: f.rel,
				},
			}
			if role := roleOf(f.rel); role != "" {
				f.desc.Annotations[AnnotationRole] = role
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return ocispec.Descriptor{}, err
	}

	config, configBytes, err := buildConfig(kind, opts, files)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	annotations, err := manifestAnnotations(opts)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	artifactType := ArtifactTypeModel
	if kind == KindCode {
		artifactType = ArtifactTypeCode
	}
	layers := make([]layer, len(files))
	for i, f := range files {
		layers[i] = f
	}
	return publish(ctx, dst, dir, ocispec.Manifest{ArtifactType: artifactType, Config: config, Annotations: annotations}, configBytes, layers, limit)
}

// layer is what publish pushes: a file or a dataset shard.
type layer interface {
	descriptor() ocispec.Descriptor
	push(ctx context.Context, dst Storage) error
}

func (f *packFile) descriptor() ocispec.Descriptor              { return f.desc }
func (f *packFile) push(ctx context.Context, dst Storage) error { return pushFile(ctx, dst, f) }

// publish checks that the manifest fits a registry, then pushes the layers
// (each digest once, limit at a time), the config and last the manifest, so
// that nothing reaches dst for a manifest that cannot be pushed and a
// manifest never names a blob dst lacks. m gives the artifact type, config,
// annotations and subject; publish fills in the rest.
func publish(ctx context.Context, dst Storage, dir string, m ocispec.Manifest, configBytes []byte, layers []layer, limit int) (ocispec.Descriptor, error) {
	config := m.Config
	m.Versioned = specs.Versioned{SchemaVersion: 2}
	m.MediaType = ocispec.MediaTypeImageManifest
	m.Layers = make([]ocispec.Descriptor, len(layers))
	for i, l := range layers {
		m.Layers[i] = l.descriptor()
	}
	manifest, manifestBytes, err := encodeManifest(m)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("pack %s: %w", dir, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	pushing := map[digest.Digest]bool{}
	for _, l := range layers {
		d := l.descriptor().Digest
		if pushing[d] {
			continue // identical files are one blob
		}
		pushing[d] = true
		g.Go(func() error { return l.push(gctx, dst) })
	}
	if err := g.Wait(); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := pushBytes(ctx, dst, config, configBytes); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("pack %s: push config: %w", dir, err)
	}
	if err := pushBytes(ctx, dst, manifest, manifestBytes); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("pack %s: push manifest %s: %w", dir, manifest.Digest, err)
	}
	return manifest, nil
}

// PushManifest encodes m, checks it fits a registry, and pushes it unless dst
// has it already.
func PushManifest(ctx context.Context, dst Storage, m ocispec.Manifest) (ocispec.Descriptor, error) {
	desc, b, err := encodeManifest(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := pushBytes(ctx, dst, desc, b); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push manifest %s: %w", desc.Digest, err)
	}
	return desc, nil
}

func encodeManifest(m ocispec.Manifest) (ocispec.Descriptor, []byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	if len(b) > MaxManifestBytes {
		return ocispec.Descriptor{}, nil, errorf("the manifest for %d files is %.1f MiB, more than the %d MiB registries accept: pack fewer, larger files (a dataset is sharded into tar layers with --kind dataset)",
			len(m.Layers), float64(len(b))/(1<<20), MaxManifestBytes>>20)
	}
	desc := content.NewDescriptorFromBytes(m.MediaType, b)
	desc.ArtifactType = m.ArtifactType
	desc.Annotations = m.Annotations
	return desc, b, nil
}

func pushBytes(ctx context.Context, dst Storage, desc ocispec.Descriptor, b []byte) error {
	if ok, err := dst.Exists(ctx, desc); err == nil && ok {
		return nil
	}
	err := dst.Push(ctx, desc, strings.NewReader(string(b)))
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return nil
	}
	return err
}

func buildConfig(kind Kind, opts PackOptions, files []*packFile) (ocispec.Descriptor, []byte, error) {
	if kind == KindCode {
		return ocispec.DescriptorEmptyJSON, ocispec.DescriptorEmptyJSON.Data, nil
	}
	cfg := ModelConfig{
		Descriptor: ModelDescriptor{Name: opts.Name, Version: opts.Version},
		Config:     ModelSettings{Format: opts.Framework},
		ModelFS:    ModelFS{Type: "layers", DiffIDs: make([]digest.Digest, len(files))},
	}
	if !opts.Created.IsZero() {
		t := opts.Created.UTC()
		cfg.Descriptor.CreatedAt = &t
	}
	for i, f := range files {
		cfg.ModelFS.DiffIDs[i] = f.desc.Digest
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return content.NewDescriptorFromBytes(MediaTypeModelConfig, b), b, nil
}

func manifestAnnotations(opts PackOptions) (map[string]string, error) {
	a := map[string]string{}
	for k, v := range opts.Annotations {
		a[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			a[k] = v
		}
	}
	set(AnnotationTask, opts.Task)
	set(AnnotationFramework, opts.Framework)
	set(ocispec.AnnotationTitle, opts.Name)
	set(ocispec.AnnotationVersion, opts.Version)
	if len(opts.Labels) > 0 {
		b, err := json.Marshal(opts.Labels)
		if err != nil {
			return nil, err
		}
		a[AnnotationLabels] = string(b)
	}
	if !opts.Created.IsZero() {
		a[ocispec.AnnotationCreated] = opts.Created.UTC().Format(time.RFC3339)
	}
	if len(a) == 0 {
		return nil, nil
	}
	return a, nil
}

// listFiles walks dir in lexical order and returns its regular files. It
// refuses what cannot be packed faithfully: nothing to pack, special files,
// symlinks out of the directory (unless allowed) or to directories.
func listFiles(dir string, allowOutside bool) ([]*packFile, error) {
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, errorf("pack %s: no such directory", dir)
	case err != nil:
		return nil, fmt.Errorf("pack %s: %w", dir, err)
	case !info.IsDir():
		return nil, errorf("pack %s: not a directory: give the directory that holds the files", dir)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", dir, err)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	var files []*packFile
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("pack %s: %w", dir, err)
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		f := &packFile{rel: rel, abs: p}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				return errorf("pack %s: symlink %s is broken: %v", dir, rel, err)
			}
			if !within(root, target) && !allowOutside {
				return errorf("pack %s: symlink %s points outside the directory (to %s): copy the file in, or pass --allow-outside-symlinks to pack its target", dir, rel, target)
			}
			ti, err := os.Stat(target)
			if err != nil {
				return fmt.Errorf("pack %s: %w", dir, err)
			}
			if !ti.Mode().IsRegular() {
				return errorf("pack %s: symlink %s points to %s, which is not a regular file: only files can be packed", dir, rel, target)
			}
			f.abs = target
		case !d.Type().IsRegular():
			return errorf("pack %s: %s is a %s, not a regular file: remove it or pack another directory", dir, rel, d.Type())
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errorf("pack %s: the directory has no files", dir)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return files, nil
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

func hashFile(ctx context.Context, name string) (digest.Digest, int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, f})
	if err != nil {
		return "", 0, err
	}
	return digest.NewDigest(digest.SHA256, h), n, nil
}

// pushFile uploads f unless dst has it. The bytes read during the upload are
// checked against the digest taken before, so a file that changes while it is
// pushed fails the push instead of publishing a manifest that lies.
func pushFile(ctx context.Context, dst Storage, f *packFile) error {
	if ok, err := dst.Exists(ctx, f.desc); err == nil && ok {
		return nil
	}
	if fp, ok := dst.(FilePusher); ok {
		return pushFileByPath(ctx, fp, f)
	}
	r, err := os.Open(f.abs)
	if err != nil {
		return fmt.Errorf("push %s: %w", f.rel, err)
	}
	defer r.Close()
	vr := content.NewVerifyReader(ctxReader{ctx, r}, f.desc)
	err = dst.Push(ctx, f.desc, vr)
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return nil // pushed meanwhile, by a twin file or another push
	}
	if verr := vr.Verify(); err != nil || verr != nil {
		if verr != nil && (errors.Is(verr, content.ErrMismatchedDigest) || errors.Is(verr, content.ErrTrailingData) || errors.Is(verr, io.ErrUnexpectedEOF)) {
			return errorf("push %s: the file changed while it was being pushed (%v): push again once it is no longer being written", f.rel, verr)
		}
		if err == nil {
			err = verr
		}
		return fmt.Errorf("push %s: %w", f.rel, err)
	}
	return nil
}

// pushFileByPath lets dst read the file itself; the registry's digest check
// stands in for the VerifyReader.
func pushFileByPath(ctx context.Context, dst FilePusher, f *packFile) error {
	err := dst.PushFile(ctx, f.desc, f.abs)
	switch {
	case err == nil || errors.Is(err, errdef.ErrAlreadyExists):
		return nil
	case errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, io.ErrUnexpectedEOF):
		return errorf("push %s: the file changed while it was being pushed (%v): push again once it is no longer being written", f.rel, err)
	}
	return fmt.Errorf("push %s: %w", f.rel, err)
}

// ctxReader stops a long read when the context is done.
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
