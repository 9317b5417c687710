package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// setNodeReady writes the Ready condition a kubelet (or, once it is silent,
// the node lifecycle controller) writes.
func setNodeReady(t *testing.T, name string, status corev1.ConditionStatus) {
	t.Helper()
	var node corev1.Node
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &node); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, Reason: "NodeStatusUnknown",
		Message: "Kubelet stopped posting node status.", LastHeartbeatTime: now, LastTransitionTime: now}}
	if err := k8s.Status().Update(context.Background(), &node); err != nil {
		t.Fatal(err)
	}
}

// TestDeletionWithoutPullers: a model on a node whose puller never removes
// the files, and on a NotReady node, is not deleted behind their back. The
// NotReady node is named at once and its NodeArtifact released after the
// grace period; the Ready node blocks the deletion, is named in Stalled with
// what to do, and the force-delete annotation finishes the deletion.
func TestDeletionWithoutPullers(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	pushModel(t, openRepo(t, ref), "1", map[string]string{"m.onnx": "x"}, artifact.Metadata{})
	names := nodes(t, ns, nil, 2)
	silent, down := names[0], names[1]
	m := edgeModel(ns, "m", ref, "1")
	create(t, m)
	waitNodeArtifacts(t, ns, "two NodeArtifacts", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 2 {
			return fmt.Errorf("%v", keys(nas))
		}
		return nil
	})
	setNodeReady(t, silent, corev1.ConditionTrue)
	setNodeReady(t, down, corev1.ConditionUnknown)

	deleted := time.Now()
	if err := k8s.Delete(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the NotReady node named at once", func() error {
		get(t, m)
		return conditionIs(m.Status.Conditions, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, ReasonDeleting, "NotReady: "+down+", released once they have been waited for "+testDeletionGrace.String())
	})
	na := nodeArtifacts(t, ns)[down]
	if na == nil || na.DeletionTimestamp == nil {
		t.Fatalf("the NotReady node's NodeArtifact: %+v; want it there, being deleted, until the grace period has passed (%s after the deletion)", na, time.Since(deleted))
	}
	// The API server keeps deletionTimestamp to the second: the grace period
	// runs from there.
	releasable := na.DeletionTimestamp.Add(testDeletionGrace)

	eventually(t, "the NotReady node's NodeArtifact released after the grace period", func() error {
		if na := nodeArtifacts(t, ns)[down]; na != nil {
			return fmt.Errorf("NodeArtifact %s still there, finalizers %v", na.Name, na.Finalizers)
		}
		return nil
	})
	if early := time.Until(releasable); early > 0 {
		t.Errorf("released %s before its deletionTimestamp plus the grace period of %s", early, testDeletionGrace)
	}
	eventually(t, "the silent node blocks the deletion", func() error {
		get(t, m)
		return conditionIs(m.Status.Conditions, v1alpha1.StalledCondition, metav1.ConditionTrue, ReasonDeletionBlocked,
			"blocked for more than "+testDeletionGrace.String()+" by "+silent+", whose Node is Ready but whose puller has not removed the files; if those nodes will not come back, finish without them with `kubectl annotate inferencemodel m barge.dev/force-delete=true`")
	})
	// Blocked means blocked: the silent node's files are waited for.
	time.Sleep(time.Second)
	if na := nodeArtifacts(t, ns)[silent]; na == nil {
		t.Fatal("the Ready node's NodeArtifact was released without the puller or the annotation")
	}

	before := m.DeepCopy()
	m.Annotations = map[string]string{ForceDeleteAnnotation: "true"}
	if err := k8s.Patch(context.Background(), m, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "model gone after the annotation", func() error {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(m), m)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (finalizers %v): %v", m.Finalizers, err)
	})
	if nas := nodeArtifacts(t, ns); len(nas) != 0 {
		t.Errorf("NodeArtifacts left: %v", keys(nas))
	}
}

// TestDatasetForceDelete: the annotation works on a Dataset too.
func TestDatasetForceDelete(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "d")
	pushDataset(t, openRepo(t, ref), "1", datasetConfig{Format: "jsonl", NumberOfSamples: 1})
	nodes(t, ns, nil, 1)
	ds := dataset(ns, "d", ref, "")
	create(t, ds)
	waitNodeArtifacts(t, ns, "one NodeArtifact", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 1 {
			return fmt.Errorf("%v", keys(nas))
		}
		return nil
	})
	if err := k8s.Delete(context.Background(), ds); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Deleting", func() error {
		get(t, ds)
		return conditionIs(ds.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonDeleting, "waiting for the pullers of 1 node(s)")
	})
	before := ds.DeepCopy()
	ds.Annotations = map[string]string{ForceDeleteAnnotation: "true"}
	if err := k8s.Patch(context.Background(), ds, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "dataset gone after the annotation", func() error {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ds), ds)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (finalizers %v): %v", ds.Finalizers, err)
	})
}
