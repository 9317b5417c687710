package testenv

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PodState is how the Kubelet stand-in runs a pod.
type PodState string

const (
	// PodRunning: Running, its containers started and Ready.
	PodRunning PodState = ""
	// PodStarting: Pending in ContainerCreating, not Ready, as while a
	// kubelet waits for a volume (a hostPath that does not exist yet) or
	// pulls an image.
	PodStarting PodState = "ContainerCreating"
	// PodCrashLoop: Running, its containers waiting in CrashLoopBackOff
	// after restarts, not Ready.
	PodCrashLoop PodState = "CrashLoopBackOff"
	// PodImagePullBackOff: Pending, its image cannot be pulled.
	PodImagePullBackOff PodState = "ImagePullBackOff"
)

// Kubelet stands in, for the DaemonSets of one namespace on a few named
// nodes, for the parts of a cluster that envtest does not run. It is a
// test double, not a kubelet: it writes the objects those parts would
// write, and nothing runs.
//
// What it does, as each part would:
//   - DaemonSet controller: for each DaemonSet and each of its nodes whose
//     labels match the template's nodeSelector and whose NoSchedule and
//     NoExecute taints the template tolerates, it keeps one pod, bound to
//     the node (spec.nodeName) and controlled by the DaemonSet, created
//     from the template of that moment (labels, annotations, spec, and the
//     pod-template-generation label). Node taints count, but for the
//     not-ready taint the API server puts on every new Node (the stand-in is
//     the kubelet that would make the node Ready). Only OnDelete is honoured: a pod is
//     never replaced because the template changed; a deleted pod is
//     recreated from the current template once it is gone. A pod on a node
//     that no longer matches is deleted. The DaemonSet's status counts
//     (desired, current, updated, ready; observedGeneration) are written.
//   - Kubelet: a pod's status becomes what the State hook says (Running
//     and Ready by default); a pod being deleted is removed at once (grace
//     period 0), as a kubelet does once its containers stopped.
//   - Garbage collector: pods whose DaemonSet is gone are deleted.
//
// What it does not do: pull images, start containers, mount volumes (a
// hostPath that does not exist holds nothing back unless the State hook
// says so), run probes, schedule onto nodes it was not given, or touch
// namespaces other than its own. Nodes are read, never written.
//
// StartProcessKubelet is the same stand-in with a kubelet that runs each
// pod's container as a local process instead of the State hook.
type Kubelet struct {
	c         client.Client
	namespace string
	nodes     []string

	mu    sync.Mutex
	state func(*corev1.Pod) PodState

	// procs runs the pods as processes; nil: nothing runs.
	procs *processes
}

// kubeletTick is how often the stand-in looks at the namespace.
const kubeletTick = 50 * time.Millisecond

// StartKubelet runs the stand-in until the test ends. c must be allowed to
// manage pods and DaemonSet status in namespace (a cluster admin).
func StartKubelet(t testing.TB, c client.Client, namespace string, nodes ...string) *Kubelet {
	t.Helper()
	k := newKubelet(c, namespace, nodes)
	k.start(t)
	return k
}

func newKubelet(c client.Client, namespace string, nodes []string) *Kubelet {
	return &Kubelet{c: c, namespace: namespace, nodes: slices.Clone(nodes)}
}

// TB is what the stand-in needs of a test: testing.TB has it, and so can a
// program that runs the stand-in outside a test (hack/localcluster).
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}

// start runs the stand-in's loop until the test ends, and then stops the
// pods' processes, if it runs any.
func (k *Kubelet) start(t TB) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(kubeletTick)
		defer tick.Stop()
		for {
			if err := k.sync(ctx); err != nil && ctx.Err() == nil {
				// Conflicts with the controller are routine; the next tick
				// tries again.
				t.Logf("kubelet stand-in: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if k.procs != nil {
			k.procs.stopAll()
		}
	})
}

// SetState makes state decide how each pod runs from now on; nil runs
// every pod. It is asked on every tick, so a pod can be made to crash, or
// to start, at any time.
func (k *Kubelet) SetState(state func(pod *corev1.Pod) PodState) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.state = state
}

func (k *Kubelet) stateOf(p *corev1.Pod) PodState {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.state == nil {
		return PodRunning
	}
	return k.state(p)
}

// sync is one look at the namespace: what each part would do now.
func (k *Kubelet) sync(ctx context.Context) error {
	var sets appsv1.DaemonSetList
	if err := k.c.List(ctx, &sets, client.InNamespace(k.namespace)); err != nil {
		return err
	}
	var pods corev1.PodList
	if err := k.c.List(ctx, &pods, client.InNamespace(k.namespace)); err != nil {
		return err
	}
	if k.procs != nil {
		k.procs.sweep(pods.Items)
	}
	nodes := map[string]*corev1.Node{}
	for _, name := range k.nodes {
		n := &corev1.Node{}
		if err := k.c.Get(ctx, client.ObjectKey{Name: name}, n); err == nil && n.DeletionTimestamp == nil {
			nodes[name] = n
		}
	}
	byOwner := map[string][]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !slices.Contains(k.nodes, p.Spec.NodeName) {
			continue
		}
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.Kind != "DaemonSet" {
			continue
		}
		if p.DeletionTimestamp != nil {
			if k.procs != nil && !k.procs.stopped(p) {
				continue // its process is stopping
			}
			if err := k.c.Delete(ctx, p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("remove pod %s: %w", p.Name, err)
			}
			continue
		}
		byOwner[string(ref.UID)] = append(byOwner[string(ref.UID)], p)
	}
	if k.procs != nil {
		if err := k.syncJobs(ctx); err != nil {
			return err
		}
	}
	owners := map[string]bool{}
	for i := range sets.Items {
		ds := &sets.Items[i]
		owners[string(ds.UID)] = true
		if err := k.syncDaemonSet(ctx, ds, nodes, byOwner[string(ds.UID)]); err != nil {
			return fmt.Errorf("DaemonSet %s: %w", ds.Name, err)
		}
	}
	for uid, orphans := range byOwner {
		if owners[uid] {
			continue
		}
		for _, p := range orphans {
			if err := k.c.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("collect pod %s of a deleted DaemonSet: %w", p.Name, err)
			}
		}
	}
	return nil
}

func (k *Kubelet) syncDaemonSet(ctx context.Context, ds *appsv1.DaemonSet, nodes map[string]*corev1.Node, pods []*corev1.Pod) error {
	if ds.DeletionTimestamp != nil {
		return nil
	}
	onNode := map[string]*corev1.Pod{}
	for _, p := range pods {
		onNode[p.Spec.NodeName] = p
	}
	st := appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation}
	for _, name := range slices.Sorted(maps.Keys(nodes)) {
		runs := runsOn(ds, nodes[name])
		p := onNode[name]
		switch {
		case !runs && p != nil:
			if err := k.c.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete pod %s from node %s, which no longer matches: %w", p.Name, name, err)
			}
			continue
		case !runs:
			continue
		case p == nil:
			created, err := k.createPod(ctx, ds, name)
			if err != nil {
				return err
			}
			p = created
		}
		st.DesiredNumberScheduled++
		st.CurrentNumberScheduled++
		if p.Labels["pod-template-generation"] == strconv.FormatInt(ds.Generation, 10) {
			st.UpdatedNumberScheduled++
		}
		ready, err := k.runPod(ctx, p)
		if err != nil {
			return err
		}
		if ready {
			st.NumberReady++
			st.NumberAvailable++
		} else {
			st.NumberUnavailable++
		}
	}
	if equality.Semantic.DeepEqual(ds.Status, st) {
		return nil
	}
	before := ds.DeepCopy()
	ds.Status = st
	return k.c.Status().Patch(ctx, ds, client.MergeFrom(before))
}

// runsOn: the DaemonSet's pod belongs on node, by nodeSelector and taints.
// The node.kubernetes.io/not-ready taint that the API server puts on every
// new Node does not count: on a cluster, the node's kubelet reports Ready
// and the node lifecycle controller removes it; here the stand-in is that
// kubelet.
func runsOn(ds *appsv1.DaemonSet, node *corev1.Node) bool {
	spec := ds.Spec.Template.Spec
	if !labels.SelectorFromSet(spec.NodeSelector).Matches(labels.Set(node.Labels)) {
		return false
	}
	for i := range node.Spec.Taints {
		taint := &node.Spec.Taints[i]
		if taint.Effect == corev1.TaintEffectPreferNoSchedule || taint.Key == corev1.TaintNodeNotReady {
			continue
		}
		if !slices.ContainsFunc(spec.Tolerations, func(t corev1.Toleration) bool { return tolerates(t, taint) }) {
			return false
		}
	}
	return true
}

// tolerates is the scheduler's match of a toleration and a taint, without
// the comparison operators (Lt, Gt) that are behind a feature gate.
func tolerates(t corev1.Toleration, taint *corev1.Taint) bool {
	if t.Effect != "" && t.Effect != taint.Effect {
		return false
	}
	if t.Key != "" && t.Key != taint.Key {
		return false
	}
	switch t.Operator {
	case corev1.TolerationOpExists:
		return true
	case "", corev1.TolerationOpEqual:
		return t.Key != "" && t.Value == taint.Value
	}
	return false
}

func (k *Kubelet) createPod(ctx context.Context, ds *appsv1.DaemonSet, node string) (*corev1.Pod, error) {
	tmpl := ds.Spec.Template.DeepCopy()
	p := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	p.Namespace, p.GenerateName, p.Name = ds.Namespace, ds.Name+"-", ""
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	p.Labels["pod-template-generation"] = strconv.FormatInt(ds.Generation, 10)
	p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}
	p.Spec.NodeName = node
	if err := k.c.Create(ctx, p); err != nil {
		return nil, fmt.Errorf("create pod on node %s: %w", node, err)
	}
	return p, nil
}

// runPod writes the status the State hook asks for (in process mode: what
// the pod's process does), when it differs, and says whether the pod is
// Ready.
func (k *Kubelet) runPod(ctx context.Context, p *corev1.Pod) (bool, error) {
	var want corev1.PodStatus
	if k.procs != nil {
		want = k.procs.status(p)
	} else {
		want = podStatus(p, k.stateOf(p))
	}
	ready := want.Phase == corev1.PodRunning && want.Conditions[0].Status == corev1.ConditionTrue
	if statusEqual(p.Status, want) {
		return ready, nil
	}
	before := p.DeepCopy()
	p.Status = want
	if err := k.c.Status().Patch(ctx, p, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
		return false, fmt.Errorf("status of pod %s: %w", p.Name, err)
	}
	return ready, nil
}

// podStatus is what a kubelet would report of p in state.
func podStatus(p *corev1.Pod, state PodState) corev1.PodStatus {
	now := metav1.Now()
	st := corev1.PodStatus{Phase: corev1.PodRunning, StartTime: p.Status.StartTime}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	ready := corev1.ConditionTrue
	if state != PodRunning {
		ready = corev1.ConditionFalse
	}
	if state == PodStarting || state == PodImagePullBackOff {
		st.Phase = corev1.PodPending
	}
	st.Conditions = []corev1.PodCondition{
		{Type: corev1.PodReady, Status: ready, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now},
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	for _, c := range p.Spec.Containers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: state == PodRunning}
		switch state {
		case PodRunning:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: *st.StartTime}
			started := true
			cs.Started = &started
		case PodCrashLoop:
			cs.RestartCount = 3
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: string(state), Message: "back-off 40s restarting failed container=" + c.Name}
			cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 1}
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: string(state)}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	return st
}

// statusEqual compares what a kubelet reports, ignoring times.
func statusEqual(a, b corev1.PodStatus) bool {
	if a.Phase != b.Phase || len(a.Conditions) != len(b.Conditions) || len(a.ContainerStatuses) != len(b.ContainerStatuses) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i].Type != b.Conditions[i].Type || a.Conditions[i].Status != b.Conditions[i].Status {
			return false
		}
	}
	for i := range a.ContainerStatuses {
		x, y := a.ContainerStatuses[i], b.ContainerStatuses[i]
		if x.Name != y.Name || x.Ready != y.Ready || x.RestartCount != y.RestartCount ||
			(x.State.Waiting == nil) != (y.State.Waiting == nil) || (x.State.Running == nil) != (y.State.Running == nil) ||
			(x.State.Waiting != nil && (x.State.Waiting.Reason != y.State.Waiting.Reason || x.State.Waiting.Message != y.State.Waiting.Message)) ||
			(x.State.Running != nil && !x.State.Running.StartedAt.Equal(&y.State.Running.StartedAt)) {
			return false
		}
	}
	return true
}
