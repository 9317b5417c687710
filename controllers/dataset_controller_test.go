package controllers

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// TestDataset: a dataset's statistics go into status and every matching
// node gets a NodeArtifact that names its owner, node and digest, carries
// the files finalizer and an owner reference.
func TestDataset(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "voc")
	cfg := datasetConfig{Format: "voc", NumberOfSamples: 3, Classes: map[string]int64{"cat": 2, "dog": 1, "bird": 0}, Bytes: 4242}
	d := pushDataset(t, openRepo(t, ref), "2012", cfg).Digest.String()
	names := nodes(t, ns, nil, 2)

	ds := &v1alpha1.Dataset{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "voc"},
		Spec: v1alpha1.DatasetSpec{Artifact: ref, TargetVersion: "2012", Format: v1alpha1.DatasetVOC, Insecure: true,
			NodeSelector: map[string]string{"barge-test": ns}},
	}
	create(t, ds)
	nas := waitNodeArtifacts(t, ns, "a NodeArtifact per node", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 2 {
			return fmt.Errorf("%v", keys(nas))
		}
		return nil
	})
	get(t, ds)
	for _, node := range names {
		n := nas[node]
		if n == nil {
			t.Fatalf("no NodeArtifact for %s", node)
		}
		want := v1alpha1.NodeArtifactSpec{NodeName: node, Reference: ref + "@" + d, Digest: d, Insecure: true, ArtifactName: "dataset-voc"}
		if !reflect.DeepEqual(n.Spec, want) {
			t.Errorf("spec %+v, want %+v", n.Spec, want)
		}
		if n.Name != nodeArtifactName(kindDataset, "voc", node) || !strings.HasPrefix(n.Name, "dataset-voc-"+node+"-") {
			t.Errorf("name %s", n.Name)
		}
		wantLabels := map[string]string{v1alpha1.NodeLabel: node, OwnerKindLabel: "Dataset", OwnerNameLabel: "voc"}
		if fmt.Sprint(n.Labels) != fmt.Sprint(wantLabels) {
			t.Errorf("labels %v, want %v", n.Labels, wantLabels)
		}
		if !slices.Equal(n.Finalizers, []string{v1alpha1.FilesFinalizer}) {
			t.Errorf("finalizers %v", n.Finalizers)
		}
		if ref := metav1.GetControllerOf(n); ref == nil || ref.Kind != "Dataset" || ref.UID != ds.UID {
			t.Errorf("owner %+v", ref)
		}
		puller(t, n, v1alpha1.NodeArtifactReady, d, "")
	}
	eventually(t, "Ready", func() error {
		get(t, ds)
		if ds.Status.Nodes != (v1alpha1.NodeCounts{Desired: 2, Ready: 2}) {
			return fmt.Errorf("nodes %+v", ds.Status.Nodes)
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "2012 (sha256:" + d[7:19] + ") on 2 of 2 nodes"}.check(ds.Generation, ds.Status.ObservedGeneration, ds.Status.Conditions)
	})
	st := ds.Status
	if st.Format != v1alpha1.DatasetVOC || st.NumberOfSamples != 3 || st.Size != 4242 || fmt.Sprint(st.Classes) != fmt.Sprint(cfg.Classes) {
		t.Errorf("status %+v, want the dataset config's figures", st)
	}
	if st.Resolved == nil || st.Resolved.Digest != d || st.Resolved.Version != "2012" || st.Resolved.ArtifactType != artifact.ArtifactTypeDataset {
		t.Errorf("resolved %+v", st.Resolved)
	}
}

// TestWrongKind: an artifact of the wrong kind or format stalls the object
// with a message that names what it is and what to do; what plain `oras
// push` makes is accepted as a model.
func TestWrongKind(t *testing.T) {
	ns := env.Namespace(t)
	models, datasets, images := repoName(t, "model"), repoName(t, "dataset"), repoName(t, "image")
	pushModel(t, openRepo(t, models), "1", map[string]string{"m.onnx": "x"}, artifact.Metadata{})
	pushDataset(t, openRepo(t, datasets), "1", datasetConfig{Format: "coco", NumberOfSamples: 5})
	pushImage(t, openRepo(t, images), "1")
	generic := repoName(t, "generic")
	pushGeneric(t, openRepo(t, generic), "1")

	tests := []struct {
		name string
		obj  client.Object
		want conds
	}{
		{"dataset-as-model", edgeModel(ns, "dataset-as-model", datasets, "1"),
			conds{ready: metav1.ConditionFalse, reason: ReasonWrongKind, message: "is a dataset, not a model: distribute it with a Dataset", stalled: true}},
		{"image-as-model", edgeModel(ns, "image-as-model", images, "1"),
			conds{ready: metav1.ConditionFalse, reason: ReasonWrongKind, message: "is a container image, not a model: run it with spec.image", stalled: true}},
		{"generic-as-model", edgeModel(ns, "generic-as-model", generic, "1"),
			conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}},
		{"model-as-dataset", dataset(ns, "model-as-dataset", models, ""),
			conds{ready: metav1.ConditionFalse, reason: ReasonWrongKind, message: "is a model, not a dataset: push the data with `barge push --kind dataset DIR REF`", stalled: true}},
		{"format-mismatch", dataset(ns, "format-mismatch", datasets, v1alpha1.DatasetVOC),
			conds{ready: metav1.ConditionFalse, reason: ReasonFormatMismatch, message: "is a coco dataset, but spec.format is voc", stalled: true}},
		{"format-match", dataset(ns, "format-match", datasets, v1alpha1.DatasetCOCO),
			conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}},
	}
	for _, tt := range tests {
		create(t, tt.obj)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eventually(t, "conditions", func() error {
				get(t, tt.obj)
				switch o := tt.obj.(type) {
				case *v1alpha1.InferenceModel:
					return tt.want.check(o.Generation, o.Status.ObservedGeneration, o.Status.Conditions)
				case *v1alpha1.Dataset:
					return tt.want.check(o.Generation, o.Status.ObservedGeneration, o.Status.Conditions)
				}
				return nil
			})
		})
	}
	// The user learns of it from an event too.
	eventually(t, "a WrongKind event", func() error {
		return findEvent(ns, "dataset-as-model", ReasonWrongKind)
	})
}

func dataset(ns, name, repository string, format v1alpha1.DatasetFormat) *v1alpha1.Dataset {
	return &v1alpha1.Dataset{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.DatasetSpec{Artifact: repository, TargetVersion: "1", Format: format, Insecure: true,
			NodeSelector: map[string]string{"barge-test": ns}},
	}
}

// findEvent looks for an events.k8s.io Event about an object.
func findEvent(ns, name, reason string) error {
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		return err
	}
	var seen []string
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			return nil
		}
		seen = append(seen, e.Regarding.Name+":"+e.Reason)
	}
	return fmt.Errorf("no %s event for %s among %v", reason, name, seen)
}
