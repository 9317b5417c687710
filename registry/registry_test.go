package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/bargeml/barge/registry"
)

func pushBlob(t *testing.T, host string, data []byte) ocispec.Descriptor {
	t.Helper()
	repo, err := remote.NewRepository(host + "/test/blob")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	desc := content.NewDescriptorFromBytes("application/octet-stream", data)
	if err := repo.Push(context.Background(), desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return desc
}

func TestRangeOnBlobs(t *testing.T) {
	reg := registry.StartForTest(t)
	data := bytes.Repeat([]byte("0123456789"), 100_000)
	desc := pushBlob(t, reg.Host(), data)

	for _, tt := range []struct {
		rng        string
		wantStatus int
		wantBody   []byte
		wantRange  string
	}{
		{"bytes=500000-", http.StatusPartialContent, data[500000:], fmt.Sprintf("bytes 500000-%d/%d", len(data)-1, len(data))},
		{"bytes=0-9", http.StatusPartialContent, data[:10], fmt.Sprintf("bytes 0-9/%d", len(data))},
		{"", http.StatusOK, data, ""},
	} {
		t.Run(tt.rng, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, reg.URL()+"/v2/test/blob/blobs/"+desc.Digest.String(), nil)
			if tt.rng != "" {
				req.Header.Set("Range", tt.rng)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if got := resp.Header.Get("Content-Range"); got != tt.wantRange {
				t.Errorf("Content-Range %q, want %q", got, tt.wantRange)
			}
			if !bytes.Equal(body, tt.wantBody) {
				t.Errorf("body of %d bytes, want %d", len(body), len(tt.wantBody))
			}
		})
	}
}

func TestFilesystemStorageSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0", Root: root})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("kept on disk")
	desc := pushBlob(t, reg.Host(), data)
	if err := reg.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reg.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if _, err := http.Get(reg.URL() + "/v2/"); err == nil {
		t.Error("registry still answers after Close")
	}

	reg2, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0", Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer reg2.Close(ctx)
	repo, _ := remote.NewRepository(reg2.Host() + "/test/blob")
	repo.PlainHTTP = true
	got, err := content.FetchAll(ctx, repo, desc)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after restart: %q, %v", got, err)
	}
}

func TestCloseWaitsForRequestsInFlight(t *testing.T) {
	ctx := context.Background()
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 8<<20)
	desc := pushBlob(t, reg.Host(), data)
	resp, err := http.Get(reg.URL() + "/v2/test/blob/blobs/" + desc.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		done <- reg.Close(cctx)
	}()
	time.Sleep(100 * time.Millisecond)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(body) != len(data) {
		t.Fatalf("a download in flight was cut by Close: %d bytes, %v", len(body), err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestStartRefusesBusyAddress(t *testing.T) {
	reg := registry.StartForTest(t)
	_, err := registry.Start(context.Background(), registry.Options{Addr: reg.Addr()})
	if err == nil || !strings.Contains(err.Error(), "pick a free port") {
		t.Fatalf("error %v", err)
	}
}

func TestHtpasswd(t *testing.T) {
	ctx := context.Background()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(file, []byte("robot:"+string(hash)+"\n"), 0o600)
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0", Htpasswd: file})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(ctx)

	repo, _ := remote.NewRepository(reg.Host() + "/secure/model")
	repo.PlainHTTP = true
	_, err = oras.PushBytes(ctx, repo, "application/octet-stream", []byte("ok"))
	if err == nil || !strings.Contains(err.Error(), "credential") {
		t.Fatalf("anonymous push: %v", err)
	}
	repo.Client = &auth.Client{Credential: auth.StaticCredential(reg.Host(), auth.Credential{Username: "robot", Password: "s3cret"})}
	if _, err := oras.PushBytes(ctx, repo, "application/octet-stream", []byte("ok")); err != nil {
		t.Fatalf("push with credentials: %v", err)
	}
}

// TestStorageDriver: a driver named with its parameters stores content as
// --root does, and a bad storage choice fails at Start with a message that
// says what to change (distribution itself would panic).
func TestStorageDriver(t *testing.T) {
	root := t.TempDir()
	reg := start(t, registry.Options{Storage: registry.Storage{Driver: "filesystem", Parameters: map[string]any{"rootdirectory": root}}})
	pushBlob(t, reg.Host(), []byte("through the named driver"))
	if _, err := os.Stat(filepath.Join(root, "docker", "registry", "v2", "blobs")); err != nil {
		t.Errorf("the filesystem driver did not write under its rootdirectory: %v", err)
	}

	for _, tc := range []struct {
		name string
		opts registry.Options
		want string
	}{
		{"unknown driver", registry.Options{Storage: registry.Storage{Driver: "gcs"}}, `unknown storage driver "gcs": this build has filesystem, inmemory, s3`},
		{"root and driver", registry.Options{Root: root, Storage: registry.Storage{Driver: "s3"}}, "a storage directory or a storage driver (s3), not both"},
		{"s3 without a bucket", registry.Options{Storage: registry.Storage{Driver: "s3", Parameters: map[string]any{"region": "us-east-1"}}}, "no bucket parameter"},
		{"s3 with a bad option", registry.Options{Storage: registry.Storage{Driver: "s3", Parameters: map[string]any{"bucket": "b", "region": "us-east-1", "forcepathstyle": "maybe"}}}, "forcepathstyle parameter should be a boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Addr = "127.0.0.1:0"
			reg, err := registry.Start(context.Background(), tc.opts)
			if err == nil {
				reg.Close(context.Background())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
