package controllers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/registry"
)

func TestIsRange(t *testing.T) {
	for v, want := range map[string]bool{
		"1.0.0": false, "latest": false, "v2": false, "2024-01-05": false, "1.0.0-rc.1": false,
		">=1.2 <2": true, "^1.2": true, "~1.2.3": true, "1.x": true, "1.2.X": true, "*": true, ">=1.0, <2.0": true, "1.2 - 1.4": true,
	} {
		if got := isRange(v); got != want {
			t.Errorf("isRange(%q) = %v, want %v", v, got, want)
		}
	}
}

// countingTransport counts registry requests by method and path kind, and
// the most that were in flight at once.
type countingTransport struct {
	mu                    sync.Mutex
	counts                map[string]int
	inFlight, maxInFlight int
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := "other"
	switch {
	case strings.Contains(req.URL.Path, "/manifests/"):
		kind = "manifest"
	case strings.HasSuffix(req.URL.Path, "/tags/list"):
		kind = "tags"
	case strings.Contains(req.URL.Path, "/blobs/"):
		kind = "blob"
	case strings.Contains(req.URL.Path, "/referrers/"):
		kind = "referrers"
	}
	c.mu.Lock()
	c.counts[req.Method+" "+kind]++
	c.inFlight++
	c.maxInFlight = max(c.maxInFlight, c.inFlight)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}()
	return http.DefaultTransport.RoundTrip(req)
}

func (c *countingTransport) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = map[string]int{}
	return out
}

// TestResolveRequests proves the registry cost of each kind of version: a
// tag or a digest is one HEAD and never a tag list; only a range lists tags.
func TestResolveRequests(t *testing.T) {
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	d := pushModel(t, repo, "1.0.0", map[string]string{"m.onnx": "1"}, artifact.Metadata{})
	pushModel(t, repo, "1.1.0", map[string]string{"m.onnx": "2"}, artifact.Metadata{})

	counter := &countingTransport{counts: map[string]int{}}
	r := &Resolver{HTTPClient: &http.Client{Transport: counter}}
	for _, tt := range []struct {
		version string
		want    map[string]int
	}{
		{"1.0.0", map[string]int{"HEAD manifest": 1}},
		{d.Digest.String(), map[string]int{"HEAD manifest": 1}},
		{"~1.0", map[string]int{"GET tags": 1, "HEAD manifest": 1}},
	} {
		src := source{Repository: ref, Version: tt.version, Insecure: true}
		repo, err := r.open(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.resolve(context.Background(), repo, src); err != nil {
			t.Fatalf("%s: %v", tt.version, err)
		}
		if got := counter.take(); !equalCounts(got, tt.want) {
			t.Errorf("resolve %s: requests %v, want %v", tt.version, got, tt.want)
		}
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestInspectCached: a digest's manifest is read once; passes between
// intervals reuse it without any request.
func TestInspectCached(t *testing.T) {
	ref := repoName(t, "m")
	d := pushModel(t, openRepo(t, ref), "1.0.0", map[string]string{"m.onnx": "1"}, artifact.Metadata{})
	counter := &countingTransport{counts: map[string]int{}}
	r := &Resolver{HTTPClient: &http.Client{Transport: counter}}
	src := source{Repository: ref, Version: "1.0.0", Insecure: true}
	for i := 0; i < 3; i++ {
		var repo *remote.Repository
		in, err := r.inspect(context.Background(), &repo, src, resolutionOf(&v1alpha1.ResolvedArtifact{Digest: d.Digest.String()}).Descriptor)
		if err != nil {
			t.Fatal(err)
		}
		if in.Artifact.Kind != artifact.KindModel || in.contentSize <= 0 {
			t.Fatalf("inspected %+v", in.Artifact)
		}
	}
	// One HEAD for the descriptor, one GET of the manifest, one of the config.
	if got := counter.take(); got["HEAD manifest"] != 1 || got["GET manifest"] != 1 || got["GET blob"] != 1 {
		t.Errorf("three inspections cost %v, want one of each", got)
	}
}

// htpasswdRegistry starts a registry that wants robot:s3cret.
func htpasswdRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(file, []byte("robot:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := registry.Start(context.Background(), registry.Options{Addr: "127.0.0.1:0", Root: t.TempDir(), Htpasswd: file})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// dockerConfigSecret is a kubernetes.io/dockerconfigjson Secret for host.
func dockerConfigSecret(ns, name, host, user, password string) *corev1.Secret {
	cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
	}}})
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: cfg},
	}
}

// TestPullSecret: resolution uses the credentials of spec.pullSecretRef, and
// each way of getting them wrong gives a message that says what to fix.
func TestPullSecret(t *testing.T) {
	secure := htpasswdRegistry(t)
	ref := secure.Host() + "/private/model"
	repo := openRepo(t, ref)
	repo.Client = &auth.Client{Credential: auth.StaticCredential(secure.Host(), auth.Credential{Username: "robot", Password: "s3cret"})}
	d := pushModel(t, repo, "1.0.0", map[string]string{"m.onnx": "secret weights"}, artifact.Metadata{})

	ns := env.Namespace(t)
	create(t, dockerConfigSecret(ns, "good", secure.Host(), "robot", "s3cret"))
	create(t, dockerConfigSecret(ns, "wrong", secure.Host(), "robot", "guess"))
	opaque := dockerConfigSecret(ns, "opaque", secure.Host(), "robot", "s3cret")
	opaque.Type = corev1.SecretTypeOpaque
	create(t, opaque)

	r := &Resolver{Secrets: k8s}
	for _, tt := range []struct {
		secret      string
		wantReason  string
		wantMessage string
		stalled     bool
	}{
		{secret: "good"},
		{secret: "", wantReason: ReasonUnauthorized, wantMessage: "set spec.pullSecretRef"},
		{secret: "wrong", wantReason: ReasonUnauthorized, wantMessage: "refused the credentials of secret " + ns + "/wrong"},
		{secret: "absent", wantReason: ReasonPullSecretNotFound, wantMessage: "secret " + ns + "/absent named by spec.pullSecretRef does not exist"},
		{secret: "opaque", wantReason: ReasonInvalidPullSecret, wantMessage: "it must be kubernetes.io/dockerconfigjson", stalled: true},
	} {
		t.Run("secret="+tt.secret, func(t *testing.T) {
			src := source{Namespace: ns, Repository: ref, Version: "1.0.0", Insecure: true}
			if tt.secret != "" {
				src.PullSecret = &v1alpha1.LocalObjectReference{Name: tt.secret}
			}
			res, err := func() (resolution, error) {
				repo, err := r.open(context.Background(), src)
				if err != nil {
					return resolution{}, err
				}
				return r.resolve(context.Background(), repo, src)
			}()
			if tt.wantReason == "" {
				if err != nil || res.Descriptor.Digest != d.Digest {
					t.Fatalf("resolve with secret: %v, %v", res.Descriptor.Digest, err)
				}
				return
			}
			var f *failure
			if !errors.As(err, &f) || f.reason != tt.wantReason || f.stalled != tt.stalled || !strings.Contains(f.message, tt.wantMessage) {
				t.Fatalf("error %#v, want reason %s (stalled %v) with %q", err, tt.wantReason, tt.stalled, tt.wantMessage)
			}
		})
	}
}

// TestControllerCredentials: the controller's own credentials (its
// --registry-config, the chart's read-only pull user) reach a registry for
// objects that name no pull secret, only for the host they are for; a pull
// secret, when named, replaces them.
func TestControllerCredentials(t *testing.T) {
	secure := htpasswdRegistry(t)
	ref := secure.Host() + "/private/own"
	repo := openRepo(t, ref)
	repo.Client = &auth.Client{Credential: auth.StaticCredential(secure.Host(), auth.Credential{Username: "robot", Password: "s3cret"})}
	d := pushModel(t, repo, "1.0.0", map[string]string{"m.onnx": "secret weights"}, artifact.Metadata{})
	ns := env.Namespace(t)
	create(t, dockerConfigSecret(ns, "wrong", secure.Host(), "robot", "guess"))

	store := func(host string) credentials.Store {
		s := credentials.NewMemoryStore()
		if err := s.Put(context.Background(), host, auth.Credential{Username: "robot", Password: "s3cret"}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tt := range []struct {
		name       string
		creds      credentials.Store
		secret     string
		wantReason string
	}{
		{name: "own credentials, no pull secret", creds: store(secure.Host())},
		{name: "own credentials for another host", creds: store("registry.example.com"), wantReason: ReasonUnauthorized},
		{name: "a pull secret replaces them", creds: store(secure.Host()), secret: "wrong", wantReason: ReasonUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &Resolver{Secrets: k8s, Credentials: tt.creds}
			src := source{Namespace: ns, Repository: ref, Version: "1.0.0", Insecure: true}
			if tt.secret != "" {
				src.PullSecret = &v1alpha1.LocalObjectReference{Name: tt.secret}
			}
			repo, err := r.open(context.Background(), src)
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.resolve(context.Background(), repo, src)
			if tt.wantReason == "" {
				if err != nil || res.Descriptor.Digest != d.Digest {
					t.Fatalf("resolve with the controller's credentials: %v, %v", res.Descriptor.Digest, err)
				}
				return
			}
			var f *failure
			if !errors.As(err, &f) || f.reason != tt.wantReason {
				t.Fatalf("error %#v, want reason %s", err, tt.wantReason)
			}
		})
	}
}

// TestReresolveOneHead: re-resolving an unchanged tag costs the registry
// one HEAD: the manifest is cached by digest, and so are its metrics until
// MetricsRefresh has passed, when the referrers are read again and metrics
// attached meanwhile show.
func TestReresolveOneHead(t *testing.T) {
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	d := pushModel(t, repo, "1.0.0", map[string]string{"m.onnx": "1"}, artifact.Metadata{})
	attach(t, repo, d, map[string]float64{"accuracy": 0.5})
	counter := &countingTransport{counts: map[string]int{}}
	r := &Resolver{HTTPClient: &http.Client{Transport: counter}, MetricsRefresh: time.Hour}
	src := source{Repository: ref, Version: "1.0.0", Insecure: true}
	pass := func() map[string]string {
		t.Helper()
		repo, err := r.open(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		res, err := r.resolve(context.Background(), repo, src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.inspect(context.Background(), &repo, src, res.Descriptor); err != nil {
			t.Fatal(err)
		}
		m, err := r.metrics(context.Background(), repo, src, res.Descriptor)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := pass(); m["accuracy"] != "0.5" {
		t.Fatalf("first pass: metrics %v", m)
	}
	counter.take()
	attach(t, repo, d, map[string]float64{"accuracy": 0.75})
	for i := range 3 {
		if m := pass(); m["accuracy"] != "0.5" {
			t.Errorf("re-resolve %d: metrics %v; want those read first, until MetricsRefresh", i, m)
		}
		if got := counter.take(); !equalCounts(got, map[string]int{"HEAD manifest": 1}) {
			t.Errorf("re-resolve %d of an unchanged tag: requests %v; want one HEAD", i, got)
		}
	}
	r.MetricsRefresh = time.Nanosecond
	if m := pass(); m["accuracy"] != "0.75" {
		t.Errorf("after MetricsRefresh: metrics %v; want the newest attached", m)
	}
}
