package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/store"
)

// seedStorage keeps every blob of a push in a node's blob store (the edge
// puller's, given with --store) before it goes up: the node that collected
// a dataset then holds it already, serves it to the other nodes of its site
// as their peer, and the site's uplink carries it once, going up. The
// upload reads each blob back from the store, so a cut upload still resumes
// from a file.
type seedStorage struct {
	artifact.Storage // the registry
	st               *store.Store
}

// Exists is true only when both the registry and the store have desc:
// a blob the registry has but the store lacks is still kept locally.
func (s seedStorage) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	if ok, err := s.st.Exists(ctx, desc); err != nil || !ok {
		return false, err
	}
	return s.Storage.Exists(ctx, desc)
}

func (s seedStorage) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if err := s.keep(ctx, desc, r); err != nil {
		return err
	}
	return s.upload(ctx, desc)
}

func (s seedStorage) PushFile(ctx context.Context, desc ocispec.Descriptor, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := s.keep(ctx, desc, f); err != nil {
		return err
	}
	return s.upload(ctx, desc)
}

// keep writes desc into the store, which verifies its digest.
func (s seedStorage) keep(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	err := s.st.Push(ctx, desc, r)
	if err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return fmt.Errorf("keep %s in the node's store %s: %w", desc.Digest, s.st.Root(), err)
	}
	return nil
}

// upload sends desc from the store to the registry, unless it is there.
func (s seedStorage) upload(ctx context.Context, desc ocispec.Descriptor) error {
	if ok, err := s.Storage.Exists(ctx, desc); err == nil && ok {
		return nil
	}
	if fp, ok := s.Storage.(artifact.FilePusher); ok {
		return fp.PushFile(ctx, desc, s.st.BlobPath(desc.Digest))
	}
	f, err := s.st.Fetch(ctx, desc)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.Storage.Push(ctx, desc, f)
}
