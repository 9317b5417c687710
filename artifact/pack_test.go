package artifact_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/bargeml/barge/artifact"
)

// writeTree creates files (path → content) under a new temporary directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var modelTree = map[string]string{
	"model.onnx":                "weights",
	"config.json":               `{"arch":"resnet"}`,
	"labels.txt":                "cat\ndog\n",
	"README.md":                 "# resnet",
	"preprocess/resize.py":      "print('resize')",
	"postprocess/nms/nms.py":    "print('nms')",
	"weights/shards/part-0.bin": "shard0",
}

func TestPackModel(t *testing.T) {
	ctx := context.Background()
	dir := writeTree(t, modelTree)
	store := memory.New()
	desc, err := artifact.Pack(ctx, store, dir, artifact.PackOptions{
		Metadata: artifact.Metadata{Name: "resnet", Version: "1.2.0", Task: "image-classification", Framework: "onnx", Labels: []string{"cat", "dog"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if desc.ArtifactType != artifact.ArtifactTypeModel {
		t.Errorf("artifactType = %q", desc.ArtifactType)
	}
	a, err := artifact.Inspect(ctx, store, desc)
	if err != nil {
		t.Fatal(err)
	}
	if a.Kind != artifact.KindModel || a.Config.MediaType != artifact.MediaTypeModelConfig {
		t.Errorf("kind %s config %s", a.Kind, a.Config.MediaType)
	}
	if a.Name != "resnet" || a.Version != "1.2.0" {
		t.Errorf("name %q version %q", a.Name, a.Version)
	}
	if a.Metadata["task"] != "image-classification" || a.Metadata["framework"] != "onnx" {
		t.Errorf("metadata %v", a.Metadata)
	}
	if strings.Join(a.Labels, ",") != "cat,dog" {
		t.Errorf("labels %v", a.Labels)
	}
	want := map[string]struct{ mediaType, role string }{
		"model.onnx":                {artifact.MediaTypeModelWeightRaw, ""},
		"config.json":               {artifact.MediaTypeModelWeightConfigRaw, ""},
		"labels.txt":                {artifact.MediaTypeModelWeightConfigRaw, ""},
		"README.md":                 {artifact.MediaTypeModelDocRaw, ""},
		"preprocess/resize.py":      {artifact.MediaTypeModelCodeRaw, "preprocess"},
		"postprocess/nms/nms.py":    {artifact.MediaTypeModelCodeRaw, "postprocess"},
		"weights/shards/part-0.bin": {artifact.MediaTypeModelWeightRaw, ""},
	}
	if len(a.Files) != len(want) {
		t.Fatalf("files %+v", a.Files)
	}
	var total int64
	for _, f := range a.Files {
		w, ok := want[f.Path]
		if !ok {
			t.Errorf("unexpected file %q", f.Path)
			continue
		}
		if f.MediaType != w.mediaType || f.Role != w.role {
			t.Errorf("%s: media type %s role %q, want %s %q", f.Path, f.MediaType, f.Role, w.mediaType, w.role)
		}
		if f.Size != int64(len(modelTree[f.Path])) {
			t.Errorf("%s: size %d", f.Path, f.Size)
		}
		rc, err := store.Fetch(ctx, f.Descriptor())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != modelTree[f.Path] {
			t.Errorf("%s: content %q", f.Path, b)
		}
		total += f.Size
	}
	if a.Size <= total {
		t.Errorf("size %d does not count manifest and config (files %d)", a.Size, total)
	}

	// The config is ModelPack's: diffIds list the layers in order.
	cb, err := content.FetchAll(ctx, store, a.Config)
	if err != nil {
		t.Fatal(err)
	}
	var cfg artifact.ModelConfig
	if err := json.Unmarshal(cb, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.ModelFS.Type != "layers" || len(cfg.ModelFS.DiffIDs) != len(want) || cfg.Descriptor.Name != "resnet" {
		t.Errorf("config %s", cb)
	}
}

func TestPackIsDeterministic(t *testing.T) {
	ctx := context.Background()
	dir := writeTree(t, modelTree)
	opts := artifact.PackOptions{Metadata: artifact.Metadata{Name: "m", Version: "1"}}
	first, err := artifact.Pack(ctx, memory.New(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Touching files changes their mtimes, which must not matter.
	for name := range modelTree {
		p := filepath.Join(dir, filepath.FromSlash(name))
		b, _ := os.ReadFile(p)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	second, err := artifact.Pack(ctx, memory.New(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if first.Digest != second.Digest {
		t.Errorf("digests differ: %s vs %s", first.Digest, second.Digest)
	}
	// A different file changes the digest.
	os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("other"), 0o644)
	third, err := artifact.Pack(ctx, memory.New(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if third.Digest == first.Digest {
		t.Error("changing a file did not change the digest")
	}
}

// countingStorage counts pushes to prove that something was not uploaded.
type countingStorage struct {
	*memory.Store
	mu     sync.Mutex
	pushes map[string]int
}

func (c *countingStorage) Push(ctx context.Context, d ocispec.Descriptor, r io.Reader) error {
	c.mu.Lock()
	c.pushes[d.MediaType]++
	c.mu.Unlock()
	return c.Store.Push(ctx, d, r)
}

func TestRepushUploadsNothing(t *testing.T) {
	ctx := context.Background()
	dir := writeTree(t, modelTree)
	store := &countingStorage{Store: memory.New(), pushes: map[string]int{}}
	if _, err := artifact.Pack(ctx, store, dir, artifact.PackOptions{}); err != nil {
		t.Fatal(err)
	}
	store.pushes = map[string]int{}
	if _, err := artifact.Pack(ctx, store, dir, artifact.PackOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(store.pushes) != 0 {
		t.Errorf("re-pushing an unchanged directory pushed %v", store.pushes)
	}
}

func TestPackCode(t *testing.T) {
	ctx := context.Background()
	dir := writeTree(t, map[string]string{"train/train.py": "x", "lib/util.py": "y"})
	store := memory.New()
	desc, err := artifact.Pack(ctx, store, dir, artifact.PackOptions{Kind: artifact.KindCode})
	if err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Inspect(ctx, store, desc)
	if err != nil {
		t.Fatal(err)
	}
	if a.Kind != artifact.KindCode || a.Config.MediaType != ocispec.MediaTypeEmptyJSON {
		t.Errorf("kind %s config %s", a.Kind, a.Config.MediaType)
	}
	for _, f := range a.Files {
		if f.MediaType != artifact.MediaTypeModelCodeRaw {
			t.Errorf("%s: %s", f.Path, f.MediaType)
		}
	}
	if a.Files[1].Role != "train" {
		t.Errorf("train/train.py role %q", a.Files[1].Role)
	}
}

func TestPackRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	outside := writeTree(t, map[string]string{"secret": "s3cret"})
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		want  string
	}{
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, "no such directory"},
		{"empty directory", func(t *testing.T) string { return t.TempDir() }, "has no files"},
		{"empty but for directories", func(t *testing.T) string {
			d := t.TempDir()
			os.MkdirAll(filepath.Join(d, "a", "b"), 0o755)
			return d
		}, "has no files"},
		{"a file, not a directory", func(t *testing.T) string {
			return filepath.Join(writeTree(t, map[string]string{"f": "x"}), "f")
		}, "not a directory"},
		{"symlink outside", func(t *testing.T) string {
			d := writeTree(t, map[string]string{"model.onnx": "w"})
			os.Symlink(filepath.Join(outside, "secret"), filepath.Join(d, "leak"))
			return d
		}, "points outside the directory"},
		{"symlink up and out", func(t *testing.T) string {
			d := writeTree(t, map[string]string{"sub/model.onnx": "w"})
			os.Symlink("../../../../../../../../etc/hostname", filepath.Join(d, "sub", "leak"))
			return d
		}, "points outside the directory"},
		{"broken symlink", func(t *testing.T) string {
			d := writeTree(t, map[string]string{"model.onnx": "w"})
			os.Symlink("missing", filepath.Join(d, "dangling"))
			return d
		}, "is broken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &countingStorage{Store: memory.New(), pushes: map[string]int{}}
			_, err := artifact.Pack(ctx, store, tt.setup(t), artifact.PackOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if !errors.Is(err, artifact.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if len(store.pushes) != 0 {
				t.Errorf("a refused pack pushed %v", store.pushes)
			}
		})
	}
}

func TestPackFollowsInsideSymlinks(t *testing.T) {
	ctx := context.Background()
	dir := writeTree(t, map[string]string{"real/model.onnx": "w"})
	if err := os.Symlink("real/model.onnx", filepath.Join(dir, "model.onnx")); err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	desc, err := artifact.Pack(ctx, store, dir, artifact.PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Inspect(ctx, store, desc)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Files) != 2 || a.Files[0].Digest != a.Files[1].Digest {
		t.Errorf("files %+v", a.Files)
	}
	// Outside symlinks are packed when the user asks for it.
	outside := writeTree(t, map[string]string{"shared.bin": "shared"})
	os.Symlink(filepath.Join(outside, "shared.bin"), filepath.Join(dir, "shared.bin"))
	if _, err := artifact.Pack(ctx, store, dir, artifact.PackOptions{AllowOutsideSymlinks: true}); err != nil {
		t.Fatal(err)
	}
}

// changingStorage rewrites a file just before its upload is read, as a
// training job still writing its checkpoint would.
type changingStorage struct {
	*memory.Store
	path string
}

func (c *changingStorage) Push(ctx context.Context, d ocispec.Descriptor, r io.Reader) error {
	if d.Annotations[artifact.AnnotationTitle] == filepath.Base(c.path) {
		if err := os.WriteFile(c.path, []byte("rewritten while pushing"), 0o644); err != nil {
			return err
		}
	}
	return c.Store.Push(ctx, d, r)
}

func TestPackFileChangedWhilePushing(t *testing.T) {
	ctx := context.Background()
	dir := writeTree(t, map[string]string{"model.onnx": "original weights", "config.json": "{}"})
	store := &changingStorage{Store: memory.New(), path: filepath.Join(dir, "model.onnx")}
	_, err := artifact.Pack(ctx, store, dir, artifact.PackOptions{Concurrency: 1})
	if err == nil || !strings.Contains(err.Error(), "changed while it was being pushed") {
		t.Fatalf("error %v", err)
	}
	if !strings.Contains(err.Error(), "model.onnx") {
		t.Errorf("error %v does not name the file", err)
	}
}

func TestPackManifestTooLarge(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// Long names make a manifest over 4 MiB from a few thousand files.
	long := strings.Repeat("n", 200)
	for i := range 9000 {
		sub := filepath.Join(dir, long[:100], long[:90])
		os.MkdirAll(sub, 0o755)
		os.WriteFile(filepath.Join(sub, long+"-"+itoa(i)), []byte(itoa(i)), 0o644)
	}
	store := &countingStorage{Store: memory.New(), pushes: map[string]int{}}
	_, err := artifact.Pack(ctx, store, dir, artifact.PackOptions{})
	if err == nil || !strings.Contains(err.Error(), "more than the 4 MiB registries accept") {
		t.Fatalf("error %v", err)
	}
	if len(store.pushes) != 0 {
		t.Errorf("a pack whose manifest cannot be pushed uploaded %v", store.pushes)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
