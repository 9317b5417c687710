package v1alpha1_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1alpha1 "github.com/bargeml/barge/api/v1alpha1"
)

func get[T client.Object](t *testing.T, key client.ObjectKey, obj T) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.Client.Get(ctx, key, obj); err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return obj
}

func TestInferenceModelDefaults(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()

	// From YAML that leaves every defaulted field out, as a user writes it.
	u, err := apply(t, ns, `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50, targetVersion: "1.0.0"}`)
	if err != nil {
		t.Fatal(err)
	}
	fromYAML := get(t, client.ObjectKeyFromObject(u), &bargev1alpha1.InferenceModel{})

	// From Go, where a struct field is never left out of the JSON: the
	// pointer and omitempty choices must still let the server default.
	fromGo := &bargev1alpha1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "from-go"},
		Spec:       bargev1alpha1.InferenceModelSpec{Artifact: "registry.example.com/models/resnet50", TargetVersion: "1.0.0"},
	}
	if err := env.Client.Create(ctx, fromGo); err != nil {
		t.Fatal(err)
	}

	for name, m := range map[string]*bargev1alpha1.InferenceModel{"yaml": fromYAML, "go": fromGo} {
		s := m.Spec
		if s.DeployToLayer != bargev1alpha1.LayerEdge {
			t.Errorf("%s: deployToLayer = %q, want edge", name, s.DeployToLayer)
		}
		if s.Interval == nil || s.Interval.Duration != 5*time.Minute {
			t.Errorf("%s: interval = %v, want 5m", name, s.Interval)
		}
		if s.Rollout.MaxConcurrentNodes != 1 {
			t.Errorf("%s: rollout.maxConcurrentNodes = %d, want 1", name, s.Rollout.MaxConcurrentNodes)
		}
		if s.Replicas != nil {
			t.Errorf("%s: replicas = %d, want unset", name, *s.Replicas)
		}
	}

	// Values given are kept.
	u, err = apply(t, ns, `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", deployToLayer: cloud, replicas: 0, interval: 30s, rollout: {maxConcurrentNodes: 3}}`)
	if err != nil {
		t.Fatal(err)
	}
	given := get(t, client.ObjectKeyFromObject(u), &bargev1alpha1.InferenceModel{}).Spec
	if given.DeployToLayer != bargev1alpha1.LayerCloud || given.Interval.Duration != 30*time.Second ||
		given.Rollout.MaxConcurrentNodes != 3 || given.Replicas == nil || *given.Replicas != 0 {
		t.Errorf("given values changed: %+v", given)
	}
}

func TestDatasetDefaults(t *testing.T) {
	ns := env.Namespace(t)
	u, err := apply(t, ns, `
kind: Dataset
spec: {artifact: registry.example.com/datasets/coco-val, targetVersion: "2017"}`)
	if err != nil {
		t.Fatal(err)
	}
	d := get(t, client.ObjectKeyFromObject(u), &bargev1alpha1.Dataset{})
	if d.Spec.Interval == nil || d.Spec.Interval.Duration != 5*time.Minute {
		t.Errorf("interval = %v, want 5m", d.Spec.Interval)
	}
	if d.Spec.Format != "" {
		t.Errorf("format = %q, want unset (any format the artifact declares)", d.Spec.Format)
	}
}

// TestDeepCopy checks the generated code copies maps and pointers instead of
// sharing them, which a controller mutating a cached object relies on.
func TestDeepCopy(t *testing.T) {
	replicas := int32(2)
	in := &bargev1alpha1.InferenceModel{
		Spec: bargev1alpha1.InferenceModelSpec{NodeSelector: map[string]string{"a": "b"}, Replicas: &replicas,
			Interval: &metav1.Duration{Duration: time.Minute}},
		Status: bargev1alpha1.InferenceModelStatus{Metrics: map[string]string{"accuracy": "0.91"},
			Resolved: &bargev1alpha1.ResolvedArtifact{Digest: digestA}},
	}
	out := in.DeepCopyObject().(*bargev1alpha1.InferenceModel)
	out.Spec.NodeSelector["a"] = "c"
	*out.Spec.Replicas = 3
	out.Spec.Interval.Duration = time.Hour
	out.Status.Metrics["accuracy"] = "0.5"
	out.Status.Resolved.Digest = ""
	if in.Spec.NodeSelector["a"] != "b" || *in.Spec.Replicas != 2 || in.Spec.Interval.Duration != time.Minute ||
		in.Status.Metrics["accuracy"] != "0.91" || in.Status.Resolved.Digest != digestA {
		t.Fatalf("DeepCopy shares memory with its source: %+v", in)
	}
	var _ runtime.Object = &bargev1alpha1.NodeArtifactList{}
	var _ runtime.Object = &bargev1alpha1.DatasetList{}
}
