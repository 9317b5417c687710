package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/internal/testenv"
)

// rolloutFixture is an edge model whose three nodes hold version 1 of the
// tag stable, and its rollout spec.
type rolloutFixture struct {
	ns    string
	m     *v1alpha1.InferenceModel
	repo  *remote.Repository
	nodes []string // sorted by name
	d1    string
	// kubelet runs the serving pods of a model with spec.server.
	kubelet *testenv.Kubelet
}

func newRolloutFixture(t *testing.T, rollout v1alpha1.RolloutSpec, edits ...func(*v1alpha1.InferenceModel)) *rolloutFixture {
	t.Helper()
	f := &rolloutFixture{ns: env.Namespace(t)}
	ref := repoName(t, "m")
	f.repo = openRepo(t, ref)
	f.d1 = pushModel(t, f.repo, "stable", map[string]string{"m.onnx": "v1"}, artifact.Metadata{}).Digest.String()
	f.nodes = nodes(t, f.ns, nil, 3)
	slices.Sort(f.nodes)
	f.m = edgeModel(f.ns, "m", ref, "stable")
	f.m.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	f.m.Spec.Rollout = rollout
	for _, edit := range edits {
		edit(f.m)
	}
	if f.m.Spec.Server != nil {
		f.kubelet = testenv.StartKubelet(t, k8s, f.ns, f.nodes...)
	}
	create(t, f.m)
	f.report(t, f.d1, v1alpha1.NodeArtifactReady, "", f.nodes...)
	f.waitPhase(t, v1alpha1.RolloutComplete, f.d1)
	if h := f.m.Status.History; len(h) != 1 || h[0].Action != actionRolledOut || h[0].Digest != f.d1 {
		t.Fatalf("history after the first rollout: %+v", h)
	}
	return f
}

// push moves the tag to new content and changes the spec (a shorter
// interval), so the model is resolved again at once.
func (f *rolloutFixture) push(t *testing.T, content string) string {
	t.Helper()
	d := pushModel(t, f.repo, "stable", map[string]string{"m.onnx": content}, artifact.Metadata{}).Digest.String()
	get(t, f.m)
	before := f.m.DeepCopy()
	f.m.Spec.Interval = &metav1.Duration{Duration: f.m.Spec.Interval.Duration - time.Minute}
	if err := k8s.Patch(context.Background(), f.m, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	return d
}

// annotate sets an annotation on the model, which wakes it without
// changing its generation.
func (f *rolloutFixture) annotate(t *testing.T, key, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if err := k8s.Patch(context.Background(), f.m, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

// report waits until each node's NodeArtifact is on digest and reports
// phase there, as the node's puller would.
func (f *rolloutFixture) report(t *testing.T, digest string, phase v1alpha1.NodeArtifactPhase, message string, on ...string) {
	t.Helper()
	nas := waitNodeArtifacts(t, f.ns, fmt.Sprintf("%v on %s", on, digest), func(nas map[string]*v1alpha1.NodeArtifact) error {
		for _, n := range on {
			if nas[n] == nil || nas[n].Spec.Digest != digest {
				return fmt.Errorf("on %s: %v", digest, onDigest(nas, digest))
			}
		}
		return nil
	})
	for _, n := range on {
		status := digest
		if phase == v1alpha1.NodeArtifactFailed {
			status = ""
		}
		puller(t, nas[n], phase, status, message)
	}
}

// waitPhase waits until status.rollout is in phase on digest.
func (f *rolloutFixture) waitPhase(t *testing.T, phase v1alpha1.RolloutPhase, digest string) *v1alpha1.RolloutStatus {
	t.Helper()
	eventually(t, fmt.Sprintf("rollout %s of %s", phase, digest), func() error {
		get(t, f.m)
		r := f.m.Status.Rollout
		if r == nil || r.Phase != phase || r.Digest != digest || f.m.Status.ObservedGeneration != f.m.Generation {
			return fmt.Errorf("rollout %+v", r)
		}
		return nil
	})
	return f.m.Status.Rollout
}

// staysOn checks, for a while, that nodes stay on digest.
func (f *rolloutFixture) staysOn(t *testing.T, digest string, nodes ...string) {
	t.Helper()
	for range 5 {
		nas := nodeArtifacts(t, f.ns)
		for _, n := range nodes {
			if nas[n].Spec.Digest != digest {
				t.Fatalf("node %s moved to %s; want it to stay on %s", n, nas[n].Spec.Digest, digest)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCanaryRollout: a new version goes to the first node alone; once it
// holds it the rollout pauses for canary.pause, and then the other two
// follow, one at a time.
func TestCanaryRollout(t *testing.T) {
	const pause = 3 * time.Second
	f := newRolloutFixture(t, v1alpha1.RolloutSpec{MaxConcurrentNodes: 1,
		Canary: &v1alpha1.CanarySpec{Nodes: ptr(int32(1)), Pause: &metav1.Duration{Duration: pause}}})
	canary, rest := f.nodes[0], f.nodes[1:]
	d2 := f.push(t, "v2")

	st := f.waitPhase(t, v1alpha1.RolloutProgressing, d2)
	if st.Previous != f.d1 || !slices.Equal(st.CanaryNodes, []string{canary}) {
		t.Errorf("rollout %+v: want previous %s, canary %s", st, f.d1, canary)
	}
	f.report(t, d2, v1alpha1.NodeArtifactReady, "", canary)
	f.staysOn(t, f.d1, rest...)

	st = f.waitPhase(t, v1alpha1.RolloutPaused, d2)
	if st.CanaryReadyAt == nil {
		t.Fatal("paused without canaryReadyAt")
	}
	if err := conditionIs(f.m.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonRolloutPaused, "the rest follow at"); err != nil {
		t.Error(err)
	}
	if nas := nodeArtifacts(t, f.ns); time.Now().Before(st.CanaryReadyAt.Add(pause)) && len(onDigest(nas, d2)) != 1 {
		t.Errorf("on v2 while paused: %v", onDigest(nas, d2))
	}
	for i, n := range rest {
		f.report(t, d2, v1alpha1.NodeArtifactReady, "", n)
		if i == 0 {
			if moved := time.Now(); moved.Before(st.CanaryReadyAt.Add(pause)) {
				t.Errorf("%s moved at %s, before the pause ended at %s", n, moved, st.CanaryReadyAt.Add(pause))
			}
		}
	}
	st = f.waitPhase(t, v1alpha1.RolloutComplete, d2)
	if st.ResumedAt == nil || st.ResumedAt.Before(st.CanaryReadyAt) {
		t.Errorf("resumedAt %v, canaryReadyAt %v", st.ResumedAt, st.CanaryReadyAt)
	}
	if h := f.m.Status.History; len(h) != 2 || h[0].Action != actionRolledOut || h[0].Digest != d2 || h[0].Version != "stable" || h[1].Digest != f.d1 {
		t.Errorf("history %+v: want RolledOut stable %s, then %s", h, d2, f.d1)
	}
	if err := (conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}).check(f.m.Generation, f.m.Status.ObservedGeneration, f.m.Status.Conditions); err != nil {
		t.Error(err)
	}
	for _, reason := range []string{ReasonRolloutPaused, ReasonRolloutResumed, ReasonRolloutComplete} {
		eventually(t, reason+" event", func() error { return findEvent(f.ns, "m", reason) })
	}
}

// TestCanaryResume: without canary.pause the rollout waits after the canary
// until the resume annotation names the digest being rolled out.
func TestCanaryResume(t *testing.T) {
	const label = "example.com/canary"
	f := newRolloutFixture(t, v1alpha1.RolloutSpec{MaxConcurrentNodes: 3,
		Canary: &v1alpha1.CanarySpec{NodeSelector: map[string]string{label: "true"}}})
	canary, rest := f.nodes[2], f.nodes[:2]
	labelNode(t, canary, label, "true")
	d2 := f.push(t, "v2")
	f.report(t, d2, v1alpha1.NodeArtifactReady, "", canary)
	st := f.waitPhase(t, v1alpha1.RolloutPaused, d2)
	if !slices.Equal(st.CanaryNodes, []string{canary}) || !strings.Contains(st.Message, "barge rollout resume m -n "+f.ns) {
		t.Errorf("rollout %+v", st)
	}

	// An annotation naming another digest resumes nothing.
	f.annotate(t, v1alpha1.ResumeRolloutAnnotation, f.d1)
	f.staysOn(t, f.d1, rest...)
	f.annotate(t, v1alpha1.ResumeRolloutAnnotation, d2)
	f.report(t, d2, v1alpha1.NodeArtifactReady, "", rest...)
	st = f.waitPhase(t, v1alpha1.RolloutComplete, d2)
	if st.ResumedAt == nil {
		t.Error("resumed without resumedAt")
	}
	eventually(t, "RolloutResumed event", func() error { return findEvent(f.ns, "m", ReasonRolloutResumed) })
}

// labelNode sets a label on a node.
func labelNode(t *testing.T, node, key, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, key, value)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	if err := k8s.Patch(context.Background(), n, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

// TestRolloutHalt: with failurePolicy Halt, a node that fails the new
// version stops the rollout where it is, Stalled, with what to do; a spec
// that tolerates the failure lets it go on.
func TestRolloutHalt(t *testing.T) {
	f := newRolloutFixture(t, v1alpha1.RolloutSpec{MaxConcurrentNodes: 1, FailurePolicy: v1alpha1.FailurePolicyHalt})
	d2 := f.push(t, "v2")
	f.report(t, d2, v1alpha1.NodeArtifactFailed, "pull: 507 insufficient storage", f.nodes[0])
	f.waitPhase(t, v1alpha1.RolloutHalted, d2)
	if err := (conds{ready: metav1.ConditionFalse, reason: ReasonRolloutHalted, message: "push a fixed version or change the spec", stalled: true}).check(f.m.Generation, f.m.Status.ObservedGeneration, f.m.Status.Conditions); err != nil {
		t.Error(err)
	}
	if msg := f.m.Status.Rollout.Message; !strings.Contains(msg, f.nodes[0]+": pull: 507 insufficient storage") {
		t.Errorf("message %q does not say which node failed and why", msg)
	}
	if h := f.m.Status.History; len(h) == 0 || h[0].Action != actionHalted || h[0].Digest != d2 || h[0].Generation != f.m.Generation {
		t.Errorf("history %+v", h)
	}
	f.staysOn(t, f.d1, f.nodes[1:]...)
	eventually(t, "RolloutHalted event", func() error { return findEvent(f.ns, "m", ReasonRolloutHalted) })

	get(t, f.m)
	before := f.m.DeepCopy()
	f.m.Spec.Rollout.MaxFailedNodes = 1
	if err := k8s.Patch(context.Background(), f.m, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	f.report(t, d2, v1alpha1.NodeArtifactReady, "", f.nodes[1])
	f.report(t, d2, v1alpha1.NodeArtifactReady, "", f.nodes[2])
	f.waitPhase(t, v1alpha1.RolloutProgressing, d2)
}

// TestRollback: two of three nodes fail the new version with
// maxFailedNodes 1; every moved node goes back to the previous digest, the
// history says why, and the version is not tried again at this generation,
// while a newer one rolls out.
func TestRollback(t *testing.T) {
	f := newRolloutFixture(t, v1alpha1.RolloutSpec{MaxConcurrentNodes: 3, MaxFailedNodes: 1, FailurePolicy: v1alpha1.FailurePolicyRollback})
	d2 := f.push(t, "v2")
	f.report(t, d2, v1alpha1.NodeArtifactReady, "", f.nodes[2])
	f.report(t, d2, v1alpha1.NodeArtifactFailed, "verify: no trusted signature", f.nodes[0], f.nodes[1])

	st := f.waitPhase(t, v1alpha1.RolloutRolledBack, d2)
	if st.Previous != f.d1 {
		t.Errorf("rolled back to %s, want %s", st.Previous, f.d1)
	}
	f.report(t, f.d1, v1alpha1.NodeArtifactReady, "", f.nodes...)
	eventually(t, "Stalled once every node is back", func() error {
		get(t, f.m)
		if f.m.Status.Nodes != (v1alpha1.NodeCounts{Desired: 3, Ready: 3}) {
			return fmt.Errorf("nodes %+v", f.m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionFalse, reason: ReasonRolledBack, message: "2 of 3 nodes failed (maxFailedNodes 1)", stalled: true}.check(f.m.Generation, f.m.Status.ObservedGeneration, f.m.Status.Conditions)
	})
	h := f.m.Status.History
	if len(h) != 2 || h[0].Action != actionRolledBack || h[0].Digest != d2 || h[0].Generation != f.m.Generation ||
		!strings.Contains(h[0].Reason, f.nodes[0]+": verify: no trusted signature") || h[1].Digest != f.d1 {
		t.Errorf("history %+v", h)
	}
	eventually(t, "RolledBack event", func() error { return findEvent(f.ns, "m", ReasonRolledBack) })

	// Resolved again at the same generation (a Stalled model is resolved
	// on every pass), the tag still names v2: the nodes stay on v1.
	generation := f.m.Generation
	f.annotate(t, "example.com/poke", "1")
	f.staysOn(t, f.d1, f.nodes...)
	time.Sleep(time.Second)
	f.staysOn(t, f.d1, f.nodes...)
	f.waitPhase(t, v1alpha1.RolloutRolledBack, d2)

	// A fixed version rolls out from v1.
	d3 := pushModel(t, f.repo, "stable", map[string]string{"m.onnx": "v3"}, artifact.Metadata{}).Digest.String()
	f.annotate(t, "example.com/poke", "2")
	f.report(t, d3, v1alpha1.NodeArtifactReady, "", f.nodes...)
	st = f.waitPhase(t, v1alpha1.RolloutComplete, d3)
	if st.Previous != f.d1 || f.m.Generation != generation {
		t.Errorf("rollout %+v at generation %d (was %d): want previous %s", st, f.m.Generation, generation, f.d1)
	}
	if h := f.m.Status.History; len(h) != 3 || h[0].Digest != d3 || h[1].Action != actionRolledBack {
		t.Errorf("history %+v", h)
	}
}

// TestCanaryServerCrashRollsBack: the canary node holds the new files, but
// its server crashes on them: the rollout rolls back, the canary serves the
// old version again, and the other nodes never left it.
func TestCanaryServerCrashRollsBack(t *testing.T) {
	one := int32(1)
	f := newRolloutFixture(t, v1alpha1.RolloutSpec{MaxConcurrentNodes: 1, Canary: &v1alpha1.CanarySpec{Nodes: &one}, FailurePolicy: v1alpha1.FailurePolicyRollback},
		func(m *v1alpha1.InferenceModel) { m.Spec.Server = &v1alpha1.ServerSpec{Image: testServerImage} })
	var mu sync.Mutex
	var bad string
	f.kubelet.SetState(func(p *corev1.Pod) testenv.PodState {
		mu.Lock()
		defer mu.Unlock()
		if bad != "" && p.Annotations[v1alpha1.DigestAnnotation] == bad {
			return testenv.PodCrashLoop
		}
		return testenv.PodRunning
	})
	d2 := f.push(t, "v2")
	mu.Lock()
	bad = d2
	mu.Unlock()
	canary, rest := f.nodes[0], f.nodes[1:]
	f.report(t, d2, v1alpha1.NodeArtifactReady, "", canary)

	f.waitPhase(t, v1alpha1.RolloutRolledBack, d2)
	f.staysOn(t, f.d1, rest...)
	f.report(t, f.d1, v1alpha1.NodeArtifactReady, "", canary)
	modelStatus(t, f.m, func() error {
		pods := servingPodsByNode(t, f.ns)
		for _, n := range f.nodes {
			if p := pods[n]; p == nil || p.Annotations[v1alpha1.DigestAnnotation] != f.d1 || !podReady(p) {
				return fmt.Errorf("node %s: serving pod %v, want Ready on %s", n, p, f.d1)
			}
		}
		if f.m.Status.Nodes.Serving != 3 {
			return fmt.Errorf("nodes %+v", f.m.Status.Nodes)
		}
		return nil
	})
	if h := f.m.Status.History; len(h) < 2 || h[0].Action != actionRolledBack || h[0].Digest != d2 || !strings.Contains(h[0].Reason, canary) || !strings.Contains(h[0].Reason, "CrashLoopBackOff") {
		t.Errorf("history %+v; want a rollback of %s naming %s and its crash", h, d2, canary)
	}
}
