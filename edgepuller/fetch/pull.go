package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
)

// Pull resolves ref ("host[:port]/name:tag" or "...@sha256:…") at the
// origin, fetches its manifest and config into st, then every layer, at most
// opts.Concurrency at once, and returns the manifest's descriptor and typed
// view. Blobs already in st are not downloaded again; partial downloads
// resume. An index (a joint model, a multi-platform image) is stored and
// returned with its Manifests; pull the member you want by digest.
//
// On error, res still counts what was done, and every partial download is
// kept for the next Pull to resume.
func Pull(ctx context.Context, st *store.Store, ref string, opts Options) (manifest ocispec.Descriptor, a *artifact.Artifact, res Result, err error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, Result{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	if r.Reference == "" {
		return ocispec.Descriptor{}, nil, Result{}, fmt.Errorf("pull %s: no tag or digest: name the version to pull, as in %s:v1", ref, ref)
	}
	p, err := newPuller(st, r, opts)
	if err != nil {
		return ocispec.Descriptor{}, nil, Result{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	defer p.close()
	ctx, cancel := withPullTimeout(ctx, p.opts)
	defer cancel()
	manifest, a, err = p.pull(ctx, r.Reference)
	if err = explainTimeout(ctx, p.opts, err); err != nil {
		err = fmt.Errorf("pull %s: %w", ref, err)
	}
	return manifest, a, p.result(), err
}

func (p *puller) pull(ctx context.Context, reference string) (ocispec.Descriptor, *artifact.Artifact, error) {
	desc, b, err := p.resolveManifest(ctx, reference)
	if err != nil {
		return desc, nil, err
	}
	// Parse before downloading anything big: a manifest Barge refuses
	// (a title escaping the directory, two layers with one path) fails now.
	if _, err := artifact.Parse(desc, b); err != nil {
		return desc, nil, err
	}
	if p.opts.Verify != nil {
		if err := p.opts.Verify(ctx, desc); err != nil {
			return desc, nil, err
		}
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return desc, nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	done := p.announceBlobs(m)
	defer func() {
		for _, f := range done {
			f() // what was not fetched: a failure, a refusal
		}
	}()
	if m.Config.Digest != "" {
		if m.Config.Size > artifact.MaxManifestBytes {
			return desc, nil, fmt.Errorf("config %s is %d bytes, more than the %d MiB limit for configs", m.Config.Digest, m.Config.Size, artifact.MaxManifestBytes>>20)
		}
		err := p.fetchBlob(ctx, m.Config, "")
		done[m.Config.Digest]()
		if err != nil {
			return desc, nil, fmt.Errorf("config: %w", err)
		}
	}
	// Read back from the store: the model config is there now, and Inspect
	// takes the name and version from it.
	a, err := artifact.Inspect(ctx, p.st, desc)
	if err != nil {
		return desc, nil, err
	}
	if p.opts.Check != nil {
		if err := p.opts.Check(a); err != nil {
			return desc, a, err
		}
	}
	if err := p.checkSpace(ctx, m.Layers); err != nil {
		return desc, a, err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.Concurrency)
	seen := map[string]bool{}
	for _, l := range m.Layers {
		seen[l.Digest.String()] = true
	}
	p.setPending(len(seen))
	clear(seen)
	for i, l := range m.Layers {
		if seen[l.Digest.String()] {
			continue // the same bytes under two names: fetch them once
		}
		seen[l.Digest.String()] = true
		name := l.Annotations[ocispec.AnnotationTitle]
		g.Go(func() error {
			err := p.fetchBlob(gctx, l, name)
			p.setPending(-1)
			done[l.Digest]()
			if err != nil {
				if name == "" {
					name = fmt.Sprintf("%d", i)
				}
				return fmt.Errorf("layer %s: %w", name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return desc, a, err
	}
	return desc, a, nil
}

// resolveManifest resolves reference and returns the manifest's
// descriptor and verified bytes, in the store from then on. A manifest
// named by digest is announced from the start, its size unknown; once
// resolved, with its size, until it is stored.
func (p *puller) resolveManifest(ctx context.Context, reference string) (ocispec.Descriptor, []byte, error) {
	ref := p.ref
	ref.Reference = reference
	if d, err := ref.Digest(); err == nil {
		defer p.announce(ocispec.Descriptor{Digest: d, Size: -1})()
	}
	desc, err := p.resolve(ctx, reference)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	defer p.announce(desc)()
	b, err := p.manifest(ctx, desc)
	return desc, b, err
}

// announceBlobs announces the config and the layers of m, and returns
// their done funcs, each safe to call more than once.
func (p *puller) announceBlobs(m ocispec.Manifest) map[digest.Digest]func() {
	done := map[digest.Digest]func(){}
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if d.Digest == "" || done[d.Digest] != nil {
			continue
		}
		done[d.Digest] = p.announce(d)
	}
	return done
}

// resolve finds what reference names. Only the origin says what a tag
// means. For a digest, a mirror is not asked what the digest's size and
// media type are (a HEAD answer cannot be checked, and a wrong size or type
// would fail or misdirect the pull even where the origin is right): the
// descriptor comes from the store, from the origin, or from the manifest
// bytes a mirror serves, verified against the digest first.
func (p *puller) resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	origin := p.srcs[len(p.srcs)-1]
	ref := p.ref
	ref.Reference = reference
	d, err := ref.Digest()
	if err != nil {
		desc, err := origin.repository(p.ref, p.meta).Resolve(ctx, reference)
		if err != nil {
			err = fmt.Errorf("%s: %w", origin, err)
			return ocispec.Descriptor{}, fmt.Errorf("resolve %s: %w%s", reference, err, resolveHint([]error{err}))
		}
		return desc, nil
	}
	if desc, ok := p.storedManifest(ctx, d); ok {
		return desc, nil
	}
	var errs []error
	for _, s := range p.usable(nil) {
		var desc ocispec.Descriptor
		if s.origin() {
			desc, err = s.repository(p.ref, p.meta).Resolve(ctx, reference)
			if err == nil && desc.Digest != d {
				err = fmt.Errorf("answered with %s for a digest reference", desc.Digest)
			}
		} else {
			desc, err = p.shortcutManifest(ctx, s, d)
		}
		if err == nil {
			return desc, nil
		}
		p.dropOnError(s, err)
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
	}
	return ocispec.Descriptor{}, fmt.Errorf("resolve %s: %w%s", reference, joinErrors(errs), resolveHint(errs))
}

// storedManifest describes the manifest d from the store, if it is there.
func (p *puller) storedManifest(ctx context.Context, d digest.Digest) (ocispec.Descriptor, bool) {
	if ok, err := p.st.Exists(ctx, ocispec.Descriptor{Digest: d}); err != nil || !ok {
		return ocispec.Descriptor{}, false
	}
	b, err := os.ReadFile(p.st.BlobPath(d))
	if err != nil || len(b) > artifact.MaxManifestBytes || digest.FromBytes(b) != d {
		return ocispec.Descriptor{}, false
	}
	return describeManifest(d, b), true
}

// shortcutManifest fetches the manifest d from the peer or mirror s,
// verifies it and stores it, and describes it from its own bytes.
func (p *puller) shortcutManifest(ctx context.Context, s source, d digest.Digest) (ocispec.Descriptor, error) {
	_, rc, err := s.repository(p.ref, p.metaClient(s)).FetchReference(ctx, d.String())
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, artifact.MaxManifestBytes+1))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("read manifest %s: %w", d, err)
	}
	p.received(s, int64(len(b)))
	if len(b) > artifact.MaxManifestBytes {
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s is more than the %d MiB limit for manifests: %w", d, artifact.MaxManifestBytes>>20, content.ErrTrailingData)
	}
	if got := digest.FromBytes(b); got != d {
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s: %w: %s served content with digest %s", d, content.ErrMismatchedDigest, s, got)
	}
	desc := describeManifest(d, b)
	if err := p.st.Push(ctx, desc, bytes.NewReader(b)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return ocispec.Descriptor{}, fmt.Errorf("store manifest %s: %w", d, err)
	}
	return desc, nil
}

// describeManifest is the descriptor of manifest bytes b, verified to be
// d, with the media type the bytes give (artifact.ManifestMediaType).
func describeManifest(d digest.Digest, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: artifact.ManifestMediaType(b), Digest: d, Size: int64(len(b))}
}

func resolveHint(errs []error) string {
	if len(errs) > 0 && errors.Is(errs[len(errs)-1], errdef.ErrNotFound) {
		return " (check the repository name and that the tag was pushed)"
	}
	return ""
}

// manifest returns the manifest's bytes, verified against desc and stored
// in the store: from the store if there, else from the peers, the mirrors,
// the origin.
func (p *puller) manifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	if ok, err := p.st.Exists(ctx, desc); err == nil && ok {
		b, err := artifact.FetchLimited(ctx, p.st, desc)
		if err == nil {
			p.reused.Add(desc.Size)
			return b, nil
		}
	}
	var errs []error
	for _, s := range p.usable(nil) {
		b, err := artifact.FetchLimited(ctx, s.repository(p.ref, p.metaClient(s)), desc)
		if err != nil {
			p.dropOnError(s, err)
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			continue
		}
		p.received(s, int64(len(b)))
		if err := p.st.Push(ctx, desc, bytes.NewReader(b)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			return nil, fmt.Errorf("store manifest %s: %w", desc.Digest, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("fetch manifest %s: %w", desc.Digest, joinErrors(errs))
}

// joinErrors is errors.Join on one line: these end up in conditions and logs.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return multiError(errs)
}

type multiError []error

func (m multiError) Unwrap() []error { return m }
func (m multiError) Error() string {
	s := ""
	for i, e := range m {
		if i > 0 {
			s += "; "
		}
		s += e.Error()
	}
	return s
}
