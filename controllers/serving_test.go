package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/internal/testenv"
)

// The tests of this file run serving pods with testenv.Kubelet, which
// stands in for the DaemonSet controller and the kubelet: what they prove
// of pods (which node gets one, when one is restarted, what a crash does
// to status) is proven against that stand-in, not a real kubelet.

const testServerImage = "example.com/edge/server:1"

func servingModel(ns, name, ref, version string) *v1alpha1.InferenceModel {
	m := edgeModel(ns, name, ref, version)
	m.Spec.Server = &v1alpha1.ServerSpec{Image: testServerImage, Port: 9000}
	return m
}

func waitDaemonSet(t *testing.T, ns, name string, check func(*appsv1.DaemonSet) error) *appsv1.DaemonSet {
	t.Helper()
	ds := &appsv1.DaemonSet{}
	eventually(t, "DaemonSet "+name, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ds); err != nil {
			return err
		}
		return check(ds)
	})
	return ds
}

// servingPodsByNode lists the namespace's serving pods by node; a pod
// being deleted is left out.
func servingPodsByNode(t *testing.T, ns string) map[string]*corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]*corev1.Pod{}
	for i := range list.Items {
		if p := &list.Items[i]; p.DeletionTimestamp == nil {
			out[p.Spec.NodeName] = p
		}
	}
	return out
}

// pullAll is every puller of the namespace reporting its NodeArtifact
// Ready on the digest of its spec.
func pullAll(t *testing.T, ns string, count int) {
	t.Helper()
	nas := waitNodeArtifacts(t, ns, "NodeArtifacts", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != count {
			return fmt.Errorf("%d NodeArtifacts, want %d", len(nas), count)
		}
		return nil
	})
	for _, na := range nas {
		puller(t, na, v1alpha1.NodeArtifactReady, na.Spec.Digest, "")
	}
}

// mounts stands in for the kubelet's wait on a hostPath volume of type
// Directory: a pod starts once its node's puller reports the digest it
// mounts Ready (the version directory exists), and then keeps running.
// hold, when it says so, keeps a pod starting longer.
type mounts struct {
	ns   string
	mu   sync.Mutex
	hold func(*corev1.Pod) bool
}

func (m *mounts) holdWhile(f func(*corev1.Pod) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hold = f
}

func (m *mounts) state(p *corev1.Pod) testenv.PodState {
	m.mu.Lock()
	hold := m.hold
	m.mu.Unlock()
	if hold != nil && hold(p) {
		return testenv.PodStarting
	}
	if podReady(p) {
		return testenv.PodRunning
	}
	var list v1alpha1.NodeArtifactList
	if err := k8s.List(context.Background(), &list, client.InNamespace(m.ns)); err != nil {
		return testenv.PodStarting
	}
	for _, na := range list.Items {
		if na.Spec.NodeName == p.Spec.NodeName && na.Status.Phase == v1alpha1.NodeArtifactReady &&
			na.Status.Digest == p.Annotations[v1alpha1.DigestAnnotation] {
			return testenv.PodRunning
		}
	}
	return testenv.PodStarting
}

func modelStatus(t *testing.T, m *v1alpha1.InferenceModel, check func() error) {
	t.Helper()
	eventually(t, "status of "+m.Name, func() error {
		get(t, m)
		return check()
	})
}

// TestServingDaemonSet: an edge model with a server gets a DaemonSet on
// exactly the matching nodes, whose pod mounts that node's version
// directory of the digest read-only and finds the model, its
// pre/postprocess code and its labels through the BARGE_ variables; the
// model is Ready once every node serves.
func TestServingDaemonSet(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "detector")
	d := pushModel(t, openRepo(t, ref), "1.0.0", map[string]string{
		"model.onnx": "w", "preprocess/resize.py": "print(1)", "postprocess/nms.py": "print(2)", "labels.txt": "cat\ndog\n",
	}, artifact.Metadata{Framework: "onnx", Labels: []string{"cat", "dog"}}).Digest.String()
	edge := nodes(t, ns, map[string]string{"role": "camera"}, 2)
	other := nodes(t, ns, nil, 1)
	k := testenv.StartKubelet(t, k8s, ns, append(edge, other...)...)
	k.SetState((&mounts{ns: ns}).state)

	m := servingModel(ns, "detector", ref, "1.0.0")
	m.Spec.NodeSelector = map[string]string{"barge-test": ns, "role": "camera"}
	m.Spec.ModelName = "yolo"
	m.Spec.Server.Args = []string{"--model=$(BARGE_MODEL_DIR)/model.onnx"}
	m.Spec.Server.Env = []corev1.EnvVar{{Name: "THREADS", Value: "2"}}
	m.Spec.Server.Tolerations = []corev1.Toleration{{Key: "edge", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	create(t, m)

	ds := waitDaemonSet(t, ns, "detector", func(*appsv1.DaemonSet) error { return nil })
	checkOwned(t, m, ds)
	if ds.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType {
		t.Errorf("update strategy %q, want OnDelete: the controller restarts each pod itself", ds.Spec.UpdateStrategy.Type)
	}
	tmpl := ds.Spec.Template
	if tmpl.Annotations[v1alpha1.DigestAnnotation] != d {
		t.Errorf("template annotations %v, want %s=%s", tmpl.Annotations, v1alpha1.DigestAnnotation, d)
	}
	if !maps.Equal(tmpl.Spec.NodeSelector, m.Spec.NodeSelector) || !slices.Equal(tmpl.Spec.Tolerations, m.Spec.Server.Tolerations) {
		t.Errorf("nodeSelector %v tolerations %v", tmpl.Spec.NodeSelector, tmpl.Spec.Tolerations)
	}
	if tmpl.Spec.AutomountServiceAccountToken == nil || *tmpl.Spec.AutomountServiceAccountToken {
		t.Error("the serving pod mounts a service account token; it needs none")
	}
	wantPath := fmt.Sprintf("/var/lib/barge/artifacts/%s/model-detector/versions/sha256-%s", ns, strings.TrimPrefix(d, "sha256:"))
	vols := map[string]corev1.Volume{}
	for _, v := range tmpl.Spec.Volumes {
		vols[v.Name] = v
	}
	if hp := vols["model"].HostPath; hp == nil || hp.Path != wantPath || hp.Type == nil || *hp.Type != corev1.HostPathDirectory {
		t.Errorf("model volume %+v, want hostPath %s of type Directory", vols["model"], wantPath)
	}
	srv := tmpl.Spec.Containers[0]
	if srv.Image != testServerImage || srv.Ports[0].ContainerPort != 9000 || !slices.Equal(srv.Args, m.Spec.Server.Args) {
		t.Errorf("server %s %v %v", srv.Image, srv.Ports, srv.Args)
	}
	mount := srv.VolumeMounts[slices.IndexFunc(srv.VolumeMounts, func(v corev1.VolumeMount) bool { return v.Name == "model" })]
	if mount.MountPath != "/models/yolo" || !mount.ReadOnly {
		t.Errorf("model mount %+v, want /models/yolo read-only", mount)
	}
	for name, value := range map[string]string{
		EnvModelName: "yolo", EnvModelDir: "/models/yolo", EnvModelDigest: d,
		EnvPreprocessDir: "/models/yolo/preprocess", EnvPostprocessDir: "/models/yolo/postprocess",
		EnvLabelsFile: "/etc/barge/labels.txt", "THREADS": "2",
	} {
		if !hasEnv(srv.Env, name, value) {
			t.Errorf("no %s=%s in %v", name, value, srv.Env)
		}
	}
	if tmpl.Annotations[labelsAnnotation] != "cat\ndog\n" || vols["barge-labels"].DownwardAPI == nil {
		t.Errorf("labels: annotation %q, volume %+v", tmpl.Annotations[labelsAnnotation], vols["barge-labels"])
	}

	eventually(t, "a pod on each matching node", func() error {
		pods := servingPodsByNode(t, ns)
		if got := slices.Sorted(maps.Keys(pods)); !slices.Equal(got, edge) {
			return fmt.Errorf("pods on %v, want %v", got, edge)
		}
		return nil
	})
	// Files not there yet: the pods wait, so does the model.
	modelStatus(t, m, func() error {
		return conds{ready: metav1.ConditionFalse, reason: ReasonRollingOut, reconciling: true}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	pullAll(t, ns, 2)
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Serving != 2 {
			return fmt.Errorf("nodes %+v, want 2 serving", m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "on 2 of 2 nodes, serving on 2"}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
}

// TestServingTolerations: a matching node whose taint the server does not
// tolerate gets no serving pod, and the model says so; with the toleration
// it serves.
func TestServingTolerations(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	pushModel(t, openRepo(t, ref), "1", map[string]string{"model.onnx": "w"}, artifact.Metadata{})
	names := nodes(t, ns, nil, 2)
	slices.Sort(names)
	tainted := &corev1.Node{}
	tainted.Name = names[1]
	get(t, tainted)
	before := tainted.DeepCopy()
	tainted.Spec.Taints = append(tainted.Spec.Taints, corev1.Taint{Key: "dedicated", Value: "camera", Effect: corev1.TaintEffectNoSchedule})
	if err := k8s.Patch(context.Background(), tainted, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	testenv.StartKubelet(t, k8s, ns, names...)
	m := servingModel(ns, "m", ref, "1")
	create(t, m)
	pullAll(t, ns, 2)
	modelStatus(t, m, func() error {
		return conds{ready: metav1.ConditionFalse, reason: ReasonServingProgressing, message: "1 of 2 nodes serve 1 (sha256:", reconciling: true}.
			check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	if c := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ReadyCondition); !strings.Contains(c.Message, "1 node(s) have no serving pod yet") {
		t.Errorf("Ready message %q does not say a node has no pod", c.Message)
	}
	before2 := m.DeepCopy()
	m.Spec.Server.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "camera", Effect: corev1.TaintEffectNoSchedule}}
	if err := k8s.Patch(context.Background(), m, client.MergeFrom(before2)); err != nil {
		t.Fatal(err)
	}
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Serving != 2 {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "serving on 2"}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	if pods := servingPodsByNode(t, ns); pods[names[1]] == nil {
		t.Errorf("no pod on the tainted node %s: %v", names[1], slices.Collect(maps.Keys(pods)))
	}
}

// TestServingSwitch: a new version restarts a node's serving pod only once
// its puller reports the new files Ready, and only maxConcurrentNodes pods
// at a time, a restarted pod counting until it is Ready again; the other
// nodes keep serving the old version meanwhile.
func TestServingSwitch(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	pushModel(t, repo, "1", map[string]string{"model.onnx": "v1"}, artifact.Metadata{})
	d2 := pushModel(t, repo, "2", map[string]string{"model.onnx": "v2"}, artifact.Metadata{}).Digest.String()
	names := nodes(t, ns, nil, 3)
	slices.Sort(names)
	mnt := &mounts{ns: ns}
	k := testenv.StartKubelet(t, k8s, ns, names...)
	k.SetState(mnt.state)
	m := servingModel(ns, "m", ref, "1")
	create(t, m)
	pullAll(t, ns, 3)
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Serving != 3 {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return nil
	})
	v1Pods := servingPodsByNode(t, ns)

	// New pods on 2 start only when the test lets them.
	var mu sync.Mutex
	started := map[string]bool{}
	mnt.holdWhile(func(p *corev1.Pod) bool {
		mu.Lock()
		defer mu.Unlock()
		return p.Annotations[v1alpha1.DigestAnnotation] == d2 && !started[p.Spec.NodeName]
	})
	start := func(node string) {
		mu.Lock()
		defer mu.Unlock()
		started[node] = true
	}
	get(t, m)
	before := m.DeepCopy()
	m.Spec.TargetVersion = "2"
	if err := k8s.Patch(context.Background(), m, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	waitDaemonSet(t, ns, "m", func(ds *appsv1.DaemonSet) error {
		if got := ds.Spec.Template.Annotations[v1alpha1.DigestAnnotation]; got != d2 {
			return fmt.Errorf("template on %s", got)
		}
		return nil
	})
	// unchanged checks, for a while, that node's pod is still the v1 pod.
	unchanged := func(node, why string) {
		t.Helper()
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if p := servingPodsByNode(t, ns)[node]; p == nil || p.UID != v1Pods[node].UID {
				t.Fatalf("the serving pod of %s was restarted %s", node, why)
			}
		}
	}
	restarted := func(node string) {
		t.Helper()
		eventually(t, "pod of "+node+" on 2", func() error {
			p := servingPodsByNode(t, ns)[node]
			if p == nil || p.Annotations[v1alpha1.DigestAnnotation] != d2 {
				return fmt.Errorf("pod %v", p)
			}
			return nil
		})
	}
	modelStatus(t, m, func() error {
		if m.Status.Resolved.Digest != d2 {
			return fmt.Errorf("resolved %s", m.Status.Resolved.Digest)
		}
		return nil
	})
	unchanged(names[0], "before its puller reported version 2 Ready")

	nas := nodeArtifacts(t, ns)
	puller(t, nas[names[0]], v1alpha1.NodeArtifactReady, d2, "")
	restarted(names[0])
	// The next node gets its files while the first node's new pod starts:
	// its pod waits for that one.
	nas = waitNodeArtifacts(t, ns, "second node moved", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, d2); len(got) != 2 {
			return fmt.Errorf("on 2: %v", got)
		}
		return nil
	})
	second := onDigest(nas, d2)[1]
	puller(t, nas[second], v1alpha1.NodeArtifactReady, d2, "")
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Ready != 2 || m.Status.Nodes.Serving != 0 {
			return fmt.Errorf("nodes %+v, want 2 ready, none serving 2", m.Status.Nodes)
		}
		return nil
	})
	unchanged(second, "while another node's pod was restarting (maxConcurrentNodes 1)")

	start(names[0])
	restarted(second)
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Serving != 1 {
			return fmt.Errorf("nodes %+v, want 1 serving", m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionFalse, reason: ReasonRollingOut, reconciling: true}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	start(second)
	third := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == names[0] || n == second })[0]
	nas = waitNodeArtifacts(t, ns, "third node moved", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if nas[third].Spec.Digest != d2 {
			return fmt.Errorf("%s on %s", third, nas[third].Spec.Digest)
		}
		return nil
	})
	puller(t, nas[third], v1alpha1.NodeArtifactReady, d2, "")
	start(third)
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Serving != 3 {
			return fmt.Errorf("nodes %+v, want 3 serving", m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "serving on 3"}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	if err := findEvent(ns, "m", ReasonServingRestarted); err != nil {
		t.Error(err)
	}
}

// TestServingFailure: a server that crashes, or whose image cannot be
// pulled, keeps the model from Ready with the node and the reason; healed,
// the model is Ready.
func TestServingFailure(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	pushModel(t, openRepo(t, ref), "1", map[string]string{"model.onnx": "w"}, artifact.Metadata{})
	names := nodes(t, ns, nil, 2)
	slices.Sort(names)
	k := testenv.StartKubelet(t, k8s, ns, names...)
	var mu sync.Mutex
	states := map[string]testenv.PodState{names[0]: testenv.PodCrashLoop, names[1]: testenv.PodImagePullBackOff}
	k.SetState(func(p *corev1.Pod) testenv.PodState {
		mu.Lock()
		defer mu.Unlock()
		return states[p.Spec.NodeName]
	})
	m := servingModel(ns, "m", ref, "1")
	create(t, m)
	pullAll(t, ns, 2)
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Serving != 0 {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionFalse, reason: ReasonServingFailed, message: "fails on 2 of 2 nodes; " + names[0] + ": server: CrashLoopBackOff", reconciling: true}.
			check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	mu.Lock()
	states = map[string]testenv.PodState{names[1]: testenv.PodImagePullBackOff}
	mu.Unlock()
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Serving != 1 {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionFalse, reason: ReasonServingFailed, message: "fails on 1 of 2 nodes; " + names[1] + ": server: ImagePullBackOff", reconciling: true}.
			check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	mu.Lock()
	states = nil
	mu.Unlock()
	modelStatus(t, m, func() error {
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "serving on 2"}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
}

// TestServingImageOnEdge: spec.image on the edge runs the image pinned to
// its digest on the matching nodes, with no files to place.
func TestServingImageOnEdge(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "serving")
	d := pushImage(t, openRepo(t, ref), "2.1").Digest.String()
	names := nodes(t, ns, nil, 2)
	testenv.StartKubelet(t, k8s, ns, names...)
	m := &v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "detector"}}
	m.Spec.Image = ref + ":2.1"
	m.Spec.Insecure = true
	m.Spec.FrameworkType = "triton"
	m.Spec.NodeSelector = map[string]string{"barge-test": ns}
	create(t, m)
	ds := waitDaemonSet(t, ns, "detector", func(*appsv1.DaemonSet) error { return nil })
	spec := ds.Spec.Template.Spec
	if c := spec.Containers[0]; c.Image != ref+"@"+d || c.Ports[0].ContainerPort != DefaultServingImages()["triton"].Port || len(spec.Volumes) != 0 {
		t.Errorf("pod spec %+v, want the image pinned to %s on triton's port, no volumes", spec, d)
	}
	if c := spec.Containers[0]; !hasEnv(c.Env, EnvModelDigest, d) || !hasEnv(c.Env, EnvModelName, "detector") || slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == EnvModelDir }) {
		t.Errorf("env %v: want the digest and name, no model directory", c.Env)
	}
	modelStatus(t, m, func() error {
		if m.Status.Nodes != (v1alpha1.NodeCounts{Desired: 2, Ready: 2, Serving: 2}) {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "2.1 (sha256:" + d[7:19] + ") on 2 of 2 nodes, serving on 2"}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	if nas := nodeArtifacts(t, ns); len(nas) != 0 {
		t.Errorf("NodeArtifacts %v for an image", keys(nas))
	}
}

// TestServingRemoved: removing spec.server deletes the DaemonSet and its
// pods, and so does deleting the model.
func TestServingRemoved(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	pushModel(t, openRepo(t, ref), "1", map[string]string{"model.onnx": "w"}, artifact.Metadata{})
	names := nodes(t, ns, nil, 1)
	testenv.StartKubelet(t, k8s, ns, names...)
	m := servingModel(ns, "m", ref, "1")
	create(t, m)
	pullAll(t, ns, 1)
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Serving != 1 {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return nil
	})
	gone := func(what string) {
		t.Helper()
		eventually(t, what, func() error {
			err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "m"}, &appsv1.DaemonSet{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("DaemonSet: %v", err)
			}
			if pods := servingPodsByNode(t, ns); len(pods) > 0 {
				return fmt.Errorf("pods on %v", slices.Collect(maps.Keys(pods)))
			}
			return nil
		})
	}
	get(t, m)
	before := m.DeepCopy()
	m.Spec.Server = nil
	if err := k8s.Patch(context.Background(), m, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	gone("server removed")
	modelStatus(t, m, func() error {
		if m.Status.Nodes.Serving != 0 || m.Status.ObservedGeneration != m.Generation {
			return fmt.Errorf("nodes %+v", m.Status.Nodes)
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})

	before = m.DeepCopy()
	m.Spec.Server = &v1alpha1.ServerSpec{Image: testServerImage}
	if err := k8s.Patch(context.Background(), m, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	waitDaemonSet(t, ns, "m", func(*appsv1.DaemonSet) error { return nil })
	if err := k8s.Delete(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	for _, na := range waitNodeArtifacts(t, ns, "NodeArtifact deleted", func(nas map[string]*v1alpha1.NodeArtifact) error {
		for _, na := range nas {
			if na.DeletionTimestamp == nil {
				return fmt.Errorf("%s not being deleted", na.Name)
			}
		}
		return nil
	}) {
		releaseFiles(t, na)
	}
	gone("model deleted")
}

// TestServingRefusals: what cannot serve stalls with a reason that says
// what to change, and a DaemonSet of the model's name that is not the
// model's is left alone.
func TestServingRefusals(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	pushModel(t, openRepo(t, ref), "1", map[string]string{"m.bin": "w"}, artifact.Metadata{})
	reserved := servingModel(ns, "reserved-env", ref, "1")
	reserved.Spec.Server.Env = []corev1.EnvVar{{Name: "BARGE_MODEL_DIR", Value: "/tmp"}}
	noRuntime := servingModel(ns, "no-runtime", ref, "1")
	noRuntime.Spec.Server.Image, noRuntime.Spec.FrameworkType = "", "caffe"
	twoImages := &v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "two-images"}}
	twoImages.Spec.Image, twoImages.Spec.Server = ref+":1", &v1alpha1.ServerSpec{Image: testServerImage}
	taken := servingModel(ns, "taken", ref, "1")
	labels := map[string]string{"app": "mine"}
	create(t, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "mine"}}}},
	}})
	for _, tt := range []struct {
		m    *v1alpha1.InferenceModel
		want conds
	}{
		{reserved, conds{ready: metav1.ConditionFalse, reason: ReasonInvalidSpec, message: "spec.server.env sets BARGE_MODEL_DIR", stalled: true}},
		{noRuntime, conds{ready: metav1.ConditionFalse, reason: ReasonNoServingImage, message: `no serving image for frameworkType "caffe": set spec.server.image, or spec.frameworkType to one of onnx, pytorch, tensorflow, triton`, stalled: true}},
		{twoImages, conds{ready: metav1.ConditionFalse, reason: ReasonInvalidSpec, message: "spec.server.image and spec.image both name the image", stalled: true}},
		{taken, conds{ready: metav1.ConditionFalse, reason: ReasonObjectConflict, message: "a DaemonSet named taken already exists", stalled: true}},
	} {
		create(t, tt.m)
		t.Run(tt.m.Name, func(t *testing.T) {
			modelStatus(t, tt.m, func() error {
				return tt.want.check(tt.m.Generation, tt.m.Status.ObservedGeneration, tt.m.Status.Conditions)
			})
		})
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"}}
	get(t, ds)
	if len(ds.OwnerReferences) != 0 || ds.Spec.Template.Spec.Containers[0].Image != "mine" {
		t.Errorf("the user's DaemonSet was changed: %+v", ds)
	}
}

// --- without the API server ---

func servingPod(node, digest, hash string, ready bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-" + node, UID: types.UID(node),
		Annotations: map[string]string{v1alpha1.DigestAnnotation: digest, templateHashAnnotation: hash}}}
	p.Spec.NodeName = node
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	return p
}

func TestPlanRestarts(t *testing.T) {
	terminating := servingPod("d", "old", "h1", true)
	terminating.DeletionTimestamp = &metav1.Time{}
	all := func(string) bool { return true }
	for _, tt := range []struct {
		name    string
		pods    []*corev1.Pod
		ready   func(string) bool
		desired int32
		max     int32
		want    []string
	}{
		{"files not ready anywhere", []*corev1.Pod{servingPod("a", "old", "h1", true), servingPod("b", "old", "h1", true)},
			func(string) bool { return false }, 2, 2, nil},
		{"only nodes with their files", []*corev1.Pod{servingPod("a", "old", "h1", true), servingPod("b", "old", "h1", true)},
			func(n string) bool { return n == "b" }, 2, 2, []string{"b"}},
		{"at most max, by name", []*corev1.Pod{servingPod("c", "old", "h1", true), servingPod("a", "old", "h1", true), servingPod("b", "old", "h1", true)},
			all, 3, 2, []string{"a", "b"}},
		{"a pod that serves nothing first", []*corev1.Pod{servingPod("a", "old", "h1", true), servingPod("b", "old", "h1", false)},
			all, 2, 1, []string{"b"}},
		{"a new pod not Ready is in flight", []*corev1.Pod{servingPod("a", "new", "h2", false), servingPod("b", "old", "h1", true)},
			all, 2, 1, nil},
		{"a new pod Ready is not", []*corev1.Pod{servingPod("a", "new", "h2", true), servingPod("b", "old", "h1", true)},
			all, 2, 1, []string{"b"}},
		{"a terminating pod is in flight", []*corev1.Pod{terminating, servingPod("b", "old", "h1", true)},
			all, 2, 1, nil},
		{"a node without its pod is in flight", []*corev1.Pod{servingPod("b", "old", "h1", true)},
			all, 2, 1, nil},
		{"a spec change needs no new files", []*corev1.Pod{servingPod("a", "new", "h1", true)},
			func(string) bool { return false }, 1, 1, []string{"a"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range planRestarts(tt.pods, "h2", "new", tt.ready, tt.desired, tt.max) {
				got = append(got, p.Spec.NodeName)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("restart %v, want %v", got, tt.want)
			}
		})
	}
}

func TestServingByNode(t *testing.T) {
	crash := servingPod("a", "new", "h", false)
	crash.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "server", RestartCount: 2,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 20s"}}}}
	flapping := servingPod("b", "new", "h", true)
	flapping.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "server", RestartCount: maxServingRestarts + 1,
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}}}}
	old := servingPod("c", "old", "h", true)
	old.DeletionTimestamp = &metav1.Time{}
	replacement := servingPod("c", "new", "h", false)
	got := servingByNode([]*corev1.Pod{crash, flapping, old, replacement, servingPod("", "new", "h", false)})
	want := map[string]nodeServing{
		"a": {digest: "new", failed: "server: CrashLoopBackOff back-off 20s"},
		"b": {digest: "new", ready: true, failed: "server restarted 6 times, last OOMKilled (exit code 137)"},
		"c": {digest: "new"},
	}
	if !maps.Equal(got, want) {
		t.Errorf("serving %+v\nwant %+v", got, want)
	}
}

func TestCheckServerImage(t *testing.T) {
	r := &InferenceModelReconciler{opts: Options{AllowedRegistries: []string{"registry.example.com", "docker.io"}}}
	for _, tt := range []struct{ image, want string }{
		{"registry.example.com/serving/onnx:1", ""},
		{"nginx:1.27", ""},
		{"ghcr.io/acme/server:1", "registry ghcr.io, which is not allowed: this controller runs images only from registry.example.com, docker.io"},
		{"Not A Reference", "is not an image reference"},
	} {
		err := r.checkServerImage(tt.image)
		if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.image, err, tt.want)
		}
	}
}
