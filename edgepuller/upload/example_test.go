package upload_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/upload"
	"github.com/bargeml/barge/registry"
)

// Pack a directory into a registry through a resumable repository: files of
// 8 MiB and more go up in 4 MiB chunks, and a push run again after a cut or
// a kill, with the same StateDir, continues where the registry stopped.
func Example() {
	ctx := context.Background()
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		panic(err)
	}
	defer reg.Close(ctx)
	work, _ := os.MkdirTemp("", "upload-example-")
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "update")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "model.safetensors"), make([]byte, 10<<20), 0o644)

	r, err := remote.NewRepository(reg.Host() + "/updates/node-1")
	if err != nil {
		panic(err)
	}
	r.PlainHTTP = true
	chunks := 0
	repo := upload.New(r, upload.Options{
		StateDir: filepath.Join(work, "state"),
		Progress: func(e upload.Event) {
			if e.Kind == upload.Progress {
				chunks++
			}
		},
	})
	desc, err := artifact.Pack(ctx, repo, dir, artifact.PackOptions{})
	if err != nil {
		panic(err)
	}
	if err := repo.Tag(ctx, desc, "round-1"); err != nil {
		panic(err)
	}
	fmt.Println("chunks:", chunks)
	// Output: chunks: 3
}
