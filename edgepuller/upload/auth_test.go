package upload_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/bargeml/barge/edgepuller/upload"
	"github.com/bargeml/barge/registry"
)

// The chunked requests carry the wrapped repository's credentials: a
// registry that wants them takes the upload, and a wrong password fails at
// once with the registry's 401, not after retries.
func TestChunkedUploadUsesTheRepositoryCredentials(t *testing.T) {
	reg, err := registry.Start(context.Background(), registry.Options{
		Addr: "127.0.0.1:0", Root: t.TempDir(),
		Htpasswd: registry.HtpasswdForTest(t, map[string]string{"node": "s3cret"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		reg.Close(context.Background())
	})
	path, desc := writeRandom(t, 3<<20, 10)
	open := func(password string) *upload.Repository {
		r, err := remote.NewRepository(reg.Host() + "/updates/node-1")
		if err != nil {
			t.Fatal(err)
		}
		r.PlainHTTP = true
		r.Client = &auth.Client{
			Client:     retry.DefaultClient,
			Cache:      auth.NewCache(),
			Credential: auth.StaticCredential(reg.Host(), auth.Credential{Username: "node", Password: password}),
		}
		return upload.New(r, upload.Options{StateDir: t.TempDir(), ChunkSize: 512 << 10})
	}

	start := time.Now()
	err = open("wrong").PushFile(context.Background(), desc, path)
	var resp *errcode.ErrorResponse
	if !asErrorResponse(err, &resp) || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("with a wrong password: %v; want the registry's 401", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a refused credential took %s to fail: it was retried", d)
	}

	if err := open("s3cret").PushFile(context.Background(), desc, path); err != nil {
		t.Fatal(err)
	}
	ok, err := open("s3cret").Exists(context.Background(), desc)
	if err != nil || !ok {
		t.Fatalf("the blob is not in the registry after the push: %v", err)
	}
}
