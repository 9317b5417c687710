package artifact_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	for i, layer := range []string{artifact.LayerEdge, artifact.LayerCloud} {
		m := a.Manifests[i]
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
