package fetch_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/registry"
	"oras.land/oras-go/v2/registry/remote"
)

// Pull a model into the node's blob store, then again: the second pull
// only asks the registry which digest v1 is.
func ExamplePull() {
	ctx := context.Background()
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close(ctx)
	dir, _ := os.MkdirTemp("", "model")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("weights"), 0o644)
	os.WriteFile(filepath.Join(dir, "labels.txt"), []byte("cat\ndog\n"), 0o644)
	repo, _ := remote.NewRepository(reg.Host() + "/models/pets")
	repo.PlainHTTP = true
	desc, err := artifact.Pack(ctx, repo, dir, artifact.PackOptions{})
	if err != nil {
		log.Fatal(err)
	}
	repo.Tag(ctx, desc, "v1")

	st, _ := store.Open(filepath.Join(dir, "store"), store.Options{})
	for range 2 {
		_, a, res, err := fetch.Pull(ctx, st, reg.Host()+"/models/pets:v1", fetch.Options{PlainHTTP: true})
		if err != nil {
			log.Fatal(err)
		}
		for _, f := range a.Files {
			fmt.Println(f.Path, f.Size)
		}
		fmt.Println("downloaded:", res.Fetched == a.Size, "reused:", res.Reused == a.Size)
	}
	// Output:
	// labels.txt 8
	// model.onnx 7
	// downloaded: true reused: false
	// labels.txt 8
	// model.onnx 7
	// downloaded: false reused: true
}
