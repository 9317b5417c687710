package cluster

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1 "github.com/bargeml/barge/api/v1alpha1"
)

// nodeArtifacts lists the NodeArtifacts of a namespace by node.
func nodeArtifacts(t *testing.T, ns string) map[string]bargev1.NodeArtifact {
	t.Helper()
	var list bargev1.NodeArtifactList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]bargev1.NodeArtifact{}
	for _, na := range list.Items {
		out[na.Spec.NodeName] = na
	}
	return out
}

func getModel(t *testing.T, ns, name string) *bargev1.InferenceModel {
	t.Helper()
	var im bargev1.InferenceModel
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &im); err != nil {
		t.Fatal(err)
	}
	return &im
}

// readyOn waits until the model is Ready on exactly the named nodes with
// digest, and returns the NodeArtifacts.
func readyOn(t *testing.T, ns, name, digest string, nodes ...string) map[string]bargev1.NodeArtifact {
	t.Helper()
	var nas map[string]bargev1.NodeArtifact
	waitFor(t, name+" Ready on "+strings.Join(nodes, ", ")+" at "+digest, 90*time.Second, func() bool {
		im := getModel(t, ns, name)
		if !meta.IsStatusConditionTrue(im.Status.Conditions, "Ready") || im.Status.Resolved == nil || im.Status.Resolved.Digest != digest ||
			int(im.Status.Nodes.Ready) != len(nodes) || int(im.Status.Nodes.Desired) != len(nodes) {
			return false
		}
		nas = nodeArtifacts(t, ns)
		if len(nas) != len(nodes) {
			return false
		}
		for _, n := range nodes {
			na, ok := nas[n]
			if !ok || na.Status.Phase != bargev1.NodeArtifactReady || na.Status.Digest != digest {
				return false
			}
		}
		return true
	})
	return nas
}

func TestModelLifecycleOnEdgeNodes(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	nodes := map[string]*node{}
	for _, n := range []string{"edge-1", "edge-2", "edge-3"} {
		nodes[n] = startNode(t, n)
	}
	repo := registry + "/models/" + ns
	v1 := map[string]string{"weights.bin": "weights v1", "preprocess/prep.py": "print('v1')"}
	d1 := push(t, repo+":1.0.0", v1)

	im := &bargev1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "resnet"},
		Spec: bargev1.InferenceModelSpec{
			Artifact: repo, TargetVersion: "1.0.0", Insecure: true,
			NodeSelector: map[string]string{"site": "a"},
			Interval:     &metav1.Duration{Duration: 30 * time.Second},
		},
	}
	if err := env.Client.Create(ctx, im); err != nil {
		t.Fatal(err)
	}

	// The model lands on exactly the matching nodes, with the right files.
	nas := readyOn(t, ns, "resnet", d1, "edge-1", "edge-2")
	for _, n := range []string{"edge-1", "edge-2"} {
		// One path on every node, so a workload mounts the same hostPath
		// wherever it runs.
		path := nas[n].Status.Path
		if want := filepath.Join(nodes[n].root, "artifacts", ns, "model-resnet", "current"); path != want {
			t.Errorf("%s reports path %s, want %s", n, path, want)
		}
		if got := nodes[n].files(t, path); len(got) != 2 || got["weights.bin"] != "weights v1" || got["preprocess/prep.py"] != "print('v1')" {
			t.Errorf("%s holds %v", n, got)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(nodes["edge-3"].root, "artifacts")); len(entries) != 0 {
		t.Errorf("edge-3 (site b) got files: %v", entries)
	}

	// A new targetVersion rolls out.
	d2 := push(t, repo+":1.1.0", map[string]string{"weights.bin": "weights v2", "preprocess/prep.py": "print('v1')"})
	im = getModel(t, ns, "resnet")
	im.Spec.TargetVersion = "1.1.0"
	if err := env.Client.Update(ctx, im); err != nil {
		t.Fatal(err)
	}
	nas = readyOn(t, ns, "resnet", d2, "edge-1", "edge-2")
	if got := nodes["edge-1"].files(t, nas["edge-1"].Status.Path)["weights.bin"]; got != "weights v2" {
		t.Errorf("edge-1 after the new version: weights.bin = %q", got)
	}

	// A moved tag rolls out within the interval.
	d3 := push(t, repo+":1.1.0", map[string]string{"weights.bin": "weights v3", "preprocess/prep.py": "print('v1')"})
	nas = readyOn(t, ns, "resnet", d3, "edge-1", "edge-2")
	if got := nodes["edge-2"].files(t, nas["edge-2"].Status.Path)["weights.bin"]; got != "weights v3" {
		t.Errorf("edge-2 after the tag moved: weights.bin = %q", got)
	}

	// Deleting the model removes its NodeArtifacts and the files.
	paths := []string{nas["edge-1"].Status.Path, nas["edge-2"].Status.Path}
	if err := env.Client.Delete(ctx, getModel(t, ns, "resnet")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the model and its NodeArtifacts to be gone", 60*time.Second, func() bool {
		var im bargev1.InferenceModel
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "resnet"}, &im)
		return client.IgnoreNotFound(err) == nil && err != nil && len(nodeArtifacts(t, ns)) == 0
	})
	for _, p := range paths {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists after the model was deleted", p)
		}
	}
}

// A puller killed in the middle of a pull and started again finishes it.
func TestPullerKilledMidPullFinishes(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	n := startNode(t, "edge-3", "--limit-rate", "8M")
	repo := registry + "/models/" + ns
	big := make([]byte, 48<<20)
	rand.Read(big)
	d := push(t, repo+":1", map[string]string{"weights.bin": string(big)})
	im := &bargev1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "big"},
		Spec: bargev1.InferenceModelSpec{
			Artifact: repo, TargetVersion: "1", Insecure: true,
			NodeSelector: map[string]string{"site": "b"},
		},
	}
	if err := env.Client.Create(ctx, im); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "half of the layer on edge-3", 60*time.Second, func() bool {
		matches, _ := filepath.Glob(filepath.Join(n.root, "store", "ingest", "*", "data"))
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil && fi.Size() >= int64(len(big))/2 {
				return true
			}
		}
		return false
	})
	n.p.kill()
	n.start(t)
	nas := readyOn(t, ns, "big", d, "edge-3")
	if got := n.files(t, nas["edge-3"].Status.Path)["weights.bin"]; len(got) != len(big) || got != string(big) {
		t.Errorf("edge-3 holds %d bytes of weights.bin, want %d identical", len(got), len(big))
	}
	if err := env.Client.Delete(ctx, im); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the model to be gone", 60*time.Second, func() bool { return len(nodeArtifacts(t, ns)) == 0 })
}

// A Dataset reaches every matching node, with its statistics in status.
func TestDatasetOnEdgeNodes(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	nodes := map[string]*node{}
	for _, n := range []string{"edge-1", "edge-2"} {
		nodes[n] = startNode(t, n)
	}
	repo := registry + "/datasets/" + ns
	files := map[string]string{"train.csv": "x,label\n1,a\n2,b\n3,a\n", "val.csv": "x,label\n4,b\n"}
	d := push(t, repo+":1", files, "--kind", "dataset")
	ds := &bargev1.Dataset{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sensors"},
		Spec:       bargev1.DatasetSpec{Artifact: repo, TargetVersion: "1", Insecure: true, Format: "csv", NodeSelector: map[string]string{"site": "a"}},
	}
	if err := env.Client.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dataset Ready on both nodes", 90*time.Second, func() bool {
		var got bargev1.Dataset
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ds), &got); err != nil {
			t.Fatal(err)
		}
		return meta.IsStatusConditionTrue(got.Status.Conditions, "Ready") && got.Status.Nodes.Ready == 2 &&
			got.Status.NumberOfSamples == 4 && got.Status.Classes["a"] == 2 && got.Status.Resolved != nil && got.Status.Resolved.Digest == d
	})
	for name, na := range nodeArtifacts(t, ns) {
		got := nodes[name].files(t, na.Status.Path)
		if got["train.csv"] != files["train.csv"] || got["val.csv"] != files["val.csv"] {
			t.Errorf("%s holds %v", name, got)
		}
	}
}
