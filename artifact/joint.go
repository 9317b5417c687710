package artifact

import (
	"context"
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// The layers of a joint model, in the order of its index.
const (
	LayerEdge  = "edge"
	LayerCloud = "cloud"
)

// PackJoint packs the edge part and the cloud part of a joint model, each a
// model directory as Pack packs it, and pushes an OCI image index over the
// two manifests: artifactType ArtifactTypeJoint, each member annotated
// dev.barge.layer edge or cloud. One digest names both parts, so they move
// together. opts applies to both parts; the index carries opts.Annotations.
func PackJoint(ctx context.Context, dst Storage, edgeDir, cloudDir string, opts PackOptions) (ocispec.Descriptor, error) {
	if opts.Kind != "" && opts.Kind != KindModel {
		return ocispec.Descriptor{}, errorf("pack joint model: its parts are models, not %s", opts.Kind)
	}
	var members []ocispec.Descriptor
	for _, part := range []struct{ layer, dir string }{{LayerEdge, edgeDir}, {LayerCloud, cloudDir}} {
		if part.dir == "" {
			return ocispec.Descriptor{}, errorf("pack joint model: no %s part: give both edge=DIR and cloud=DIR", part.layer)
		}
		desc, err := Pack(ctx, dst, part.dir, opts)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("pack joint model, %s part: %w", part.layer, err)
		}
		members = append(members, ocispec.Descriptor{
			MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size, ArtifactType: desc.ArtifactType,
			Annotations: map[string]string{AnnotationLayer: part.layer},
		})
	}
	b, err := json.Marshal(ocispec.Index{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: ArtifactTypeJoint,
		Manifests:    members,
		Annotations:  opts.Annotations,
	})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageIndex, b)
	desc.ArtifactType = ArtifactTypeJoint
	if err := pushBytes(ctx, dst, desc, b); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("pack joint model: push index %s: %w", desc.Digest, err)
	}
	return desc, nil
}
