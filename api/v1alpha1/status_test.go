package v1alpha1_test

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1alpha1 "github.com/bargeml/barge/api/v1alpha1"
)

// TestStatusSubresource: the controller's status writes cannot change what the
// user asked for, and the user's spec writes cannot change the status.
func TestStatusSubresource(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	m := &bargev1alpha1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "resnet"},
		Spec:       bargev1alpha1.InferenceModelSpec{Artifact: "registry.example.com/models/resnet50", TargetVersion: "1.0.0"},
	}
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	if m.Generation != 1 {
		t.Fatalf("generation = %d, want 1", m.Generation)
	}

	// A status update that also carries a spec change keeps the spec.
	m.Spec.TargetVersion = "2.0.0"
	m.Status = bargev1alpha1.InferenceModelStatus{
		ObservedGeneration: 1,
		Resolved:           &bargev1alpha1.ResolvedArtifact{Version: "1.0.0", Digest: digestA, ShortDigest: digestA[7:19]},
		Metrics:            map[string]string{"accuracy": "0.913"},
		Nodes:              bargev1alpha1.NodeCounts{Desired: 3, Ready: 2},
		Conditions: []metav1.Condition{{Type: bargev1alpha1.ReadyCondition, Status: metav1.ConditionFalse,
			Reason: "Progressing", Message: "2 of 3 nodes ready", LastTransitionTime: metav1.Now(), ObservedGeneration: 1}},
	}
	if err := env.Client.Status().Update(ctx, m); err != nil {
		t.Fatalf("status update: %v", err)
	}
	got := get(t, client.ObjectKeyFromObject(m), &bargev1alpha1.InferenceModel{})
	if got.Spec.TargetVersion != "1.0.0" {
		t.Errorf("status update changed spec.targetVersion to %q", got.Spec.TargetVersion)
	}
	if got.Generation != 1 {
		t.Errorf("status update bumped generation to %d", got.Generation)
	}
	if got.Status.Resolved == nil || got.Status.Resolved.Digest != digestA || got.Status.Metrics["accuracy"] != "0.913" ||
		got.Status.Nodes.Ready != 2 || len(got.Status.Conditions) != 1 {
		t.Errorf("status not stored: %+v", got.Status)
	}

	// A spec update that also carries a status change keeps the status.
	got.Spec.TargetVersion = "2.0.0"
	got.Status.Nodes.Ready = 3
	got.Status.Conditions = nil
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatalf("update: %v", err)
	}
	again := get(t, client.ObjectKeyFromObject(m), &bargev1alpha1.InferenceModel{})
	if again.Spec.TargetVersion != "2.0.0" || again.Generation != 2 {
		t.Errorf("spec update: targetVersion %q generation %d, want 2.0.0 and 2", again.Spec.TargetVersion, again.Generation)
	}
	if again.Status.Nodes.Ready != 2 || len(again.Status.Conditions) != 1 {
		t.Errorf("spec update changed status: %+v", again.Status)
	}
}

func TestNodeArtifactUpdates(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	na := &bargev1alpha1.NodeArtifact{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "resnet-edge-1", Labels: map[string]string{bargev1alpha1.NodeLabel: "edge-1"}},
		Spec: bargev1alpha1.NodeArtifactSpec{NodeName: "edge-1", Digest: digestA,
			Reference: "registry.example.com/models/resnet50@" + digestA},
	}
	if err := env.Client.Create(ctx, na); err != nil {
		t.Fatal(err)
	}

	// The puller reports progress through the status subresource only.
	na.Status = bargev1alpha1.NodeArtifactStatus{Phase: bargev1alpha1.NodeArtifactPulling, BytesDone: 10, BytesTotal: 100}
	if err := env.Client.Status().Update(ctx, na); err != nil {
		t.Fatalf("status update: %v", err)
	}

	bad := na.DeepCopy()
	bad.Status.Phase = "Done"
	err := env.Client.Status().Update(ctx, bad)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), `status.phase: Unsupported value: "Done"`) {
		t.Errorf("phase Done: want Unsupported value, got %v", err)
	}

	moved := na.DeepCopy()
	moved.Spec.NodeName = "edge-2"
	err = env.Client.Update(ctx, moved)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.nodeName is immutable") {
		t.Errorf("nodeName change: want immutable, got %v", err)
	}

	// A new digest for the same node is how the controller rolls out.
	const digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	next := get(t, client.ObjectKeyFromObject(na), &bargev1alpha1.NodeArtifact{})
	next.Spec.Digest, next.Spec.Reference = digestB, "registry.example.com/models/resnet50@"+digestB
	if err := env.Client.Update(ctx, next); err != nil {
		t.Fatalf("new digest: %v", err)
	}
	if next.Status.BytesDone != 10 {
		t.Errorf("spec update changed status: %+v", next.Status)
	}

	// Each puller lists only its own node's objects.
	var list bargev1alpha1.NodeArtifactList
	if err := env.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{bargev1alpha1.NodeLabel: "edge-1"}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Errorf("list by node label: %d items, want 1", len(list.Items))
	}
}
