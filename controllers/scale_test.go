package controllers

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// nodeArtifactLists is how many LISTs of NodeArtifacts the API server has
// answered so far, every client together (apiserver_request_total).
func nodeArtifactLists(t *testing.T) int {
	t.Helper()
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(env.Config.Host + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line := regexp.MustCompile(`^apiserver_request_total\{(.*)\} (\S+)$`)
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil || !regexp.MustCompile(`resource="nodeartifacts"`).MatchString(m[1]) || !regexp.MustCompile(`verb="LIST"`).MatchString(m[1]) {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		n += int(v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestManyNodesFewPasses: a model on more nodes than one pass creates
// (the suite's MaxCreatesPerPass is 4) gets a NodeArtifact on every node
// over a few passes that follow at once, and is Ready once they are; its
// later passes, re-resolves included, read its NodeArtifacts from the
// controller's cache: the API server answers no LIST of NodeArtifacts.
func TestManyNodesFewPasses(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	d := pushModel(t, openRepo(t, ref), "1.0.0", map[string]string{"m.onnx": "w"}, artifact.Metadata{}).Digest.String()
	names := nodes(t, ns, nil, 11)
	m := edgeModel(ns, "m", ref, "1.0.0")
	create(t, m)
	nas := waitNodeArtifacts(t, ns, "a NodeArtifact on each of 11 nodes", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != len(names) {
			return fmt.Errorf("%d NodeArtifacts", len(nas))
		}
		return nil
	})
	for _, na := range nas {
		puller(t, na, v1alpha1.NodeArtifactReady, d, "")
	}
	eventually(t, "Ready on 11 nodes", func() error {
		get(t, m)
		if m.Status.Nodes.Ready != 11 || m.Status.Nodes.Desired != 11 {
			return fmt.Errorf("status.nodes %+v", m.Status.Nodes)
		}
		return conditionIs(m.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionTrue, ReasonSucceeded, "")
	})

	lists := nodeArtifactLists(t)
	for i := range 3 {
		get(t, m)
		at := m.Status.Resolved.ResolvedAt.Time
		intervalPassed(t, m)
		eventually(t, fmt.Sprintf("re-resolve %d", i), func() error {
			get(t, m)
			if r := m.Status.Resolved; r == nil || r.ResolvedAt == nil || !r.ResolvedAt.After(at.Add(-time.Second)) || r.ResolvedAt.Time.Before(time.Now().Add(-time.Minute)) {
				return fmt.Errorf("status.resolved %+v", m.Status.Resolved)
			}
			return conditionIs(m.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionTrue, ReasonSucceeded, "")
		})
	}
	if got := nodeArtifactLists(t) - lists; got != 0 {
		t.Errorf("3 re-resolves of a model that is Ready made the API server answer %d LISTs of NodeArtifacts; want none (the cache)", got)
	}
}

// TestNodeReportsCoalesced: the nodes of a model that report Ready within
// moments of each other, as in a rollout, make one or two passes, status
// writes and NodeReady events of the model, not one per node: the
// NodeArtifact events wait Options.NodeReportDelay before the owner's pass.
func TestNodeReportsCoalesced(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	d := pushModel(t, openRepo(t, ref), "1.0.0", map[string]string{"m.onnx": "w"}, artifact.Metadata{}).Digest.String()
	names := nodes(t, ns, nil, 12)
	m := edgeModel(ns, "m", ref, "1.0.0")
	create(t, m)
	nas := waitNodeArtifacts(t, ns, "a NodeArtifact on each of 12 nodes", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != len(names) {
			return fmt.Errorf("%d NodeArtifacts", len(nas))
		}
		return nil
	})
	eventually(t, "every NodeArtifact counted as desired", func() error {
		get(t, m)
		if m.Status.Nodes.Desired != 12 {
			return fmt.Errorf("status.nodes %+v", m.Status.Nodes)
		}
		return nil
	})
	time.Sleep(2 * DefaultNodeReportDelay) // the passes of the creates are over
	get(t, m)
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(t.Context(), &v1alpha1.InferenceModelList{}, client.InNamespace(ns),
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: m.ResourceVersion, FieldSelector: "metadata.name=m"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	for _, na := range nas { // 12 reports within a few hundred milliseconds
		puller(t, na, v1alpha1.NodeArtifactReady, d, "")
	}
	writes := 0
	timeout := time.After(time.Minute)
	for ready := false; !ready; {
		select {
		case ev := <-w.ResultChan():
			got, ok := ev.Object.(*v1alpha1.InferenceModel)
			if !ok {
				t.Fatalf("watch: %v", ev.Object)
			}
			writes++
			ready = got.Status.Nodes.Ready == 12
		case <-timeout:
			t.Fatalf("the model did not count 12 nodes Ready within a minute")
		}
	}
	var events corev1.EventList
	if err := k8s.List(t.Context(), &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	nodeReady := 0
	for _, e := range events.Items {
		if e.Reason == ReasonNodeReady && e.InvolvedObject.Name == "m" {
			nodeReady += int(max(e.Count, 1))
		}
	}
	// The reports take a fraction of the delay here; under load they can
	// straddle it, hence 3 rather than 1.
	if writes > 3 || nodeReady > 3 {
		t.Errorf("12 nodes reporting Ready together made %d writes of the model and %d NodeReady events; want at most 3 of each", writes, nodeReady)
	}
}

// When the cache lags behind a pass's writes, the pass lists from the API
// server not older than the newest of them (so from the API server's watch
// cache): the highest resourceVersion logged for the owner, none once the
// cache has shown them all or only deletions are pending.
func TestWriteLogNewest(t *testing.T) {
	var l writeLog
	owner := types.UID("owner")
	if got := l.newest(owner); got != "" {
		t.Errorf("empty log: newest %q, want none", got)
	}
	for _, rv := range []string{"90", "1200", "300"} {
		l.wrote(owner, &v1alpha1.NodeArtifact{ObjectMeta: metav1.ObjectMeta{Name: "na-" + rv, ResourceVersion: rv}})
	}
	l.deleted(owner, "na-gone")
	if got := l.newest(owner); got != "1200" {
		t.Errorf("newest %q, want 1200 (the highest, compared as numbers)", got)
	}
	l.forget(owner)
	l.deleted(owner, "na-gone")
	if got := l.newest(owner); got != "" {
		t.Errorf("only a deletion pending: newest %q, want none (a consistent read)", got)
	}
}
