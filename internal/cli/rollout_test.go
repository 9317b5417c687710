package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/internal/testenv"
)

// kube starts for the first test that needs it: most of the package's
// tests do not.
var kube testenv.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	if err := kube.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// startKube writes a kubeconfig for the package's kube-apiserver (Barge's
// CRDs installed), whose context is named "envtest".
func startKube(t *testing.T) (*testenv.Env, string) {
	t.Helper()
	e := kube.Env(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, e.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return e, kubeconfig
}

// TestRolloutResume: `barge rollout resume` sets the resume annotation of a
// paused rollout to its digest, and refuses, saying why, when there is no
// paused rollout to resume.
func TestRolloutResume(t *testing.T) {
	e, kubeconfig := startKube(t)
	ns := e.Namespace(t)
	ctx := context.Background()
	const d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	model := func(name string, rollout *v1alpha1.RolloutStatus) {
		m := &v1alpha1.InferenceModel{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       v1alpha1.InferenceModelSpec{Artifact: "registry.example.com/models/resnet", TargetVersion: "stable"},
		}
		if err := e.Client.Create(ctx, m); err != nil {
			t.Fatal(err)
		}
		if rollout == nil {
			return
		}
		// What the controller writes.
		m.Status.Rollout = rollout
		if err := e.Client.Status().Update(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	now := metav1.NewTime(time.Now())
	model("paused", &v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutPaused, Digest: d2, Version: "stable", CanaryNodes: []string{"edge-1"}, CanaryReadyAt: &now})
	model("canary", &v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutProgressing, Digest: d2, CanaryNodes: []string{"edge-1"}, Message: "canary edge-1: 0 of 1 hold"})
	model("complete", &v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutComplete, Digest: d2, Version: "stable"})
	model("halted", &v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutHalted, Digest: d2, Message: "halted stable: 1 of 3 nodes failed"})
	model("new", nil)

	stdout, stderr, err := runBarge(t, "rollout", "resume", "paused", "-n", ns, "--kubeconfig", kubeconfig)
	if err != nil || !strings.Contains(stdout, "resumed the rollout of stable ("+d2+")") {
		t.Fatalf("resume: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	m := &v1alpha1.InferenceModel{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "paused"}, m); err != nil {
		t.Fatal(err)
	}
	if got := m.Annotations[v1alpha1.ResumeRolloutAnnotation]; got != d2 {
		t.Errorf("annotation %s = %q, want %s", v1alpha1.ResumeRolloutAnnotation, got, d2)
	}

	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"canary", "is not paused: it pauses once its canary nodes [edge-1] hold it", nil},
		{"complete", "the rollout of stable (" + d2 + ") is complete: nothing to resume", nil},
		{"halted", "is Halted, not paused (halted stable: 1 of 3 nodes failed): push a fixed version or change the spec", nil},
		{"new", "no rollout yet", nil},
		{"missing", `get inferencemodel ` + ns + `/missing: inferencemodels.barge.dev "missing" not found`, nil},
		{"paused", `context "nope" does not exist`, []string{"--context", "nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"rollout", "resume", tc.name, "-n", ns, "--kubeconfig", kubeconfig}, tc.args...)
			_, _, err := runBarge(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// A model that could not be resumed keeps no annotation.
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "halted"}, m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Annotations[v1alpha1.ResumeRolloutAnnotation]; ok {
		t.Errorf("halted model annotated: %v", m.Annotations)
	}
}
