package artifact_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/memory"

	"github.com/bargeml/barge/artifact"
)

// imageTree makes n small "images" per class directory.
func imageTree(t *testing.T, classes []string, n int) string {
	t.Helper()
	files := map[string]string{}
	for _, c := range classes {
		for i := range n {
			files[fmt.Sprintf("train/%s/%05d.jpg", c, i)] = strings.Repeat(c[:1], 1000+i%7)
		}
	}
	return writeTree(t, files)
}

func packDataset(t *testing.T, store artifact.Storage, dir string, opts artifact.DatasetOptions) (ocispec.Descriptor, *artifact.Artifact) {
	t.Helper()
	ctx := context.Background()
	desc, err := artifact.PackDataset(ctx, store, dir, []byte(`{"format":"imagefolder"}`), opts)
	if err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Inspect(ctx, store.(*memory.Store), desc)
	if err != nil {
		t.Fatal(err)
	}
	return desc, a
}

func TestPackDatasetShards(t *testing.T) {
	dir := imageTree(t, []string{"cat", "dog"}, 500) // 1000 files, ~1 MiB
	big := strings.Repeat("B", 3<<20)
	os.WriteFile(filepath.Join(dir, "train", "big.bin"), []byte(big), 0o644)
	opts := artifact.DatasetOptions{ShardBytes: 128 << 10, RawBytes: 1 << 20}
	desc, a := packDataset(t, memory.New(), dir, opts)
	if a.Kind != artifact.KindDataset || desc.ArtifactType != artifact.ArtifactTypeDataset || a.Config.MediaType != artifact.MediaTypeDatasetConfig {
		t.Fatalf("kind %s artifactType %s config %s", a.Kind, desc.ArtifactType, a.Config.MediaType)
	}
	var shards, raws, members int
	for _, f := range a.Files {
		switch f.MediaType {
		case artifact.MediaTypeModelDatasetTar:
			shards++
			if !f.Unpack {
				t.Errorf("%s is not unpacked", f.Path)
			}
			if f.Size > opts.ShardBytes {
				t.Errorf("shard %s is %d bytes, over the %d bound", f.Path, f.Size, opts.ShardBytes)
			}
			var n int
			fmt.Sscan(f.Annotations[artifact.AnnotationShardFiles], &n)
			members += n
		case artifact.MediaTypeModelDatasetRaw:
			raws++
			if f.Path != "train/big.bin" {
				t.Errorf("raw layer %s", f.Path)
			}
		}
	}
	if raws != 1 || members != 1000 {
		t.Errorf("%d raw layers, %d files in shards", raws, members)
	}
	// 1000 files in ~1 MiB of 128 KiB shards: a handful of layers, not 1000.
	if shards < 8 || shards > 40 {
		t.Errorf("%d shards", shards)
	}
	// Deterministic.
	again, _ := packDataset(t, memory.New(), dir, opts)
	if again.Digest != desc.Digest {
		t.Error("packing the same dataset twice gave two digests")
	}
}

func TestPackDatasetNewVersionChangesOneShard(t *testing.T) {
	dir := imageTree(t, []string{"cat", "dog"}, 500)
	opts := artifact.DatasetOptions{ShardBytes: 128 << 10}
	_, before := packDataset(t, memory.New(), dir, opts)
	// Add one image in the middle of cat/ and remove one from dog/.
	os.WriteFile(filepath.Join(dir, "train", "cat", "00250a.jpg"), []byte("new cat"), 0o644)
	os.Remove(filepath.Join(dir, "train", "dog", "00100.jpg"))
	_, after := packDataset(t, memory.New(), dir, opts)

	old := map[string]bool{}
	for _, f := range before.Files {
		old[string(f.Digest)] = true
	}
	var changed int
	for _, f := range after.Files {
		if !old[string(f.Digest)] {
			changed++
		}
	}
	if changed > 2 {
		t.Errorf("%d of %d shards changed for two changed files; want at most 2", changed, len(after.Files))
	}
}

func TestPackDatasetRefusesBadConfig(t *testing.T) {
	dir := imageTree(t, []string{"cat"}, 3)
	_, err := artifact.PackDataset(context.Background(), memory.New(), dir, []byte(`{`), artifact.DatasetOptions{})
	if err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Fatalf("error %v", err)
	}
}
