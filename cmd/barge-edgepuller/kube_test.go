package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/internal/testenv"
)

// controlPlane starts on the first test that needs it, so the standalone tests do
// not wait for it.
var controlPlane testenv.Lazy

// The flags choose exactly one mode, and say so when they do not.
func TestModeFlags(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		env       map[string]string
		code      int
		wantError string
	}{
		{"both modes", []string{"--desired", "d.yaml", "--kubeconfig", "k"}, nil, 2, "--desired (standalone mode) and --kubeconfig (Kubernetes mode) exclude each other"},
		{"node name in standalone mode", []string{"--desired", "d.yaml", "--node-name", "edge-1"}, nil, 2, "--node-name is for the Kubernetes mode"},
		{"no mode", nil, nil, 2, "choose a mode: --desired FILE.yaml (standalone), or --kubeconfig FILE --node-name NODE"},
		{"no node name", []string{"--kubeconfig", "k"}, nil, 2, "needs --node-name NODE or $NODE_NAME"},
		{"in cluster, no node name", nil, map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, 2, "needs --node-name NODE or $NODE_NAME"},
		{"missing kubeconfig", []string{"--kubeconfig", "/nonexistent/kubeconfig"}, map[string]string{"NODE_NAME": "edge-1"}, 1, "kubeconfig /nonexistent/kubeconfig"},
		{"in cluster without its files", nil, map[string]string{"NODE_NAME": "edge-1", "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, 1, "in-cluster configuration"},
		{"arguments", []string{"--desired", "d.yaml", "extra"}, nil, 2, "no arguments are taken"},
		{"negative API rate", []string{"--kubeconfig", "k", "--node-name", "edge-1", "--kube-api-qps", "-1"}, nil, 2, "--kube-api-qps -1: give requests per second, or 0 for no client-side limit"},
		{"no API burst", []string{"--kubeconfig", "k", "--node-name", "edge-1", "--kube-api-burst", "0"}, nil, 2, "--kube-api-burst 0: must be at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NODE_NAME", "")
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			code := run(append([]string{"--root", t.TempDir(), "--metrics-addr", ""}, tc.args...), &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.wantError) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr.String(), tc.code, tc.wantError)
			}
		})
	}
}

// The built binary in Kubernetes mode materializes its node's NodeArtifact,
// reports it Ready in the API, and removes the files then the finalizer
// when it is deleted.
func TestDaemonKubernetesMode(t *testing.T) {
	e := controlPlane.Env(t)
	s := newSite(t)
	m, size := s.push("models/resnet", "1.0", map[string]string{"model.onnx": "resnet v1"})
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, e.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := e.Namespace(t)
	na := &v1alpha1.NodeArtifact{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "resnet",
			Labels: map[string]string{v1alpha1.NodeLabel: "edge-1"}, Finalizers: []string{"barge.dev/files"}},
		Spec: v1alpha1.NodeArtifactSpec{NodeName: "edge-1", Reference: s.host + "/models/resnet@" + m.String(), Digest: m.String(), Insecure: true},
	}
	if err := e.Client.Create(ctx, na); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NODE_NAME", "edge-1") // the DaemonSet's way: no --node-name
	d := s.startArgs("--root", s.root, "--kubeconfig", kubeconfig, "--metrics-addr", "127.0.0.1:0", "--log-level", "debug")

	key := client.ObjectKeyFromObject(na)
	waitFor(t, "the NodeArtifact Ready in the API", func() bool {
		return e.Client.Get(ctx, key, na) == nil && na.Status.Phase == v1alpha1.NodeArtifactReady
	})
	dir := filepath.Join(s.root, "artifacts", ns, "resnet")
	if st := na.Status; st.Digest != m.String() || st.Path != filepath.Join(dir, "current") || st.ObservedGeneration != 1 || st.BytesTotal <= 0 || st.BytesTotal >= size {
		t.Errorf("status %+v: want digest %s, path %s/current, observedGeneration 1, the layers' bytes", st, m, dir)
	}
	if got := s.mustRead(ns+"/resnet", "model.onnx"); got != "resnet v1" {
		t.Errorf("current/model.onnx = %q", got)
	}
	d.waitReady(ns+"/resnet", m)

	if err := e.Client.Delete(ctx, na); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the NodeArtifact gone", func() bool { return e.Client.Get(ctx, key, na) != nil })
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the files are still there after the finalizer went (%v)", err)
	}
	d.stop()
}
