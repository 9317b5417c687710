package e2e

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/registry"
)

// tags lists a repository's tags, to prove that a refused push changed nothing.
func tags(t *testing.T, host, repo string) []string {
	t.Helper()
	r, err := remote.NewRepository(host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	var out []string
	err = r.Tags(context.Background(), "", func(page []string) error { out = append(out, page...); return nil })
	if err != nil && !strings.Contains(err.Error(), "NAME_UNKNOWN") && !strings.Contains(err.Error(), "404") {
		t.Fatal(err)
	}
	return out
}

func TestPushRefusesBadDirectories(t *testing.T) {
	reg := registry.StartForTest(t)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("do not share"), 0o600)
	tests := []struct {
		name  string
		setup func(dir string) string
		want  string
	}{
		{"missing directory", func(dir string) string { return filepath.Join(dir, "nope") }, "no such directory"},
		{"empty directory", func(dir string) string { return dir }, "the directory has no files"},
		{"symlink outside", func(dir string) string {
			writeTree(t, dir, map[string]string{"model.onnx": "w"})
			os.Symlink(secret, filepath.Join(dir, "leak"))
			return dir
		}, "points outside the directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := barge(t, "push", tt.setup(t.TempDir()), reg.Host()+"/models/bad:1")
			if r.err == nil || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("want an error with %q: %s", tt.want, r)
			}
			if got := tags(t, reg.Host(), "models/bad"); len(got) != 0 {
				t.Errorf("a refused push left tags %v", got)
			}
		})
	}
}

func TestPullErrorsChangeNothing(t *testing.T) {
	reg := registry.StartForTest(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"w.bin": "w"})
	must(t, barge(t, "push", src, reg.Host()+"/models/m:1"))

	// A port nothing listens on.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := ln.Addr().String()
	ln.Close()

	tests := []struct{ name, ref, want string }{
		{"unknown tag", reg.Host() + "/models/m:9", "not found: check the name, and list versions with `barge versions"},
		{"unknown repository", reg.Host() + "/models/none:1", "not found"},
		{"registry down", down + "/models/m:1", "is not reachable (connection refused): is it running?"},
		{"not a reference", "::bad::", "is not a reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out")
			r := barge(t, "pull", tt.ref, dest)
			if r.err == nil || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("want an error with %q: %s", tt.want, r)
			}
			if _, err := os.Stat(dest); !os.IsNotExist(err) {
				t.Errorf("a failed pull created %s", dest)
			}
		})
	}
}

func TestPullKeepsADirectoryItDidNotCreate(t *testing.T) {
	reg := registry.StartForTest(t)
	src := t.TempDir()
	writeTree(t, src, map[string]string{"w.bin": "w"})
	must(t, barge(t, "push", src, reg.Host()+"/models/m:1"))
	dest := t.TempDir()
	writeTree(t, dest, map[string]string{"mine.txt": "my work"})
	r := barge(t, "pull", reg.Host()+"/models/m:1", dest)
	if r.err == nil || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("pull into a directory with other files: %s", r)
	}
	sameTree(t, tree(t, dest), map[string]string{"mine.txt": "my work"})
}

// A registry cannot store a manifest over 4 MiB, so a scripted server
// announces one; barge refuses it before reading it.
func TestManifestLargerThan4MiB(t *testing.T) {
	const size = 5 << 20
	digest := "sha256:" + strings.Repeat("ab", 32)
	var gets int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.HasPrefix(r.URL.Path, "/v2/models/huge/manifests/") && r.Method == http.MethodHead:
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", digest)
			w.Header().Set("Content-Length", strconv.Itoa(size))
		case strings.HasPrefix(r.URL.Path, "/v2/models/huge/manifests/"):
			gets++
			http.Error(w, "not expected", http.StatusTeapot)
		default:
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, args := range [][]string{
		{"inspect", host + "/models/huge:1"},
		{"pull", host + "/models/huge:1", filepath.Join(t.TempDir(), "out")},
	} {
		r := barge(t, args...)
		if r.err == nil || !strings.Contains(r.stderr, "more than the 4 MiB limit") {
			t.Errorf("%s: %s", args[0], r)
		}
	}
	if gets != 0 {
		t.Errorf("the oversized manifest was fetched %d times", gets)
	}
}
