package unpack_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bargeml/barge/edgepuller/unpack"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// blobDir is the smallest BlobSource: blobs named by their digest.
type blobDir string

func (b blobDir) BlobPath(d digest.Digest) string { return filepath.Join(string(b), d.Encoded()) }

func (b blobDir) add(title string, content []byte) ocispec.Descriptor {
	d := digest.FromBytes(content)
	os.WriteFile(b.BlobPath(d), content, 0o444)
	return ocispec.Descriptor{
		MediaType:   "application/vnd.cncf.model.weight.v1.raw",
		Digest:      d,
		Size:        int64(len(content)),
		Annotations: map[string]string{ocispec.AnnotationTitle: title},
	}
}

// A node activates a new model version, then collects the old one.
func ExampleActivate() {
	tmp, _ := os.MkdirTemp("", "unpack-example-")
	defer os.RemoveAll(tmp)
	store, root := blobDir(filepath.Join(tmp, "blobs")), filepath.Join(tmp, "artifact")
	os.Mkdir(string(store), 0o755)
	ctx := context.Background()

	v1 := []ocispec.Descriptor{store.add("model/weights.bin", []byte("v1"))}
	v2 := []ocispec.Descriptor{store.add("model/weights.bin", []byte("v2"))}
	m1, m2 := digest.FromString("manifest v1"), digest.FromString("manifest v2")

	unpack.Activate(ctx, store, v1, root, m1, unpack.Options{})
	unpack.Activate(ctx, store, v2, root, m2, unpack.Options{})
	b, _ := os.ReadFile(filepath.Join(root, "current", "model", "weights.bin"))
	fmt.Printf("current: %s\n", b)

	err := unpack.Remove(root, m2)
	fmt.Println("remove current refused:", errors.Is(err, unpack.ErrInUse))
	fmt.Println("remove previous:", unpack.Remove(root, m1))
	versions, _ := unpack.Versions(root)
	fmt.Println("versions left:", len(versions))
	// Output:
	// current: v2
	// remove current refused: true
	// remove previous: <nil>
	// versions left: 1
}
