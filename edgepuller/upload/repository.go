package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// Repository is a registry repository whose large blobs are pushed in
// resumable chunks. Everything else (manifests, small blobs, tags, reads)
// goes through the oras-go repository it wraps, with the same client and
// credentials.
type Repository struct {
	*remote.Repository
	opts Options
	// client is the repository's client without oras-go's retry transport,
	// when it is visible: an upload retries by asking the registry where it
	// stopped, and a second retry loop underneath would resend a chunk the
	// registry partly kept, which it refuses (416).
	client remote.Client
}

// New wraps repo. Its Client (auth.DefaultClient if nil) sends the upload
// requests too, so the same credentials and token cache serve both.
func New(repo *remote.Repository, opts Options) *Repository {
	c := repo.Client
	if c == nil {
		c = auth.DefaultClient
	}
	return &Repository{Repository: repo, opts: opts.withDefaults(), client: withoutRetry(c)}
}

func withoutRetry(c remote.Client) remote.Client {
	ac, ok := c.(*auth.Client)
	if !ok || ac.Client == nil {
		return c
	}
	rt, ok := ac.Client.Transport.(*retry.Transport)
	if !ok {
		return c
	}
	hc := *ac.Client
	hc.Transport = rt.Base // nil means http.DefaultTransport
	bc := *ac              // shares the token cache
	bc.Client = &hc
	return &bc
}

// Push pushes a blob read from r. One of at least Options.Threshold bytes
// goes in chunks: a cut resends at most the chunk in flight, and a later
// call (another process, with the same StateDir) reads and skips what the
// registry already has instead of sending it again. Manifests and smaller
// blobs go through the wrapped repository.
func (r *Repository) Push(ctx context.Context, desc ocispec.Descriptor, rd io.Reader) error {
	if desc.Size < r.opts.Threshold || r.isManifest(desc) {
		return r.Repository.Push(ctx, desc, rd)
	}
	return r.pushChunked(ctx, desc, &streamSource{r: rd})
}

// PushFile pushes the file at path as the blob desc, resuming an upload of
// it that an earlier call or process left unfinished. The registry checks
// the digest when the upload completes; a file that no longer matches desc
// (it changed after it was hashed) fails with an error that wraps
// content.ErrMismatchedDigest.
func (r *Repository) PushFile(ctx context.Context, desc ocispec.Descriptor, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != desc.Size {
		return fmt.Errorf("%s is %d bytes, not the %d it had when hashed: %w", path, fi.Size(), desc.Size, content.ErrMismatchedDigest)
	}
	if desc.Size < r.opts.Threshold || r.isManifest(desc) {
		return mismatch(r.Repository.Push(ctx, desc, io.NewSectionReader(f, 0, desc.Size)))
	}
	return r.pushChunked(ctx, desc, &fileSource{r: f, size: desc.Size})
}

// mismatch marks the registry's refusal of a digest with
// content.ErrMismatchedDigest, which is what a caller can act on.
func mismatch(err error) error {
	if err != nil && hasCode(err, errcode.ErrorCodeDigestInvalid) {
		return fmt.Errorf("%w: %w", content.ErrMismatchedDigest, err)
	}
	return err
}

var manifestTypes = []string{
	ocispec.MediaTypeImageManifest,
	ocispec.MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.artifact.manifest.v1+json",
}

func (r *Repository) isManifest(desc ocispec.Descriptor) bool {
	types := r.ManifestMediaTypes
	if types == nil {
		types = manifestTypes
	}
	for _, t := range types {
		if desc.MediaType == t {
			return true
		}
	}
	return false
}

func (r *Repository) pushChunked(ctx context.Context, desc ocispec.Descriptor, src source) error {
	u := newUpload(r, desc, src)
	unlock, err := u.files.lock(ctx)
	if err != nil {
		return fmt.Errorf("push blob %s to %s: %w", desc.Digest, u.repo, err)
	}
	defer unlock()
	if err := u.run(ctx); err != nil {
		if errors.Is(err, content.ErrMismatchedDigest) {
			return err
		}
		return fmt.Errorf("push blob %s to %s: %w", desc.Digest, u.repo, err)
	}
	return nil
}

// statusIs says whether resp has one of the codes.
func statusIs(resp *http.Response, codes ...int) bool {
	for _, c := range codes {
		if resp.StatusCode == c {
			return true
		}
	}
	return false
}
