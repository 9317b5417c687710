package registry_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/bargeml/barge/registry"
)

func start(t *testing.T, opts registry.Options) *registry.Registry {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	reg, err := registry.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close(context.Background()) })
	return reg
}

// client opens repo on reg as user (anonymous if empty), trusting caFile
// when the registry speaks TLS.
func client(t *testing.T, reg *registry.Registry, repo, caFile, user, password string) *remote.Repository {
	t.Helper()
	r, err := remote.NewRepository(reg.Host() + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &auth.Client{Client: &http.Client{Transport: tr}}
	if user != "" {
		c.Credential = auth.StaticCredential(reg.Host(), auth.Credential{Username: user, Password: password})
	}
	r.Client = c
	r.PlainHTTP = !reg.TLS()
	return r
}

func TestTLS(t *testing.T) {
	ctx := context.Background()
	caFile, cert, key := registry.TLSFilesForTest(t, "127.0.0.1")
	reg := start(t, registry.Options{TLSCert: cert, TLSKey: key})
	if !strings.HasPrefix(reg.URL(), "https://") {
		t.Fatalf("URL %s", reg.URL())
	}
	repo := client(t, reg, "models/m", caFile, "", "")
	desc, err := oras.PushBytes(ctx, repo, "application/octet-stream", []byte("over TLS"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := content.FetchAll(ctx, repo, desc); err != nil || string(got) != "over TLS" {
		t.Fatalf("fetch %q, %v", got, err)
	}
	// Plain HTTP gets nothing, and a client without the CA refuses the server.
	if resp, err := http.Get("http://" + reg.Addr() + "/v2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP answered 200")
		}
	}
	if _, err := http.Get(reg.URL() + "/v2/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("client without the CA: %v", err)
	}
}

// TestTLSCertificateReloaded: a renewed certificate written over the files
// is served without a restart, as cert-manager renews a mounted Secret.
func TestTLSCertificateReloaded(t *testing.T) {
	_, cert, key := registry.TLSFilesForTest(t, "127.0.0.1")
	reg := start(t, registry.Options{TLSCert: cert, TLSKey: key})
	ca2, cert2, key2 := registry.TLSFilesForTest(t, "127.0.0.1")
	for src, dst := range map[string]string{cert2: cert, key2: key} {
		b, _ := os.ReadFile(src)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The mtime check needs a change it can see.
	later := time.Now().Add(time.Minute)
	os.Chtimes(cert, later, later)
	repo := client(t, reg, "models/m", ca2, "", "")
	if _, err := oras.PushBytes(context.Background(), repo, "application/octet-stream", []byte("renewed")); err != nil {
		t.Fatalf("push trusting only the new CA: %v", err)
	}
}

// TestReadOnlyUsers: anonymous requests get 401, a read-only user pulls but
// its push is refused with 403 and stores nothing, a read-write user pushes.
func TestReadOnlyUsers(t *testing.T) {
	ctx := context.Background()
	reg := start(t, registry.Options{
		Htpasswd:         registry.HtpasswdForTest(t, map[string]string{"ci": "push-pw"}),
		HtpasswdReadOnly: registry.HtpasswdForTest(t, map[string]string{"edge": "pull-pw"}),
	})
	rw := client(t, reg, "models/m", "", "ci", "push-pw")
	ro := client(t, reg, "models/m", "", "edge", "pull-pw")
	anon := client(t, reg, "models/m", "", "", "")
	wrong := client(t, reg, "models/m", "", "edge", "push-pw")

	pushed, err := oras.PushBytes(ctx, rw, "application/octet-stream", []byte("from ci"))
	if err != nil {
		t.Fatalf("read-write push: %v", err)
	}
	if got, err := content.FetchAll(ctx, ro, pushed); err != nil || string(got) != "from ci" {
		t.Fatalf("read-only pull: %q, %v", got, err)
	}

	evil := []byte("planted by a stolen pull credential")
	_, err = oras.PushBytes(ctx, ro, "application/octet-stream", evil)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "may only pull") {
		t.Fatalf("read-only push: %v, want 403 saying the user may only pull", err)
	}
	for name, c := range map[string]*remote.Repository{"anonymous": anon, "wrong password": wrong} {
		// oras-go turns the 401 of an anonymous request into "basic
		// credential not found".
		if _, err := oras.PushBytes(ctx, c, "application/octet-stream", evil); err == nil || !(strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "credential not found")) {
			t.Errorf("%s push: %v, want 401", name, err)
		}
		if _, err := content.FetchAll(ctx, c, pushed); err == nil {
			t.Errorf("%s pull succeeded", name)
		}
	}
	if ok, err := rw.Blobs().Exists(ctx, content.NewDescriptorFromBytes("application/octet-stream", evil)); err != nil || ok {
		t.Errorf("refused blob stored: exists=%v, %v", ok, err)
	}
	// Tagging is a write too.
	if err := ro.Tag(ctx, pushed, "latest"); err == nil {
		t.Error("read-only user moved a tag")
	}

	resp, err := http.Get(reg.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("anonymous /v2/: %d %q, want 401 with a Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// TestHtpasswdReloaded: users added to or removed from the file take
// effect without a restart, including one whose password was cached.
func TestHtpasswdReloaded(t *testing.T) {
	ctx := context.Background()
	file := registry.HtpasswdForTest(t, map[string]string{"ci": "old"})
	reg := start(t, registry.Options{Htpasswd: file})
	if _, err := oras.PushBytes(ctx, client(t, reg, "m", "", "ci", "old"), "text/plain", []byte("1")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(registry.HtpasswdForTest(t, map[string]string{"ci2": "new"}))
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(file, later, later)
	if _, err := oras.PushBytes(ctx, client(t, reg, "m", "", "ci", "old"), "text/plain", []byte("2")); err == nil {
		t.Error("a removed user still pushes")
	}
	if _, err := oras.PushBytes(ctx, client(t, reg, "m", "", "ci2", "new"), "text/plain", []byte("3")); err != nil {
		t.Errorf("an added user: %v", err)
	}
}

func TestDeleteOffByDefault(t *testing.T) {
	ctx := context.Background()
	for _, enabled := range []bool{false, true} {
		reg := start(t, registry.Options{EnableDelete: enabled})
		repo := client(t, reg, "models/m", "", "", "")
		blob, err := oras.PushBytes(ctx, repo, "text/plain", []byte("weights"))
		if err != nil {
			t.Fatal(err)
		}
		man, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "application/vnd.test", oras.PackManifestOptions{Layers: []ocispec.Descriptor{blob}})
		if err != nil {
			t.Fatal(err)
		}
		err = repo.Delete(ctx, man)
		if enabled {
			if err != nil {
				t.Errorf("delete with EnableDelete: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "405") {
			t.Errorf("delete by default: %v, want 405", err)
		}
		if err := repo.Blobs().Delete(ctx, blob); err == nil {
			t.Error("blob delete accepted by default")
		}
		if _, err := repo.Resolve(ctx, man.Digest.String()); err != nil {
			t.Errorf("manifest gone after a refused delete: %v", err)
		}
	}
}

// TestUploadSecretPerStart: upload state is signed with a secret made at
// start, so state from one registry is refused by another on the same
// storage (it was a constant: any state could be forged), unless both were
// given the same secret, as replicas need.
func TestUploadSecretPerStart(t *testing.T) {
	for _, shared := range []string{"", "a-secret-shared-by-replicas"} {
		root := t.TempDir()
		a := start(t, registry.Options{Root: root, Secret: shared})
		b := start(t, registry.Options{Root: root, Secret: shared})
		resp, err := http.Post(a.URL()+"/v2/m/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusAccepted || !strings.Contains(loc, "_state=") {
			t.Fatalf("start upload: %d %q", resp.StatusCode, loc)
		}
		loc = strings.Replace(loc, a.Addr(), b.Addr(), 1)
		if !strings.HasPrefix(loc, "http") {
			loc = b.URL() + loc
		}
		data := []byte("chunk")
		req, _ := http.NewRequest(http.MethodPut, loc+"&digest="+content.NewDescriptorFromBytes("", data).Digest.String(), bytes.NewReader(data))
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if shared == "" && resp.StatusCode < 400 {
			t.Errorf("registry b accepted upload state signed by a: %d %s", resp.StatusCode, body)
		}
		if shared != "" && resp.StatusCode != http.StatusCreated {
			t.Errorf("with a shared secret: %d %s", resp.StatusCode, body)
		}
	}
}

func TestListenNeedsTLSAndAuthBeyondLoopback(t *testing.T) {
	_, cert, key := registry.TLSFilesForTest(t, "127.0.0.1")
	users := registry.HtpasswdForTest(t, map[string]string{"ci": "pw"})
	for _, tc := range []struct {
		name string
		opts registry.Options
		want string // "" means it starts
	}{
		{"loopback v4", registry.Options{Addr: "127.0.0.1:0"}, ""},
		{"loopback v6", registry.Options{Addr: "[::1]:0"}, ""},
		{"localhost", registry.Options{Addr: "localhost:0"}, ""},
		{"every interface, nothing", registry.Options{Addr: ":0"}, "no TLS and no auth"},
		{"0.0.0.0, auth only", registry.Options{Addr: "0.0.0.0:0", Htpasswd: users}, "has no TLS,"},
		{"0.0.0.0, TLS only", registry.Options{Addr: "0.0.0.0:0", TLSCert: cert, TLSKey: key}, "has no auth,"},
		{"0.0.0.0, TLS and auth", registry.Options{Addr: "0.0.0.0:0", TLSCert: cert, TLSKey: key, Htpasswd: users}, ""},
		{"0.0.0.0, insecure on purpose", registry.Options{Addr: "0.0.0.0:0", InsecureListen: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := registry.Start(context.Background(), tc.opts)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				reg.Close(context.Background())
				return
			}
			if !errors.Is(err, registry.ErrInsecureListen) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInsecureListen saying %q", err, tc.want)
			}
		})
	}
}

func TestStartRefusesBadSecurityFiles(t *testing.T) {
	both := registry.HtpasswdForTest(t, map[string]string{"edge": "pw"})
	md5 := t.TempDir() + "/md5"
	os.WriteFile(md5, []byte("edge:$apr1$x$y\n"), 0o600)
	_, cert, _ := registry.TLSFilesForTest(t, "127.0.0.1")
	for _, tc := range []struct {
		name string
		opts registry.Options
		want string
	}{
		{"user in both files", registry.Options{Htpasswd: both, HtpasswdReadOnly: both}, `user "edge" is in both`},
		{"not bcrypt", registry.Options{Htpasswd: md5}, `line 1: user "edge": not a bcrypt hash`},
		{"missing htpasswd", registry.Options{HtpasswdReadOnly: "/nonexistent/htpasswd"}, "/nonexistent/htpasswd"},
		{"cert without key", registry.Options{TLSCert: cert}, "both a TLS certificate and its key"},
		{"key is not a key", registry.Options{TLSCert: cert, TLSKey: cert}, "TLS certificate " + cert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Addr = "127.0.0.1:0"
			reg, err := registry.Start(context.Background(), tc.opts)
			if err == nil {
				reg.Close(context.Background())
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}
