package store_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/bargeml/barge/edgepuller/store"
)

// A download that drops is resumed with an HTTP Range request from
// Writer.Offset; a second pull of the same blob finds it already there.
func ExampleStore_Writer() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "store-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	s, err := store.Open(root, store.Options{CheckpointBytes: 4})
	if err != nil {
		log.Fatal(err)
	}
	blob := []byte("weights of a very small model")
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(blob), Size: int64(len(blob))}

	w, err := s.Writer(ctx, desc)
	if err != nil {
		log.Fatal(err)
	}
	w.Write(blob[:10]) // then the connection drops
	w.Close()          // keeps the partial

	w, err = s.Writer(ctx, desc) // later, perhaps after a restart
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("Range: bytes=%d-\n", w.Offset())
	w.Write(blob[w.Offset():])
	if err := w.Commit(ctx); err != nil {
		log.Fatal(err)
	}

	err = s.Push(ctx, desc, strings.NewReader(string(blob)))
	fmt.Println("second pull:", errors.Is(err, errdef.ErrAlreadyExists))
	// Output:
	// Range: bytes=10-
	// second pull: true
}
