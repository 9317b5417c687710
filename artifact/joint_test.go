package artifact_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/registry"
)

// A joint model is one index over an edge and a cloud model: barge inspect
// reads it as kind joint with both members annotated by layer, each member
// is an ordinary model with its files, and packing again gives the same
// digest, so one digest moves both parts together.
func TestPackJoint(t *testing.T) {
	ctx := context.Background()
	reg := registry.StartForTest(t)
	repo, err := remote.NewRepository(reg.Host() + "/models/joint")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	dirs := map[string]map[string]string{
		artifact.LayerEdge:  {"backbone.onnx": "edge half", "preprocess/prep.py": "print('edge')"},
		artifact.LayerCloud: {"head.onnx": "cloud half"},
	}
	paths := map[string]string{}
	for layer, files := range dirs {
		paths[layer] = t.TempDir()
		for name, data := range files {
			p := filepath.Join(paths[layer], filepath.FromSlash(name))
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	opts := artifact.PackOptions{Metadata: artifact.Metadata{Task: "object-detection"}}
	desc, err := artifact.PackJoint(ctx, repo, paths[artifact.LayerEdge], paths[artifact.LayerCloud], opts)
	if err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Inspect(ctx, repo, desc)
	if err != nil {
		t.Fatal(err)
	}
	if a.Kind != artifact.KindJoint || len(a.Manifests) != 2 {
		t.Fatalf("inspected as %s with %d members, want joint with 2", a.Kind, len(a.Manifests))
	}
	parts, err := artifact.JointPartsOf(a)
	if err != nil {
		t.Fatal(err)
	}
	for i, layer := range []string{artifact.LayerEdge, artifact.LayerCloud} {
		m := a.Manifests[i]
		if want := map[string]digest.Digest{artifact.LayerEdge: parts.Edge.Digest, artifact.LayerCloud: parts.Cloud.Digest}[layer]; m.Digest != want {
			t.Errorf("JointPartsOf gives %s as the %s part, want member %d %s", want, layer, i, m.Digest)
		}
		if m.Annotations[artifact.AnnotationLayer] != layer {
			t.Errorf("member %d is annotated %v, want %s=%s", i, m.Annotations, artifact.AnnotationLayer, layer)
		}
		part, err := artifact.Inspect(ctx, repo, m)
		if err != nil {
			t.Fatal(err)
		}
		var files []string
		for _, f := range part.Files {
			files = append(files, f.Path)
		}
		if part.Kind != artifact.KindModel || len(files) != len(dirs[layer]) {
			t.Errorf("%s part: kind %s, files %v; want a model with %d files", layer, part.Kind, files, len(dirs[layer]))
		}
	}
	again, err := artifact.PackJoint(ctx, repo, paths[artifact.LayerEdge], paths[artifact.LayerCloud], opts)
	if err != nil || again.Digest != desc.Digest {
		t.Errorf("packing the same parts again gave %s (%v), want %s", again.Digest, err, desc.Digest)
	}
	if _, err := artifact.PackJoint(ctx, repo, paths[artifact.LayerEdge], "", opts); err == nil || !strings.Contains(err.Error(), "no cloud part") {
		t.Errorf("a joint model without a cloud part: %v, want an error naming it", err)
	}
}

// jointIndex is an index over members given as (media type, layer) pairs,
// with digests 1, 2, 3... in order.
func jointIndex(artifactType string, members ...[2]string) string {
	var ms []string
	for i, m := range members {
		d := "sha256:" + strings.Repeat(string(rune('1'+i)), 64)
		ann := ""
		if m[1] != "-" {
			ann = `,"annotations":{"dev.barge.layer":"` + m[1] + `"}`
		}
		ms = append(ms, `{"mediaType":"`+m[0]+`","digest":"`+d+`","size":10`+ann+`}`)
	}
	return `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","artifactType":"` + artifactType + `","manifests":[` + strings.Join(ms, ",") + `]}`
}

// A joint model's parts are read by layer, whatever their order; an index
// that is not a joint model, or whose parts are missing, doubled, nested or
// unnamed, is refused with a message that says what is wrong.
func TestJointPartsOf(t *testing.T) {
	const manifest = ocispec.MediaTypeImageManifest
	digestOf := func(i int) digest.Digest { return digest.Digest("sha256:" + strings.Repeat(string(rune('1'+i)), 64)) }
	for _, tt := range []struct {
		name        string
		index       string
		edge, cloud int
		err         string
	}{
		{"edge then cloud", jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "edge"}, [2]string{manifest, "cloud"}), 0, 1, ""},
		{"cloud then edge", jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "cloud"}, [2]string{manifest, "edge"}), 1, 0, ""},
		{"a multi-platform image", jointIndex("", [2]string{manifest, "edge"}, [2]string{manifest, "cloud"}), 0, 0, "is not a joint model: it is a container image"},
		{"no cloud part", jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "edge"}), 0, 0, "has no cloud part"},
		{"no parts at all", jointIndex(artifact.ArtifactTypeJoint), 0, 0, "has no edge part"},
		{"two edge parts", jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "edge"}, [2]string{manifest, "edge"}, [2]string{manifest, "cloud"}), 0, 0, "has two edge parts"},
		{"a member without a layer", jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "edge"}, [2]string{manifest, "-"}), 0, 0, "has no dev.barge.layer annotation"},
		{"a third layer", jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "edge"}, [2]string{manifest, "cloud"}, [2]string{manifest, "fog"}), 0, 0, `annotated dev.barge.layer: "fog"`},
		{"a nested index", jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "edge"}, [2]string{ocispec.MediaTypeImageIndex, "cloud"}), 0, 0, "its cloud part"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := artifact.Parse(ocispec.Descriptor{Digest: digest.FromString(tt.index)}, []byte(tt.index))
			if err != nil {
				t.Fatal(err)
			}
			parts, err := artifact.JointPartsOf(a)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, artifact.ErrInvalid) {
					t.Fatalf("error %v, want an invalid-artifact error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if parts.Edge.Digest != digestOf(tt.edge) || parts.Cloud.Digest != digestOf(tt.cloud) {
				t.Errorf("parts %s / %s, want member %d as edge and %d as cloud", parts.Edge.Digest, parts.Cloud.Digest, tt.edge, tt.cloud)
			}
		})
	}
}

// FuzzJointPartsOf: whatever an index holds, JointPartsOf either refuses it
// or returns two distinct manifests annotated with their own layer.
func FuzzJointPartsOf(f *testing.F) {
	const manifest = ocispec.MediaTypeImageManifest
	f.Add([]byte(jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "edge"}, [2]string{manifest, "cloud"})))
	f.Add([]byte(jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "edge"}, [2]string{manifest, "edge"})))
	f.Add([]byte(jointIndex(artifact.ArtifactTypeJoint, [2]string{manifest, "-"})))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := artifact.Parse(ocispec.Descriptor{Digest: digest.FromBytes(b)}, b)
		if err != nil {
			return
		}
		parts, err := artifact.JointPartsOf(a)
		if err != nil {
			if !errors.Is(err, artifact.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		for layer, d := range map[string]ocispec.Descriptor{artifact.LayerEdge: parts.Edge, artifact.LayerCloud: parts.Cloud} {
			if d.Annotations[artifact.AnnotationLayer] != layer || d.MediaType != manifest || d.Digest.Validate() != nil {
				t.Fatalf("%s part %+v accepted", layer, d)
			}
		}
	})
}
