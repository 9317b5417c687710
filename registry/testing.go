package registry

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
)

// StartForTest starts a registry on a free loopback port, storing in a
// temporary directory, and stops it when the test ends. Disk, not memory:
// distribution's in-memory driver copies a blob on every chunk appended, and
// takes seconds for what the filesystem does in milliseconds.
func StartForTest(tb testing.TB) *Registry {
	tb.Helper()
	r, err := Start(context.Background(), Options{Addr: "127.0.0.1:0", Root: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start registry: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			tb.Errorf("stop registry: %v", err)
		}
	})
	return r
}

// PushForTest writes files (relative path → content) into a new directory,
// packs them as a model into repo on r, tags the manifest, and returns its
// descriptor.
func (r *Registry) PushForTest(tb testing.TB, repo, tag string, files map[string]string) ocispec.Descriptor {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	target, err := remote.NewRepository(r.Host() + "/" + repo)
	if err != nil {
		tb.Fatal(err)
	}
	target.PlainHTTP = true
	desc, err := artifact.Pack(ctx, target, dir, artifact.PackOptions{})
	if err != nil {
		tb.Fatalf("push %s: %v", repo, err)
	}
	if err := target.Tag(ctx, desc, tag); err != nil {
		tb.Fatalf("tag %s:%s: %v", repo, tag, err)
	}
	return desc
}
