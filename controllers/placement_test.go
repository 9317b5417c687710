package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

func TestNodeArtifactName(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, tt := range []struct{ kind, name, node string }{
		{kindInferenceModel, "resnet", "edge-1"},
		{kindDataset, "voc", "ip-10-0-0-1.ec2.internal"},
		{kindInferenceModel, long, long},
		{kindDataset, long + ".x", long + "-y"},
	} {
		got := nodeArtifactName(tt.kind, tt.name, tt.node)
		if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
			t.Errorf("%s: %v", got, errs)
		}
		if got != nodeArtifactName(tt.kind, tt.name, tt.node) {
			t.Errorf("%s: not deterministic", got)
		}
		if len(tt.name)+len(tt.node) < 200 && !strings.HasPrefix(got, namePrefix[tt.kind]+"-"+tt.name+"-"+tt.node+"-") {
			t.Errorf("short name %s: want kind-name-node-hash", got)
		}
	}
	// Before the hash both were model-a-b-c: one object's puller would have
	// taken the other's NodeArtifact.
	if a, b := nodeArtifactName(kindInferenceModel, "a-b", "c"), nodeArtifactName(kindInferenceModel, "a", "b-c"); a == b {
		t.Errorf("model a-b on node c and model a on node b-c share the NodeArtifact name %s", a)
	}
	for _, name := range []string{"resnet", long, strings.Repeat("b", 253)} {
		if got := artifactName(kindDataset, name); len(got) > v1alpha1.MaxArtifactName || len(validation.IsDNS1123Subdomain(got)) > 0 {
			t.Errorf("artifactName of a %d-character name is %q (%d characters): longer than %d, or not a DNS subdomain", len(name), got, len(got), v1alpha1.MaxArtifactName)
		}
	}
	if a, b := nodeArtifactName(kindInferenceModel, long, long+"1"), nodeArtifactName(kindInferenceModel, long, long+"2"); a == b {
		t.Errorf("two long names shortened to the same %s", a)
	}
	if nodeArtifactName(kindInferenceModel, "x", "n") == nodeArtifactName(kindDataset, "x", "n") {
		t.Error("a model and a dataset of one name share a NodeArtifact name")
	}
	for _, s := range []string{"edge-1", strings.Repeat("n", 63), strings.Repeat("n", 64), strings.Repeat("a.", 40)} {
		v := labelValue(s)
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 || (len(s) <= 63 && v != s) {
			t.Errorf("labelValue(%q) = %q: %v", s, v, errs)
		}
	}
}

// na builds a NodeArtifact for planRollout rows: spec digest, then the
// puller's phase and digest.
func na(node, spec string, phase v1alpha1.NodeArtifactPhase, status string) *v1alpha1.NodeArtifact {
	return &v1alpha1.NodeArtifact{
		Spec:   v1alpha1.NodeArtifactSpec{NodeName: node, Digest: spec, Reference: "r@" + spec},
		Status: v1alpha1.NodeArtifactStatus{Phase: phase, Digest: status},
	}
}

func TestPlanRollout(t *testing.T) {
	const old, new = "sha256:old", "sha256:new"
	ready, pulling, failed := v1alpha1.NodeArtifactReady, v1alpha1.NodeArtifactPulling, v1alpha1.NodeArtifactFailed
	deleting := na("b", old, ready, old)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	tests := []struct {
		name     string
		desired  []string
		existing []*v1alpha1.NodeArtifact
		max      int32
		only     map[string]bool
		// failedSettled: a node failed on the digest is not in flight.
		failedSettled bool
		create        []string
		move          []string
		remove        []string
	}{
		{name: "new nodes all get the digest at once", desired: []string{"a", "b", "c"}, max: 1, create: []string{"a", "b", "c"}},
		{name: "one at a time", desired: []string{"a", "b", "c"}, max: 1,
			existing: []*v1alpha1.NodeArtifact{na("c", old, ready, old), na("a", old, ready, old), na("b", old, ready, old)},
			move:     []string{"a"}},
		{name: "two at a time", desired: []string{"a", "b", "c"}, max: 2,
			existing: []*v1alpha1.NodeArtifact{na("a", old, ready, old), na("b", old, ready, old), na("c", old, ready, old)},
			move:     []string{"a", "b"}},
		{name: "a node pulling the new digest holds the next back", desired: []string{"a", "b", "c"}, max: 1,
			existing: []*v1alpha1.NodeArtifact{na("a", new, pulling, old), na("b", old, ready, old), na("c", old, ready, old)}},
		{name: "a node Ready on the new digest lets the next move", desired: []string{"a", "b", "c"}, max: 1,
			existing: []*v1alpha1.NodeArtifact{na("a", new, ready, new), na("b", old, ready, old), na("c", old, ready, old)},
			move:     []string{"b"}},
		{name: "Ready but still on the old digest is not done", desired: []string{"a", "b"}, max: 1,
			existing: []*v1alpha1.NodeArtifact{na("a", new, ready, old), na("b", old, ready, old)}},
		{name: "a failed node holds the rollout", desired: []string{"a", "b"}, max: 1,
			existing: []*v1alpha1.NodeArtifact{na("a", new, failed, old), na("b", old, ready, old)}},
		{name: "a failed node is done when the failure policy decides", desired: []string{"a", "b"}, max: 1, failedSettled: true,
			existing: []*v1alpha1.NodeArtifact{na("a", new, failed, old), na("b", old, ready, old)},
			move:     []string{"b"}},
		{name: "only the canary moves", desired: []string{"a", "b", "c"}, max: 3, only: map[string]bool{"b": true},
			existing: []*v1alpha1.NodeArtifact{na("a", old, ready, old), na("b", old, ready, old), na("c", old, ready, old)},
			move:     []string{"b"}},
		{name: "a halted rollout moves nothing, but a new node gets the digest", desired: []string{"a", "b", "c"}, max: 3, only: map[string]bool{},
			existing: []*v1alpha1.NodeArtifact{na("a", new, failed, old), na("b", old, ready, old)},
			create:   []string{"c"}},
		// A rollback to the digest c never left: a failed the other one,
		// b serves it; a, serving nothing, goes back first, one at a time.
		{name: "a rollback is bounded like a rollout", desired: []string{"a", "b", "c"}, max: 1, failedSettled: true,
			existing: []*v1alpha1.NodeArtifact{na("a", old, failed, new), na("b", old, ready, old), na("c", new, ready, new)},
			move:     []string{"a"}},
		{name: "nodes serving nothing move first", desired: []string{"a", "b", "c"}, max: 1,
			existing: []*v1alpha1.NodeArtifact{na("a", old, ready, old), na("b", old, ready, old), na("c", old, failed, "")},
			move:     []string{"c"}},
		{name: "nodes that stop matching are removed", desired: []string{"a"}, max: 1,
			existing: []*v1alpha1.NodeArtifact{na("a", new, ready, new), na("z", new, ready, new)},
			remove:   []string{"z"}},
		{name: "a NodeArtifact being deleted is left to its puller", desired: []string{"a", "b"}, max: 1,
			existing: []*v1alpha1.NodeArtifact{na("a", new, ready, new), deleting}},
	}
	names := func(nas []*v1alpha1.NodeArtifact) []string {
		var out []string
		for _, n := range nas {
			out = append(out, n.Spec.NodeName)
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planRollout(tt.desired, tt.existing, new, moveBounds{maxConcurrent: tt.max, only: tt.only, failedSettled: tt.failedSettled})
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"create", p.create, tt.create}, {"move", names(p.move), tt.move}, {"remove", names(p.remove), tt.remove}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}

// waitNodeArtifacts waits until the namespace's NodeArtifacts satisfy check.
func waitNodeArtifacts(t *testing.T, ns, what string, check func(map[string]*v1alpha1.NodeArtifact) error) map[string]*v1alpha1.NodeArtifact {
	t.Helper()
	var got map[string]*v1alpha1.NodeArtifact
	eventually(t, what, func() error {
		got = nodeArtifacts(t, ns)
		return check(got)
	})
	return got
}

func onDigest(nas map[string]*v1alpha1.NodeArtifact, d string) []string {
	var out []string
	for node, na := range nas {
		if na.Spec.Digest == d {
			out = append(out, node)
		}
	}
	slices.Sort(out)
	return out
}

// TestRolloutConcurrency: three nodes serve 1.0; the tag moves; with
// maxConcurrentNodes 1 exactly one node is moved to the new digest, the next
// only once the pullers report the previous one Ready on it, and the model
// is Ready when all three are.
func TestRolloutConcurrency(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	d1 := pushModel(t, repo, "stable", map[string]string{"m.onnx": "v1"}, artifact.Metadata{}).Digest.String()
	names := nodes(t, ns, nil, 3)
	slices.Sort(names) // the order nodes move in

	m := edgeModel(ns, "m", ref, "stable")
	m.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	create(t, m)
	nas := waitNodeArtifacts(t, ns, "a NodeArtifact per node on v1", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, d1); len(got) != 3 {
			return fmt.Errorf("on v1: %v", got)
		}
		return nil
	})
	for _, n := range nas {
		puller(t, n, v1alpha1.NodeArtifactReady, d1, "")
	}
	eventually(t, "Ready on 3 nodes", func() error {
		get(t, m)
		if m.Status.Nodes != (v1alpha1.NodeCounts{Desired: 3, Ready: 3}) {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return conditionIs(m.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionTrue, ReasonSucceeded, "on 3 of 3 nodes")
	})

	// The tag moves; a shorter interval is a spec change, so the model is
	// resolved again at once.
	d2 := pushModel(t, repo, "stable", map[string]string{"m.onnx": "v2"}, artifact.Metadata{}).Digest.String()
	before := m.DeepCopy()
	m.Spec.Interval = &metav1.Duration{Duration: 30 * time.Minute}
	if err := k8s.Patch(context.Background(), m, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	for step := 1; step <= 3; step++ {
		nas = waitNodeArtifacts(t, ns, fmt.Sprintf("%d node(s) moved to v2", step), func(nas map[string]*v1alpha1.NodeArtifact) error {
			if got := onDigest(nas, d2); len(got) != step {
				return fmt.Errorf("on v2: %v", got)
			}
			return nil
		})
		// Nothing else moves while the moved node pulls.
		time.Sleep(500 * time.Millisecond)
		nas = nodeArtifacts(t, ns)
		moved := onDigest(nas, d2)
		if len(moved) != step {
			t.Fatalf("step %d: %v on v2 while the last moved node is not Ready", step, moved)
		}
		if want := names[:step]; !slices.Equal(moved, want) {
			t.Errorf("step %d: moved %v, want %v (by name)", step, moved, want)
		}
		get(t, m)
		if err := conditionIs(m.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonRollingOut, fmt.Sprintf("%d of 3 nodes hold stable", step-1)); err != nil {
			t.Errorf("step %d: %v", step, err)
		}
		if err := conditionIs(m.Status.Conditions, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, ReasonRollingOut, ""); err != nil {
			t.Errorf("step %d: %v", step, err)
		}
		n := nas[names[step-1]]
		if n.Spec.Reference != ref+"@"+d2 {
			t.Errorf("moved reference %s", n.Spec.Reference)
		}
		puller(t, n, v1alpha1.NodeArtifactPulling, d1, "")
		puller(t, n, v1alpha1.NodeArtifactReady, d2, "")
	}
	eventually(t, "Ready on v2", func() error {
		get(t, m)
		if m.Status.Resolved == nil || m.Status.Resolved.Digest != d2 || m.Status.Nodes != (v1alpha1.NodeCounts{Desired: 3, Ready: 3}) {
			return fmt.Errorf("resolved %+v nodes %+v", m.Status.Resolved, m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
}

// TestNodeFailure: a puller's failure shows as a count and its message.
func TestNodeFailure(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	d := pushModel(t, openRepo(t, ref), "1", map[string]string{"m.onnx": "x"}, artifact.Metadata{}).Digest.String()
	nodes(t, ns, nil, 2)
	m := edgeModel(ns, "m", ref, "1")
	create(t, m)
	nas := waitNodeArtifacts(t, ns, "two NodeArtifacts", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 2 {
			return fmt.Errorf("%d", len(nas))
		}
		return nil
	})
	var first = true
	for _, n := range nas {
		if first {
			puller(t, n, v1alpha1.NodeArtifactFailed, "", "disk full: 2 GiB needed")
			first = false
		} else {
			puller(t, n, v1alpha1.NodeArtifactReady, d, "")
		}
	}
	eventually(t, "one failed", func() error {
		get(t, m)
		if m.Status.Nodes != (v1alpha1.NodeCounts{Desired: 2, Ready: 1, Failed: 1}) {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionFalse, reason: ReasonNodeFailed, message: "disk full: 2 GiB needed", reconciling: true}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
}

// TestNodeLabels: a node that starts matching gets a NodeArtifact; one that
// stops matching loses it once its puller has removed the files; a deleted
// node's NodeArtifact goes without a puller.
func TestNodeLabels(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	d := pushModel(t, openRepo(t, ref), "1", map[string]string{"m.onnx": "x"}, artifact.Metadata{}).Digest.String()
	gpu := nodes(t, ns, map[string]string{"gpu": "true"}, 2)
	cpu := nodes(t, ns, nil, 1)
	ds := &v1alpha1.Dataset{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data"},
		Spec:       v1alpha1.DatasetSpec{Artifact: repoName(t, "d"), TargetVersion: "1", Insecure: true, NodeSelector: map[string]string{"barge-test": ns, "gpu": "true"}},
	}
	pushDataset(t, openRepo(t, ds.Spec.Artifact), "1", datasetConfig{Format: "jsonl", NumberOfSamples: 1})
	m := edgeModel(ns, "m", ref, "1")
	m.Spec.NodeSelector["gpu"] = "true"
	create(t, m)
	create(t, ds)

	nas := waitNodeArtifacts(t, ns, "on the gpu nodes", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 2 || nas[gpu[0]] == nil || nas[gpu[1]] == nil {
			return fmt.Errorf("%v", keys(nas))
		}
		return nil
	})
	_ = nas
	var all v1alpha1.NodeArtifactList
	if err := k8s.List(context.Background(), &all, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(all.Items) != 4 {
		t.Fatalf("%d NodeArtifacts, want 4: a model and a dataset on two nodes", len(all.Items))
	}

	setLabel := func(node, value string) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
		get(t, n)
		before := n.DeepCopy()
		if value == "" {
			delete(n.Labels, "gpu")
		} else {
			n.Labels["gpu"] = value
		}
		if err := k8s.Patch(context.Background(), n, client.MergeFrom(before)); err != nil {
			t.Fatal(err)
		}
	}

	// The cpu node gains the label.
	setLabel(cpu[0], "true")
	waitNodeArtifacts(t, ns, "on the new gpu node", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if nas[cpu[0]] == nil || nas[cpu[0]].Spec.Digest != d {
			return fmt.Errorf("%v", keys(nas))
		}
		return nil
	})

	// gpu[0] loses it: its NodeArtifacts are deleted, and stay until its
	// puller removes the files.
	setLabel(gpu[0], "")
	var gone []v1alpha1.NodeArtifact
	eventually(t, "deleting on the relabelled node", func() error {
		if err := k8s.List(context.Background(), &all, client.InNamespace(ns), client.MatchingLabels{v1alpha1.NodeLabel: gpu[0]}); err != nil {
			return err
		}
		gone = all.Items
		for _, n := range gone {
			if n.DeletionTimestamp == nil {
				return fmt.Errorf("%s not being deleted", n.Name)
			}
		}
		if len(gone) != 2 {
			return fmt.Errorf("%d NodeArtifacts on %s", len(gone), gpu[0])
		}
		return nil
	})
	eventually(t, "model counts", func() error {
		get(t, m)
		if m.Status.Nodes.Desired != 2 {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return nil
	})
	for i := range gone {
		releaseFiles(t, &gone[i])
	}

	// gpu[1] is deleted: no puller will ever release its NodeArtifacts.
	if err := k8s.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: gpu[1]}}); err != nil {
		t.Fatal(err)
	}
	waitNodeArtifacts(t, ns, "only on the node that still matches", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 1 || nas[cpu[0]] == nil {
			return fmt.Errorf("%v", keys(nas))
		}
		return nil
	})
}

func keys(nas map[string]*v1alpha1.NodeArtifact) []string {
	var out []string
	for k, n := range nas {
		if n.DeletionTimestamp != nil {
			k += "(deleting)"
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestFinalizer: deleting a model deletes its NodeArtifacts and keeps the
// model until every puller has removed its files.
func TestFinalizer(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	pushModel(t, openRepo(t, ref), "1", map[string]string{"m.onnx": "x"}, artifact.Metadata{})
	nodes(t, ns, nil, 2)
	m := edgeModel(ns, "m", ref, "1")
	create(t, m)
	waitNodeArtifacts(t, ns, "two NodeArtifacts", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 2 {
			return fmt.Errorf("%v", keys(nas))
		}
		return nil
	})
	get(t, m)
	if !slices.Contains(m.Finalizers, CleanupFinalizer) {
		t.Fatalf("finalizers %v, want %s", m.Finalizers, CleanupFinalizer)
	}
	if err := k8s.Delete(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	nas := waitNodeArtifacts(t, ns, "NodeArtifacts being deleted", func(nas map[string]*v1alpha1.NodeArtifact) error {
		for _, n := range nas {
			if n.DeletionTimestamp == nil {
				return fmt.Errorf("%v", keys(nas))
			}
		}
		return nil
	})
	eventually(t, "Deleting condition", func() error {
		get(t, m)
		return conditionIs(m.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonDeleting, "waiting for the pullers of 2 node(s)")
	})
	var released int
	for _, n := range nas {
		releaseFiles(t, n)
		released++
		if released == 1 {
			time.Sleep(300 * time.Millisecond)
			get(t, m) // still there: one puller has not finished
		}
	}
	eventually(t, "model gone", func() error {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(m), m)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (finalizers %v): %v", m.Finalizers, err)
	})
}

// TestDrift: whoever changes a NodeArtifact but the controller (a person with
// write access, a puller before the admission policy), the controller sets
// it back: the labels its puller lists it by, its directory and its
// reference; and a status Ready on a digest that is not the spec's does not
// count as Ready.
func TestDrift(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	d := pushModel(t, openRepo(t, ref), "1", map[string]string{"m.onnx": "x"}, artifact.Metadata{}).Digest.String()
	other := pushModel(t, openRepo(t, ref), "0", map[string]string{"m.onnx": "old"}, artifact.Metadata{}).Digest.String()
	names := nodes(t, ns, nil, 2)
	m := edgeModel(ns, "m", ref, "1")
	create(t, m)
	nas := waitNodeArtifacts(t, ns, "two NodeArtifacts", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 2 {
			return fmt.Errorf("%d", len(nas))
		}
		return nil
	})
	want := nas[names[0]].DeepCopy()

	// A forged Ready on another digest does not count, nor move anything.
	puller(t, nas[names[0]], v1alpha1.NodeArtifactReady, other, "")
	puller(t, nas[names[1]], v1alpha1.NodeArtifactReady, d, "")
	eventually(t, "one of two Ready", func() error {
		get(t, m)
		if m.Status.Nodes.Ready != 1 || m.Status.Nodes.Desired != 2 {
			return fmt.Errorf("nodes %+v, want 1 of 2 Ready: a status on %s is not Ready on %s", m.Status.Nodes, other, d)
		}
		return nil
	})

	for _, tt := range []struct {
		what  string
		patch string
	}{
		{"node label removed", `{"metadata":{"labels":{"barge.dev/node":null}}}`},
		{"owner labels removed", `{"metadata":{"labels":{"barge.dev/owner-kind":null,"barge.dev/owner-name":null}}}`},
		{"node label moved", `{"metadata":{"labels":{"barge.dev/node":"` + names[1] + `"}}}`},
		{"directory renamed", `{"spec":{"artifactName":"model-elsewhere"}}`},
		{"reference to another registry", `{"spec":{"reference":"evil.example.com/m@` + want.Spec.Digest + `"}}`},
	} {
		t.Run(tt.what, func(t *testing.T) {
			na := &v1alpha1.NodeArtifact{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: want.Name}}
			if err := k8s.Patch(context.Background(), na, client.RawPatch("application/merge-patch+json", []byte(tt.patch))); err != nil {
				t.Fatal(err)
			}
			eventually(t, "set back", func() error {
				get(t, na)
				if !maps.Equal(na.Labels, want.Labels) || na.Spec.ArtifactName != want.Spec.ArtifactName || na.Spec.Reference != want.Spec.Reference {
					return fmt.Errorf("labels %v, artifactName %s, reference %s; want %v, %s, %s",
						na.Labels, na.Spec.ArtifactName, na.Spec.Reference, want.Labels, want.Spec.ArtifactName, want.Spec.Reference)
				}
				return nil
			})
		})
	}
	if n := len(nodeArtifacts(t, ns)); n != 2 {
		t.Errorf("%d NodeArtifacts after the repairs, want 2", n)
	}
}
