package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/registry"
)

var model = map[string]string{
	"weights.bin":               strings.Repeat("w", 300_000),
	"config.json":               `{"arch":"tiny"}`,
	"labels.txt":                "cat\ndog\n",
	"preprocess/resize.py":      "print('resize')",
	"postprocess/nms/nms.py":    "print('nms')",
	"weights/shards/a/part.bin": "deeply nested",
}

// A model pushed by barge is pulled file for file by the real oras CLI,
// nested paths included, and its manifest is a ModelPack one.
func TestBargePushOrasPull(t *testing.T) {
	reg := registry.StartForTest(t)
	src := t.TempDir()
	writeTree(t, src, model)
	ref := reg.Host() + "/models/tiny:1.0.0"
	digest := strings.TrimSpace(must(t, barge(t, "push", src, ref)).stdout)
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("push printed %q, want the digest", digest)
	}

	out := t.TempDir()
	must(t, oras(t, "pull", "--plain-http", "-o", out, ref))
	sameTree(t, tree(t, out), model)

	manifest := must(t, oras(t, "manifest", "fetch", "--plain-http", reg.Host()+"/models/tiny@"+digest)).stdout
	var m struct {
		ArtifactType string `json:"artifactType"`
		Config       struct {
			MediaType string `json:"mediaType"`
		} `json:"config"`
		Layers []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(manifest), &m); err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != artifact.ArtifactTypeModel || m.Config.MediaType != artifact.MediaTypeModelConfig {
		t.Errorf("artifactType %q config %q", m.ArtifactType, m.Config.MediaType)
	}
	for _, l := range m.Layers {
		if l.Annotations[artifact.AnnotationFilepath] != l.Annotations[artifact.AnnotationTitle] {
			t.Errorf("layer annotations %v", l.Annotations)
		}
	}
}

// A model pushed by the real oras CLI, with any files and media types and a
// directory, is pulled and inspected by barge.
func TestOrasPushBargePull(t *testing.T) {
	reg := registry.StartForTest(t)
	src := t.TempDir()
	files := map[string]string{
		"model.safetensors":   strings.Repeat("s", 100_000),
		"data/raw.bin":        "custom media type",
		"scripts/run.sh":      "#!/bin/sh\necho run\n",
		"scripts/lib/util.sh": "util",
	}
	writeTree(t, src, files)
	ref := reg.Host() + "/models/from-oras:v1"
	r := runCmdIn(t, src, orasBin, "push", "--plain-http", ref,
		"model.safetensors", "data/raw.bin:application/vnd.acme.raw", "scripts")
	must(t, r)

	out := filepath.Join(t.TempDir(), "pulled")
	pull := must(t, barge(t, "pull", ref, out))
	if !strings.Contains(pull.stderr, `layer media type "application/vnd.acme.raw" is not one Barge knows`) {
		t.Errorf("no warning for the unknown media type:\n%s", pull.stderr)
	}
	sameTree(t, tree(t, out, ".barge-pull"), files)

	var in struct {
		Kind     string `json:"kind"`
		Files    []struct{ Path string }
		Warnings []string
	}
	if err := json.Unmarshal([]byte(must(t, barge(t, "inspect", "-o", "json", ref)).stdout), &in); err != nil {
		t.Fatal(err)
	}
	if in.Kind != "generic" || len(in.Files) != 3 || len(in.Warnings) != 1 {
		t.Errorf("inspect: %+v", in)
	}
}
