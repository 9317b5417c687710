package cluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1 "github.com/bargeml/barge/api/v1alpha1"
)

// Issue 9 end to end: choosing a version by its metrics, a canary, a
// rollback, and a joint model, with the registry, the controller and each
// node's puller as real processes. A node's files are read from its disk.

// TestMetricGatedPromotion: of three versions in a range, the best one that
// passes spec.selection reaches the nodes, and the one that fails require
// never does; attaching better metrics to it promotes it, with no change to
// the InferenceModel, and status.resolved.reason says why each time.
func TestMetricGatedPromotion(t *testing.T) {
	ns := env.Namespace(t)
	nodes := startNodes(t, "edge-1", "edge-2", "edge-3")
	repo := registry + "/models/" + ns
	versions := map[string]map[string]string{}
	digests := map[string]string{}
	for v, acc := range map[string]float64{"1.0.0": 0.91, "1.1.0": 0.93, "1.2.0": 0.85} {
		versions[v] = map[string]string{"weights.bin": "weights " + v, "labels.txt": "cat\ndog\n"}
		digests[v] = push(t, repo+":"+v, versions[v])
		attachMetrics(t, repo+":"+v, map[string]float64{"accuracy": acc, "latency_ms": 12})
	}
	rec := record(t, ns)

	im := &bargev1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "classifier"},
		Spec: bargev1.InferenceModelSpec{
			Artifact: repo, TargetVersion: ">=1.0.0 <2", Insecure: true,
			NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
			Interval:     &metav1.Duration{Duration: 30 * time.Second},
			Selection: &bargev1.SelectionSpec{
				Require: []string{"metrics.accuracy >= 0.9"},
				Order:   []string{"metrics.accuracy"},
			},
			Rollout: bargev1.RolloutSpec{MaxConcurrentNodes: 3},
		},
	}
	createModel(t, im)

	// 1.1.0 is the most accurate that passes; 1.2.0, the newest, fails.
	nas := readyOn(t, ns, "classifier", digests["1.1.0"], "edge-1", "edge-2", "edge-3")
	holdsFiles(t, nodes, nas, versions["1.1.0"])
	wantReason := "accuracy 0.93, best of 3; 1 fails metrics.accuracy >= 0.9"
	im = getModel(t, ns, "classifier")
	if got := im.Status.Resolved; got.Version != "1.1.0" || got.Reason != wantReason {
		t.Errorf("status.resolved: %s because %q; want 1.1.0 because %q", got.Version, got.Reason, wantReason)
	}
	// barge versions runs the same selection and says the same.
	out := barge(t, "versions", repo, "--require", "metrics.accuracy >= 0.9", "--order", "metrics.accuracy")
	if want := "chosen: 1.1.0 (" + wantReason + ")"; !strings.Contains(out, want) {
		t.Errorf("barge versions does not end with %q:\n%s", want, out)
	}
	generation := im.Generation

	// Better metrics for 1.2.0: it wins at the next resolution.
	attachMetrics(t, repo+":1.2.0", map[string]float64{"accuracy": 0.97})
	resolveNow(t, ns, "classifier")
	nas = readyOn(t, ns, "classifier", digests["1.2.0"], "edge-1", "edge-2", "edge-3")
	holdsFiles(t, nodes, nas, versions["1.2.0"])
	im = getModel(t, ns, "classifier")
	if want := "accuracy 0.97, best of 3"; im.Status.Resolved.Reason != want {
		t.Errorf("after the attach, status.resolved.reason = %q, want %q", im.Status.Resolved.Reason, want)
	}
	if im.Generation != generation {
		t.Errorf("generation %d, was %d: a promotion needs no change to the InferenceModel", im.Generation, generation)
	}
	if h := im.Status.History; len(h) < 2 || h[0].Action != "RolledOut" || h[0].Digest != digests["1.2.0"] || h[1].Digest != digests["1.1.0"] ||
		!strings.HasPrefix(h[0].Reason, "accuracy 0.97") {
		t.Errorf("status.history = %s; want 1.2.0 then 1.1.0 rolled out, with the reason", historyText(h))
	}
	// 1.2.0 reached no node before its better metrics, 1.0.0 none at all.
	if first := rec.firstSpec(digests["1.2.0"]); first.Before(rec.firstReady(digests["1.1.0"], "edge-1", "edge-2", "edge-3")) {
		t.Errorf("1.2.0 was given to a node at %s, before 1.1.0 was on every node", first.Format(time.RFC3339Nano))
	}
	if !rec.firstSpec(digests["1.0.0"]).IsZero() {
		t.Errorf("1.0.0, which never won, was given to a node")
	}
	logModel(t, im)
	deleteModel(t, ns, "classifier")
}

// TestCanaryThenTheRest: with canary.nodes 1 and a pause, the first node
// takes a new version alone; the rest follow once it has held it for the
// pause. Without a pause, the rest wait for `barge rollout resume`.
func TestCanaryThenTheRest(t *testing.T) {
	ns := env.Namespace(t)
	nodes := startNodes(t, "edge-1", "edge-2", "edge-3")
	repo := registry + "/models/" + ns
	versions := map[string]map[string]string{}
	digests := map[string]string{}
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0"} {
		versions[v] = map[string]string{"weights.bin": "weights " + v}
		digests[v] = push(t, repo+":"+v, versions[v])
	}
	rec := record(t, ns)
	const pause = 5 * time.Second
	one := int32(1)
	im := &bargev1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "detector"},
		Spec: bargev1.InferenceModelSpec{
			Artifact: repo, TargetVersion: "1.0.0", Insecure: true,
			NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
			Rollout: bargev1.RolloutSpec{
				MaxConcurrentNodes: 2,
				Canary:             &bargev1.CanarySpec{Nodes: &one, Pause: &metav1.Duration{Duration: pause}},
			},
		},
	}
	createModel(t, im)
	readyOn(t, ns, "detector", digests["1.0.0"], "edge-1", "edge-2", "edge-3")

	// 1.1.0: edge-1 alone, while the others keep 1.0.0 on disk.
	setTargetVersion(t, ns, "detector", "1.1.0")
	im = waitModel(t, ns, "detector", "the canary paused on 1.1.0", func(im *bargev1.InferenceModel) error {
		if r := im.Status.Rollout; r == nil || r.Phase != bargev1.RolloutPaused || r.Digest != digests["1.1.0"] {
			return fmt.Errorf("status.rollout %+v", r)
		}
		return nil
	})
	if r := im.Status.Rollout; !slices.Equal(r.CanaryNodes, []string{"edge-1"}) || !strings.Contains(r.Message, "canary edge-1 holds 1.1.0") {
		t.Errorf("status.rollout: canary %v, %q; want edge-1 holding 1.1.0", r.CanaryNodes, r.Message)
	}
	for _, n := range []string{"edge-2", "edge-3"} {
		if na := nodeArtifacts(t, ns)[n]; na.Spec.Digest != digests["1.0.0"] || !equalFiles(nodes[n].files(t, na.Status.Path), versions["1.0.0"]) {
			t.Errorf("during the pause %s is on %s with %v; want 1.0.0's files", n, na.Spec.Digest, nodes[n].files(t, na.Status.Path))
		}
	}
	nas := readyOn(t, ns, "detector", digests["1.1.0"], "edge-1", "edge-2", "edge-3")
	holdsFiles(t, nodes, nas, versions["1.1.0"])
	canaryReady := rec.firstReady(digests["1.1.0"], "edge-1")
	for _, n := range []string{"edge-2", "edge-3"} {
		// canaryReadyAt is cut to the second: allow one.
		if moved := rec.firstSpecOn(digests["1.1.0"], n); moved.Sub(canaryReady) < pause-time.Second {
			t.Errorf("%s was given 1.1.0 %s after edge-1 held it; want the pause of %s", n, moved.Sub(canaryReady), pause)
		}
	}
	im = waitModel(t, ns, "detector", "1.1.0 recorded as rolled out", func(im *bargev1.InferenceModel) error {
		if h := im.Status.History; len(h) == 0 || h[0].Action != "RolledOut" || h[0].Digest != digests["1.1.0"] || h[0].Version != "1.1.0" {
			return fmt.Errorf("status.history = %s", historyText(h))
		}
		return nil
	})
	if r := im.Status.Rollout; r.Phase != bargev1.RolloutComplete || r.CanaryReadyAt == nil || r.ResumedAt == nil || r.ResumedAt.Sub(r.CanaryReadyAt.Time) < pause {
		t.Errorf("status.rollout = %+v; want Complete, resumed canary.pause after the canary was ready", r)
	}

	// No pause: the rest wait for barge rollout resume.
	updateModel(t, ns, "detector", func(im *bargev1.InferenceModel) {
		im.Spec.TargetVersion = "1.2.0"
		im.Spec.Rollout.Canary.Pause = nil
	})
	waitModel(t, ns, "detector", "the canary paused on 1.2.0", func(im *bargev1.InferenceModel) error {
		if r := im.Status.Rollout; r == nil || r.Phase != bargev1.RolloutPaused || r.Digest != digests["1.2.0"] || !slices.Equal(r.CanaryNodes, []string{"edge-1"}) {
			return fmt.Errorf("status.rollout %+v", r)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // a pause without canary.pause holds
	for n, na := range nodeArtifacts(t, ns) {
		want := map[bool]string{true: "1.2.0", false: "1.1.0"}[n == "edge-1"]
		if na.Spec.Digest != digests[want] || !equalFiles(nodes[n].files(t, na.Status.Path), versions[want]) {
			t.Errorf("paused without canary.pause: %s is on %s with %v; want %s", n, na.Spec.Digest, nodes[n].files(t, na.Status.Path), want)
		}
	}
	out := barge(t, "rollout", "resume", "detector", "-n", ns, "--kubeconfig", kubeconfig)
	if !strings.Contains(out, "resumed the rollout of 1.2.0") {
		t.Errorf("barge rollout resume says %q", out)
	}
	nas = readyOn(t, ns, "detector", digests["1.2.0"], "edge-1", "edge-2", "edge-3")
	holdsFiles(t, nodes, nas, versions["1.2.0"])
	im = waitModel(t, ns, "detector", "1.2.0 complete", func(im *bargev1.InferenceModel) error {
		if r := im.Status.Rollout; r == nil || r.Phase != bargev1.RolloutComplete || r.Digest != digests["1.2.0"] {
			return fmt.Errorf("status.rollout %+v", r)
		}
		return nil
	})
	if got := im.Annotations[bargev1.ResumeRolloutAnnotation]; got != digests["1.2.0"] {
		t.Errorf("the resume annotation is %q, want the digest resumed", got)
	}
	if h := im.Status.History; len(h) < 3 || h[0].Digest != digests["1.2.0"] || h[1].Digest != digests["1.1.0"] || h[2].Digest != digests["1.0.0"] {
		t.Errorf("status.history = %s; want 1.2.0, 1.1.0, 1.0.0 rolled out", historyText(h))
	}
	logModel(t, im)
	deleteModel(t, ns, "detector")
}

// TestRollbackWhenNodesFail: two of three nodes sit behind a slow link
// with a short pull timeout, so a large new version never reaches them.
// edge-1 takes it; edge-2 fails (maxFailedNodes 1 allows one); edge-3
// fails too, and every node goes back to the previous version, which
// each still has intact. The failed version is not tried again.
func TestRollbackWhenNodesFail(t *testing.T) {
	ns := env.Namespace(t)
	nodes := startNodes(t, "edge-1")
	slow := []string{"--limit-rate", "32K", "--pull-timeout", "2s"}
	for _, n := range []string{"edge-2", "edge-3"} {
		nodes[n] = startNode(t, n, slow...)
	}
	repo := registry + "/models/" + ns
	v1 := map[string]string{"weights.bin": "weights 1.0.0", "preprocess/prep.py": "print('1.0.0')"}
	d1 := push(t, repo+":1.0.0", v1)
	big := make([]byte, 4<<20) // two minutes at 32 KiB/s
	rand.Read(big)
	d2 := push(t, repo+":1.1.0", map[string]string{"weights.bin": string(big), "preprocess/prep.py": "print('1.1.0')"})
	rec := record(t, ns)

	im := &bargev1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "segmenter"},
		Spec: bargev1.InferenceModelSpec{
			Artifact: repo, TargetVersion: "1.0.0", Insecure: true,
			NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
			Interval:     &metav1.Duration{Duration: 30 * time.Second},
			Rollout:      bargev1.RolloutSpec{MaxConcurrentNodes: 1, FailurePolicy: bargev1.FailurePolicyRollback, MaxFailedNodes: 1},
		},
	}
	createModel(t, im)
	readyOn(t, ns, "segmenter", d1, "edge-1", "edge-2", "edge-3")

	setTargetVersion(t, ns, "segmenter", "1.1.0")
	im = waitModel(t, ns, "segmenter", "the rollback to 1.0.0 done", func(im *bargev1.InferenceModel) error {
		r := im.Status.Rollout
		switch {
		case r == nil || r.Phase != bargev1.RolloutRolledBack || r.Digest != d2 || r.Previous != d1:
			return fmt.Errorf("status.rollout %+v", r)
		case !meta.IsStatusConditionTrue(im.Status.Conditions, bargev1.StalledCondition):
			return fmt.Errorf("not Stalled yet: %v; nodes: %s", im.Status.Conditions, nodesText(t, ns))
		}
		return nil
	})
	nas := nodeArtifacts(t, ns)
	for _, n := range []string{"edge-1", "edge-2", "edge-3"} {
		na := nas[n]
		if na.Spec.Digest != d1 || na.Status.Phase != bargev1.NodeArtifactReady || na.Status.Digest != d1 {
			t.Errorf("%s after the rollback: spec %s, status %s %s; want Ready on 1.0.0", n, na.Spec.Digest, na.Status.Phase, na.Status.Digest)
		}
		if got := nodes[n].files(t, na.Status.Path); !equalFiles(got, v1) {
			t.Errorf("%s holds %v after the rollback; want 1.0.0's files, intact", n, got)
		}
	}
	// edge-1 really ran 1.1.0; the others never got it.
	if rec.firstReady(d2, "edge-1").IsZero() {
		t.Errorf("edge-1 never reported 1.1.0 Ready: the rollback did not move a node back")
	}
	for _, n := range []string{"edge-2", "edge-3"} {
		msg := rec.failure(d2, n)
		if msg == "" {
			t.Errorf("%s never reported 1.1.0 Failed", n)
		}
		t.Logf("%s reported: %s", n, msg)
	}
	ready := meta.FindStatusCondition(im.Status.Conditions, bargev1.ReadyCondition)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != "RolledBack" ||
		!strings.Contains(ready.Message, "rolled back 1.1.0") || !strings.Contains(ready.Message, "2 of 3 nodes failed (maxFailedNodes 1); edge-2: did not finish within the pull timeout of 2s") {
		t.Errorf("Ready condition %+v; want False, RolledBack, saying 2 of 3 nodes failed and why", ready)
	}
	h := im.Status.History
	if len(h) < 2 || h[0].Action != "RolledBack" || h[0].Digest != d2 || h[0].Version != "1.1.0" ||
		!strings.Contains(h[0].Reason, "edge-2: ") || h[1].Action != "RolledOut" || h[1].Digest != d1 {
		t.Errorf("status.history = %s; want 1.1.0 rolled back (naming edge-2's failure) after 1.0.0 rolled out", historyText(h))
	}

	// The next resolution still names 1.1.0: it is held, not tried again.
	rolledBack := time.Now()
	resolveNow(t, ns, "segmenter")
	im = waitModel(t, ns, "segmenter", "1.1.0 held at the next resolution", func(im *bargev1.InferenceModel) error {
		c := meta.FindStatusCondition(im.Status.Conditions, "VersionHeld")
		if c == nil || c.Reason != "VersionRejected" || im.Status.Resolved.ResolvedAt.Time.Before(rolledBack.Add(-time.Second)) {
			return fmt.Errorf("resolved at %s, VersionHeld %+v", im.Status.Resolved.ResolvedAt, c)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	if moves := rec.specsSince(d2, rolledBack); len(moves) > 0 {
		t.Errorf("after the rollback 1.1.0 was given again to %v", moves)
	}
	for n, na := range nodeArtifacts(t, ns) {
		if na.Spec.Digest != d1 || !equalFiles(nodes[n].files(t, na.Status.Path), v1) {
			t.Errorf("%s moved after the rollback: spec %s", n, na.Spec.Digest)
		}
	}
	logModel(t, im)
	deleteModel(t, ns, "segmenter")
}

// TestJointModelEdgeAndCloud: `barge push --joint` makes one version of two
// parts; the edge part's files reach the nodes, the cloud part is what the
// Deployment pulls, and the ConfigMap tells the edge where the cloud part
// answers.
func TestJointModelEdgeAndCloud(t *testing.T) {
	ns := env.Namespace(t)
	nodes := startNodes(t, "edge-1", "edge-2")
	repo := registry + "/models/" + ns
	edge := map[string]string{"backbone.onnx": "backbone 1.0.0", "preprocess/resize.py": "print('resize')"}
	v1 := pushJoint(t, repo+":1.0.0", edge, map[string]string{"head.onnx": "head 1.0.0"})

	createModel(t, jointModel(ns, "detector", repo, "1.0.0"))
	nas := edgePartOn(t, ns, "detector", repo, v1, "edge-1", "edge-2")
	holdsFiles(t, nodes, nas, edge) // the edge part's files only
	c := waitCloud(t, ns, "detector", repo+"@"+v1.cloud)
	im := getModel(t, ns, "detector")
	if c.url == "" || c.url != im.Status.URL || !strings.HasPrefix(c.url, "http://detector."+ns+".svc:") {
		t.Errorf("ConfigMap detector-joint cloud-url = %q, status.url = %q; want the Service's address", c.url, im.Status.URL)
	}
	if im.Status.Resolved.Digest != v1.index || im.Status.Rollout == nil || im.Status.Rollout.Phase != bargev1.RolloutComplete {
		t.Errorf("status: resolved %s, rollout %+v; want the index %s, Complete", im.Status.Resolved.Digest, im.Status.Rollout, v1.index)
	}
	deleteModel(t, ns, "detector")
}

// TestJointModelRollbackMovesBothParts: a new joint version whose edge
// layer the registry serves damaged fails on the first node; the rollback
// takes the nodes and the Deployment back to the previous version's parts.
func TestJointModelRollbackMovesBothParts(t *testing.T) {
	ns := env.Namespace(t)
	nodes := startNodes(t, "edge-1", "edge-2")
	repo := registry + "/models/" + ns
	edge1 := map[string]string{"backbone.onnx": "backbone 1.0.0"}
	v1 := pushJoint(t, repo+":1.0.0", edge1, map[string]string{"head.onnx": "head 1.0.0"})
	// The registry stores a blob once for all repositories: content of this
	// test alone, so that no other test (nor -count) reads the damage.
	v2 := pushJoint(t, repo+":1.1.0", map[string]string{"backbone.onnx": "backbone 1.1.0 of " + ns}, map[string]string{"head.onnx": "head 1.1.0"})
	corruptLayers(t, v2.edgeLayers)
	rec := record(t, ns)

	im := jointModel(ns, "detector", repo, "1.0.0")
	im.Spec.Rollout = bargev1.RolloutSpec{MaxConcurrentNodes: 1, FailurePolicy: bargev1.FailurePolicyRollback}
	createModel(t, im)
	edgePartOn(t, ns, "detector", repo, v1, "edge-1", "edge-2")
	waitCloud(t, ns, "detector", repo+"@"+v1.cloud)

	setTargetVersion(t, ns, "detector", "1.1.0")
	im = waitModel(t, ns, "detector", "the rollback of both parts", func(im *bargev1.InferenceModel) error {
		if r := im.Status.Rollout; r == nil || r.Phase != bargev1.RolloutRolledBack || r.Digest != v2.index || r.Previous != v1.index {
			return fmt.Errorf("status.rollout %+v", r)
		}
		return nil
	})
	nas := edgePartOn(t, ns, "detector", repo, v1, "edge-1", "edge-2")
	holdsFiles(t, nodes, nas, edge1)
	waitCloud(t, ns, "detector", repo+"@"+v1.cloud)
	if rec.firstCloud(repo + "@" + v2.cloud).IsZero() {
		t.Errorf("the Deployment never ran the new cloud part: nothing moved back")
	}
	t.Logf("edge-1 reported: %s", rec.failure(v2.edge, "edge-1"))
	if rec.failure(v2.edge, "edge-1") == "" || !rec.firstSpecOn(v2.edge, "edge-2").IsZero() {
		t.Errorf("want edge-1 to fail the new edge part and edge-2 never to get it (maxFailedNodes 0)")
	}
	if h := im.Status.History; len(h) < 2 || h[0].Action != "RolledBack" || h[0].Digest != v2.index || h[0].Version != "1.1.0" || !strings.Contains(h[0].Reason, "edge-1: layer backbone.onnx: fetch blob sha256:"+hex12(v2.edgeLayers[0])+": downloaded twice") {
		t.Errorf("status.history = %s; want the index 1.1.0 rolled back, naming edge-1's failure", historyText(h))
	}
	logModel(t, getModel(t, ns, "detector"))
	deleteModel(t, ns, "detector")
}

// startNodes starts a puller for each named node.
func startNodes(t *testing.T, names ...string) map[string]*node {
	t.Helper()
	out := map[string]*node{}
	for _, n := range names {
		out[n] = startNode(t, n)
	}
	return out
}

// attachMetrics attaches an evaluation to ref, as a data scientist does.
func attachMetrics(t *testing.T, ref string, metrics map[string]float64) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"metrics": metrics})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "eval.json")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	barge(t, "metrics", "attach", ref, file)
}

// joint is a pushed joint model: the index and its parts.
type joint struct {
	index, edge, cloud string
	// edgeLayers are the digests of the edge part's layers.
	edgeLayers []string
}

// pushJoint pushes edge and cloud as one joint model with barge push
// --joint, and reads its parts back with barge inspect.
func pushJoint(t *testing.T, ref string, edge, cloud map[string]string) joint {
	t.Helper()
	dirs := map[string]string{}
	for part, files := range map[string]map[string]string{"edge": edge, "cloud": cloud} {
		dirs[part] = t.TempDir()
		for name, content := range files {
			p := filepath.Join(dirs[part], filepath.FromSlash(name))
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	j := joint{index: barge(t, "push", "--framework", "onnx", "--joint", "edge="+dirs["edge"], "--joint", "cloud="+dirs["cloud"], ref)}
	var shown struct {
		Digest string `json:"digest"`
		Parts  map[string]struct {
			Digest string `json:"digest"`
			Files  []struct {
				Digest string `json:"digest"`
			} `json:"files"`
		} `json:"parts"`
	}
	if err := json.Unmarshal([]byte(barge(t, "inspect", "-o", "json", ref)), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.Digest != j.index || shown.Parts["edge"].Digest == "" || shown.Parts["cloud"].Digest == "" {
		t.Fatalf("barge inspect %s shows %+v; want the index %s with an edge and a cloud part", ref, shown, j.index)
	}
	j.edge, j.cloud = shown.Parts["edge"].Digest, shown.Parts["cloud"].Digest
	for _, f := range shown.Parts["edge"].Files {
		j.edgeLayers = append(j.edgeLayers, f.Digest)
	}
	return j
}

// corruptLayers damages blobs in the registry's storage, keeping their
// size, as a failing disk would: the registry serves them, and a node that
// checks digests refuses them.
func corruptLayers(t *testing.T, digests []string) {
	t.Helper()
	for _, d := range digests {
		hex := strings.TrimPrefix(d, "sha256:")
		p := filepath.Join(work, "registry", "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("the registry's copy of layer %s: %v", d, err)
		}
		for i := range b {
			b[i] ^= 0xff
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// edgePartOn waits until exactly nodes hold the edge part of the joint
// model j, Ready, and the rollout of j is complete or rolled back to it.
// (The model is not Ready: no Deployment controller runs here, so its cloud
// part never becomes available.)
func edgePartOn(t *testing.T, ns, name, repo string, j joint, nodes ...string) map[string]bargev1.NodeArtifact {
	t.Helper()
	var nas map[string]bargev1.NodeArtifact
	waitModel(t, ns, name, "the edge part of "+j.index+" Ready on "+strings.Join(nodes, ", "), func(im *bargev1.InferenceModel) error {
		r := im.Status.Rollout
		if r == nil || !(r.Phase == bargev1.RolloutComplete && r.Digest == j.index || r.Phase == bargev1.RolloutRolledBack && r.Previous == j.index) {
			return fmt.Errorf("status.rollout %+v", r)
		}
		nas = nodeArtifacts(t, ns)
		if len(nas) != len(nodes) {
			return fmt.Errorf("NodeArtifacts on %v", slices.Collect(maps.Keys(nas)))
		}
		for _, n := range nodes {
			na := nas[n]
			if na.Spec.Reference != repo+"@"+j.edge || na.Status.Phase != bargev1.NodeArtifactReady || na.Status.Digest != j.edge {
				return fmt.Errorf("%s: %s, %s on %s; want the edge part %s", n, na.Spec.Reference, na.Status.Phase, na.Status.Digest, j.edge)
			}
		}
		return nil
	})
	return nas
}

// jointModel deploys a joint model: the edge part to site a, the cloud part
// as a Deployment and Service.
func jointModel(ns, name, repo, version string) *bargev1.InferenceModel {
	return &bargev1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: bargev1.InferenceModelSpec{
			Artifact: repo, TargetVersion: version, Insecure: true,
			DeployToLayer: bargev1.LayerJoint, FrameworkType: "onnx",
			NodeSelector: map[string]string{"site": "a"},
		},
	}
}

// cloudSide is what the cluster runs of a joint model's cloud part.
type cloudSide struct {
	dep *appsv1.Deployment
	url string
}

// waitCloud waits until the model's Deployment pulls reference, and its
// Service and its joint ConfigMap exist. No kubelet runs here: the pods are
// never started, so this is the Deployment's spec.
func waitCloud(t *testing.T, ns, name, reference string) cloudSide {
	t.Helper()
	var c cloudSide
	ctx := context.Background()
	waitUntil(t, "the Deployment on "+reference+", its Service and ConfigMap", 60*time.Second, func() error {
		dep, svc, cm := &appsv1.Deployment{}, &corev1.Service{}, &corev1.ConfigMap{}
		for obj, key := range map[client.Object]string{dep: name, svc: name, cm: name + "-joint"} {
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: key}, obj); err != nil {
				return err
			}
		}
		if got := cloudReference(dep); got != reference {
			return fmt.Errorf("the Deployment pulls %q", got)
		}
		c = cloudSide{dep: dep, url: cm.Data["cloud-url"]}
		return nil
	})
	return c
}

// cloudReference is the model a cloud Deployment's pods read: its init
// container's (barge pull REF DIR), or its image volume's.
func cloudReference(dep *appsv1.Deployment) string {
	for _, c := range dep.Spec.Template.Spec.InitContainers {
		if len(c.Args) > 1 {
			return c.Args[len(c.Args)-2]
		}
	}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Image != nil {
			return v.Image.Reference
		}
	}
	return ""
}

func createModel(t *testing.T, im *bargev1.InferenceModel) {
	t.Helper()
	if err := env.Client.Create(context.Background(), im); err != nil {
		t.Fatal(err)
	}
}

// updateModel changes a model's spec as a user does, again on a conflict
// with the controller's writes.
func updateModel(t *testing.T, ns, name string, change func(*bargev1.InferenceModel)) {
	t.Helper()
	waitUntil(t, "an update of "+name, 30*time.Second, func() error {
		im := getModel(t, ns, name)
		change(im)
		return env.Client.Update(context.Background(), im)
	})
}

func setTargetVersion(t *testing.T, ns, name, version string) {
	t.Helper()
	updateModel(t, ns, name, func(im *bargev1.InferenceModel) { im.Spec.TargetVersion = version })
}

// resolveNow makes the controller resolve targetVersion again at once, as
// the end of spec.interval would (at least 30 s away):
// status.resolved.resolvedAt goes back by one interval, and an annotation
// wakes the controller, whose own clock then finds the interval over.
func resolveNow(t *testing.T, ns, name string) {
	t.Helper()
	ctx := context.Background()
	im := getModel(t, ns, name)
	before := im.DeepCopy()
	past := metav1.NewTime(time.Now().Add(-im.Spec.Interval.Duration - time.Second))
	im.Status.Resolved.ResolvedAt = &past
	if err := env.Client.Status().Patch(ctx, im, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	before = im.DeepCopy()
	if im.Annotations == nil {
		im.Annotations = map[string]string{}
	}
	im.Annotations["barge-test/resolve"] = time.Now().Format(time.RFC3339Nano)
	if err := env.Client.Patch(ctx, im, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

// deleteModel deletes a model while its nodes' pullers still run, and
// waits until they have removed its files: the next test's pullers then
// start on empty nodes.
func deleteModel(t *testing.T, ns, name string) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), getModel(t, ns, name)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, name+" and its NodeArtifacts to be gone", 60*time.Second, func() bool { return len(nodeArtifacts(t, ns)) == 0 })
}

// waitModel waits until check passes on the model, and returns it.
func waitModel(t *testing.T, ns, name, what string, check func(*bargev1.InferenceModel) error) *bargev1.InferenceModel {
	t.Helper()
	var im *bargev1.InferenceModel
	waitUntil(t, what, 90*time.Second, func() error {
		im = getModel(t, ns, name)
		return check(im)
	})
	return im
}

// waitUntil is waitFor that says, on time-out, why the condition last
// failed.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// holdsFiles checks that each node of nas holds exactly want.
func holdsFiles(t *testing.T, nodes map[string]*node, nas map[string]bargev1.NodeArtifact, want map[string]string) {
	t.Helper()
	for n, na := range nas {
		if got := nodes[n].files(t, na.Status.Path); !equalFiles(got, want) {
			t.Errorf("%s holds %v, want %v", n, summary(got), summary(want))
		}
	}
}

func equalFiles(got, want map[string]string) bool { return got != nil && maps.Equal(got, want) }

// summary shortens file contents for messages.
func summary(files map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range files {
		if len(v) > 40 {
			v = fmt.Sprintf("%d bytes", len(v))
		}
		out[k] = v
	}
	return out
}

// logModel shows what a user sees of the model (-v).
func logModel(t *testing.T, im *bargev1.InferenceModel) {
	t.Helper()
	if r := im.Status.Resolved; r != nil {
		t.Logf("resolved: %s %s: %s", r.Version, r.ShortDigest, r.Reason)
	}
	if r := im.Status.Rollout; r != nil {
		t.Logf("rollout: %s: %s", r.Phase, r.Message)
	}
	for _, c := range im.Status.Conditions {
		t.Logf("condition %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	t.Logf("history: %s", historyText(im.Status.History))
}

// nodesText says where each node stands, for messages.
func nodesText(t *testing.T, ns string) string {
	t.Helper()
	var parts []string
	for n, na := range nodeArtifacts(t, ns) {
		parts = append(parts, fmt.Sprintf("%s: spec %s gen %d, %s %s (observed %d) %q", n, hex12(na.Spec.Digest), na.Generation,
			na.Status.Phase, hex12(na.Status.Digest+"            "), na.Status.ObservedGeneration, na.Status.Message))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// hex12 is the short form of a digest.
func hex12(d string) string { return strings.TrimPrefix(d, "sha256:")[:12] }

func historyText(h []bargev1.HistoryEntry) string {
	var parts []string
	for _, e := range h {
		parts = append(parts, fmt.Sprintf("%s %s (%s) %q", e.Action, e.Version, e.Digest, e.Reason))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// recorder keeps every change the API server announced of a namespace's
// NodeArtifacts and Deployments, so a test can say what reached a node and
// when, not only where things ended.
type recorder struct {
	mu    sync.Mutex
	nas   []seenNodeArtifact
	cloud []seenCloud
}

type seenNodeArtifact struct {
	at                   time.Time
	node, spec, reported string
	phase                bargev1.NodeArtifactPhase
	message              string
}

type seenCloud struct {
	at        time.Time
	reference string
}

// record watches ns until the test ends.
func record(t *testing.T, ns string) *recorder {
	t.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{}
	var wg sync.WaitGroup
	for _, list := range []client.ObjectList{&bargev1.NodeArtifactList{}, &appsv1.DeploymentList{}} {
		w, err := wc.Watch(ctx, list, client.InNamespace(ns))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.consume(w)
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return r
}

func (r *recorder) consume(w watch.Interface) {
	defer w.Stop()
	for ev := range w.ResultChan() {
		now := time.Now()
		r.mu.Lock()
		switch o := ev.Object.(type) {
		case *bargev1.NodeArtifact:
			r.nas = append(r.nas, seenNodeArtifact{at: now, node: o.Spec.NodeName, spec: o.Spec.Digest, reported: o.Status.Digest, phase: o.Status.Phase, message: o.Status.Message})
		case *appsv1.Deployment:
			r.cloud = append(r.cloud, seenCloud{at: now, reference: cloudReference(o)})
		}
		r.mu.Unlock()
	}
}

// firstSpecOn is when a node was first told to hold digest; zero if never.
func (r *recorder) firstSpecOn(digest string, nodes ...string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.nas {
		if s.spec == digest && (len(nodes) == 0 || slices.Contains(nodes, s.node)) {
			return s.at
		}
	}
	return time.Time{}
}

// firstSpec is when any node was first told to hold digest.
func (r *recorder) firstSpec(digest string) time.Time { return r.firstSpecOn(digest) }

// firstReady is when the last of nodes first reported digest Ready.
func (r *recorder) firstReady(digest string, nodes ...string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last time.Time
	for _, n := range nodes {
		i := slices.IndexFunc(r.nas, func(s seenNodeArtifact) bool {
			return s.node == n && s.phase == bargev1.NodeArtifactReady && s.reported == digest
		})
		if i < 0 {
			return time.Time{}
		}
		if at := r.nas[i].at; at.After(last) {
			last = at
		}
	}
	return last
}

// failure is the first failure node reported while told to hold digest,
// or "".
func (r *recorder) failure(digest, node string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.nas {
		if s.node == node && s.spec == digest && s.phase == bargev1.NodeArtifactFailed {
			return s.message
		}
	}
	return ""
}

// specsSince lists the nodes told to hold digest after t.
func (r *recorder) specsSince(digest string, t time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.nas {
		if s.at.After(t) && s.spec == digest {
			out = append(out, s.node)
		}
	}
	return out
}

// firstCloud is when the Deployment first pulled reference.
func (r *recorder) firstCloud(reference string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.cloud {
		if c.reference == reference {
			return c.at
		}
	}
	return time.Time{}
}
