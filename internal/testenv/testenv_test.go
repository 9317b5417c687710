package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1alpha1 "github.com/bargeml/barge/api/v1alpha1"
)

var env *Env

func TestMain(m *testing.M) { os.Exit(Run(m, &env)) }

// TestServerVersion proves the kube-apiserver in bin/ was built with the
// version ldflags of the Makefile: clients and controllers that gate on the
// server version see a real release, not v0.0.0-master.
func TestServerVersion(t *testing.T) {
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.2" || v.Major != "1" || v.Minor != "37" {
		t.Errorf("server version %s (major %q minor %q), want v1.37.2 (1, 37)", v.GitVersion, v.Major, v.Minor)
	}
}

func TestCRDsServed(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	for _, list := range []client.ObjectList{&bargev1alpha1.InferenceModelList{}, &bargev1alpha1.NodeArtifactList{}, &bargev1alpha1.DatasetList{}} {
		if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
			t.Errorf("list %T: %v", list, err)
		}
	}
}

func TestNamespace(t *testing.T) {
	a, b := env.Namespace(t), env.Namespace(t)
	if a == b || !strings.HasPrefix(a, "testnamespace-") {
		t.Errorf("namespaces %q and %q: want two distinct ones named after the test", a, b)
	}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: a}, &corev1.Namespace{}); err != nil {
		t.Error(err)
	}
}

func TestMissingBinaries(t *testing.T) {
	dir := t.TempDir()
	err := checkBinaries(dir)
	if err == nil || !strings.Contains(err.Error(), "run `make tools`") || !strings.Contains(err.Error(), filepath.Join(dir, "kube-apiserver")) {
		t.Fatalf("want an error naming the missing kube-apiserver and `make tools`, got %v", err)
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkBinaries(dir); err != nil {
		t.Fatal(err)
	}
}
