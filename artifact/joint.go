package artifact

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

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

// JointParts are the two members of a joint model's index, by layer.
type JointParts struct {
	Edge  ocispec.Descriptor
	Cloud ocispec.Descriptor
}

// JointPartsOf reads a joint model's parts from its parsed index. It is
// strict, because each part goes somewhere else (nodes, the cloud): every
// member must be a manifest annotated dev.barge.layer edge or cloud, and
// each layer must appear exactly once.
func JointPartsOf(a *Artifact) (JointParts, error) {
	var parts JointParts
	if a.Kind != KindJoint {
		return parts, errorf("%s is not a joint model: it is %s, and a joint model is an index with artifactType %s (barge push --joint edge=DIR --joint cloud=DIR REF)", a.Digest, kindArticle(a.Kind), ArtifactTypeJoint)
	}
	for i, m := range a.Manifests {
		layer := m.Annotations[AnnotationLayer]
		var slot *ocispec.Descriptor
		switch layer {
		case LayerEdge:
			slot = &parts.Edge
		case LayerCloud:
			slot = &parts.Cloud
		case "":
			return JointParts{}, errorf("joint model %s: member %d (%s) has no %s annotation; each member must say edge or cloud", a.Digest, i, m.Digest, AnnotationLayer)
		default:
			return JointParts{}, errorf("joint model %s: member %d (%s) is annotated %s: %q; a joint model's parts are edge and cloud", a.Digest, i, m.Digest, AnnotationLayer, layer)
		}
		if m.MediaType != ocispec.MediaTypeImageManifest {
			return JointParts{}, errorf("joint model %s: its %s part %s has media type %q; each part must be a model manifest (%s)", a.Digest, layer, m.Digest, m.MediaType, ocispec.MediaTypeImageManifest)
		}
		if slot.Digest != "" {
			return JointParts{}, errorf("joint model %s has two %s parts (%s and %s); it must have exactly one", a.Digest, layer, slot.Digest, m.Digest)
		}
		*slot = m
	}
	for _, p := range []struct {
		layer string
		d     ocispec.Descriptor
	}{{LayerEdge, parts.Edge}, {LayerCloud, parts.Cloud}} {
		if p.d.Digest == "" {
			return JointParts{}, errorf("joint model %s has no %s part: its index lists no manifest annotated %s: %s", a.Digest, p.layer, AnnotationLayer, p.layer)
		}
	}
	return parts, nil
}

// kindArticle names a kind with its article, for messages.
func kindArticle(k Kind) string {
	switch {
	case k == KindImage:
		return "a container image or image index"
	case k == "":
		return "an artifact of no known kind"
	case strings.ContainsRune("aeiou", rune(k[0])):
		return "an " + string(k) + " artifact"
	}
	return "a " + string(k) + " artifact"
}
