package controllers

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// freshRepo is a repository of the shared registry that no earlier run
// of the test (go test -count=N) has pushed to or attached metrics in.
func freshRepo(t *testing.T) string {
	return repoName(t, fmt.Sprintf("m%d", time.Now().UnixNano()))
}

// attach adds a metrics referrer to desc.
func attach(t *testing.T, repo *remote.Repository, desc ocispec.Descriptor, metrics map[string]float64) {
	t.Helper()
	if _, err := artifact.AttachMetrics(context.Background(), repo, desc, artifact.Metrics{Metrics: metrics, Time: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
}

// pushVersions pushes one small model per version, with metrics when
// given, and returns the descriptors by version.
func pushVersions(t *testing.T, repo *remote.Repository, versions []string, metrics map[string]map[string]float64) map[string]ocispec.Descriptor {
	t.Helper()
	out := map[string]ocispec.Descriptor{}
	for _, v := range versions {
		d := pushModel(t, repo, v, map[string]string{"m.onnx": "weights " + v}, artifact.Metadata{Task: "object-detection"})
		if m, ok := metrics[v]; ok {
			attach(t, repo, d, m)
		}
		out[v] = d
	}
	return out
}

// intervalPassed makes the next pass of m resolve again, as the end of
// spec.interval does: status.resolved.resolvedAt goes back by one interval
// and an annotation wakes the controller, whose own clock check then finds
// the interval over. TestTagMovedOnInterval waits for the real clock; this
// keeps these tests fast.
func intervalPassed(t *testing.T, m *v1alpha1.InferenceModel) {
	t.Helper()
	ctx := context.Background()
	get(t, m)
	before := m.DeepCopy()
	past := metav1.NewTime(time.Now().Add(-intervalOf(m.Spec.Interval) - time.Second))
	m.Status.Resolved.ResolvedAt = &past
	if err := k8s.Status().Patch(ctx, m, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	before = m.DeepCopy()
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations["barge-test/poke"] = time.Now().Format(time.RFC3339Nano)
	if err := k8s.Patch(ctx, m, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

// resolvedTo waits until m runs version d, Ready, with reason containing
// why, and its one node holds d; the puller then reports the node Ready.
func resolvedTo(t *testing.T, m *v1alpha1.InferenceModel, ns, version string, d ocispec.Descriptor, why string) {
	t.Helper()
	waitNodeArtifacts(t, ns, "the node on "+version, func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, d.Digest.String()); len(got) != 1 {
			return fmt.Errorf("nodes on %s: %v", version, got)
		}
		return nil
	})
	for _, na := range nodeArtifacts(t, ns) {
		puller(t, na, v1alpha1.NodeArtifactReady, d.Digest.String(), "")
	}
	eventually(t, "resolved to "+version, func() error {
		get(t, m)
		r := m.Status.Resolved
		if r == nil || r.Version != version || r.Digest != d.Digest.String() || !strings.Contains(r.Reason, why) {
			return fmt.Errorf("status.resolved = %+v; want %s with a reason containing %q", r, version, why)
		}
		if err := conditionIs(m.Status.Conditions, HeldCondition, "", "", ""); err != nil {
			return err
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
}

// TestSelectionRange: a range runs the most accurate version that passes
// spec.selection, not the newest, and says why in status.resolved.reason;
// attaching better metrics to another version (barge metrics attach)
// promotes it at the next resolution, within one interval, with no change
// to the object.
func TestSelectionRange(t *testing.T) {
	ns := env.Namespace(t)
	ref := freshRepo(t)
	repo := openRepo(t, ref)
	ds := pushVersions(t, repo, []string{"1.0.0", "1.1.0", "1.2.0", "1.3.0", "2.0.0"}, map[string]map[string]float64{
		"1.0.0": {"accuracy": 0.88},
		"1.1.0": {"accuracy": 0.931},
		"1.2.0": {"accuracy": 0.925},
		"2.0.0": {"accuracy": 0.99}, // outside the range
	})
	nodes(t, ns, nil, 1)
	m := edgeModel(ns, "m", ref, ">=1.0 <2")
	m.Spec.Selection = &v1alpha1.SelectionSpec{
		Require: []string{"metrics.accuracy >= 0.9", `metadata.task == "object-detection"`},
		Order:   []string{"metrics.accuracy"},
	}
	create(t, m)
	resolvedTo(t, m, ns, "1.1.0", ds["1.1.0"], "accuracy 0.931, best of 4; 2 fail metrics.accuracy >= 0.9 (1 of them: no such key: accuracy)")
	if m.Status.Metrics["accuracy"] != "0.931" {
		t.Errorf("status.metrics = %v; want the chosen version's", m.Status.Metrics)
	}
	generation := m.Generation

	attach(t, repo, ds["1.3.0"], map[string]float64{"accuracy": 0.95})
	intervalPassed(t, m)
	resolvedTo(t, m, ns, "1.3.0", ds["1.3.0"], "accuracy 0.95, best of 4; 1 fails metrics.accuracy >= 0.9")
	if m.Generation != generation {
		t.Errorf("generation %d, was %d: the promotion should need no change to the object", m.Generation, generation)
	}
	eventually(t, "a Resolved event", func() error { return findEvent(ns, "m", ReasonResolved) })
}

// TestNoVersionPasses: when no version of the range passes, the running
// version stays on its node, Ready=False NoVersionPasses names the failing
// expression, and once a version passes again it rolls out. With nothing
// running yet, nothing is deployed.
func TestNoVersionPasses(t *testing.T) {
	ns := env.Namespace(t)
	ref := freshRepo(t)
	repo := openRepo(t, ref)
	ds := pushVersions(t, repo, []string{"1.0.0", "1.1.0"}, map[string]map[string]float64{
		"1.0.0": {"accuracy": 0.91}, "1.1.0": {"accuracy": 0.93},
	})
	nodes(t, ns, nil, 1)
	m := edgeModel(ns, "m", ref, "^1")
	m.Spec.Selection = &v1alpha1.SelectionSpec{Require: []string{"metrics.accuracy >= 0.9"}}
	create(t, m)
	resolvedTo(t, m, ns, "1.1.0", ds["1.1.0"], "newest of 2")

	change(t, m, func() { m.Spec.Selection.Require = []string{"metrics.accuracy >= 0.99"} })
	eventually(t, "NoVersionPasses", func() error {
		get(t, m)
		return conds{ready: metav1.ConditionFalse, reason: ReasonNoVersionPasses, stalled: true,
			message: `no version matching "^1" passes spec.selection (none of 2 passes: 2 fail metrics.accuracy >= 0.99); 1.1.0 (sha256:` + shortDigest(ds["1.1.0"].Digest.String()) + ") keeps running"}.
			check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	if r := m.Status.Resolved; r == nil || r.Digest != ds["1.1.0"].Digest.String() || r.Reason != "newest of 2" {
		t.Errorf("status.resolved = %+v; want 1.1.0 kept, with the reason it was chosen", r)
	}
	nas := nodeArtifacts(t, ns)
	if got := onDigest(nas, ds["1.1.0"].Digest.String()); len(got) != 1 {
		t.Errorf("NodeArtifacts %v; want the node left on 1.1.0", nas)
	}

	// Nothing running yet: nothing is deployed, and the message says so.
	fresh := edgeModel(ns, "fresh", ref, "^1")
	fresh.Spec.NodeSelector = map[string]string{"barge-test": ns + "-none"}
	fresh.Spec.Selection = &v1alpha1.SelectionSpec{Require: []string{"metrics.accuracy >= 0.99"}}
	create(t, fresh)
	eventually(t, "fresh model stalled", func() error {
		get(t, fresh)
		return conds{ready: metav1.ConditionFalse, reason: ReasonNoVersionPasses, stalled: true, message: "nothing runs until one does"}.
			check(fresh.Generation, fresh.Status.ObservedGeneration, fresh.Status.Conditions)
	})
	if fresh.Status.Resolved != nil {
		t.Errorf("status.resolved = %+v; want none", fresh.Status.Resolved)
	}

	// A version good enough appears: it rolls out at the next resolution.
	d := pushVersions(t, repo, []string{"1.2.0"}, map[string]map[string]float64{"1.2.0": {"accuracy": 0.995}})["1.2.0"]
	intervalPassed(t, m)
	resolvedTo(t, m, ns, "1.2.0", d, "newest of 3; 2 fail metrics.accuracy >= 0.99")
}

// TestSelectionGate: with a tag, spec.selection.require is a gate. The tag
// moved to a version that fails it is not rolled out: status.resolved and
// the node keep the previous digest, Ready=False RequirementFailed with
// Stalled names the expression, and one Warning event says so, however
// many passes follow. Better metrics on the new version let it through.
func TestSelectionGate(t *testing.T) {
	ns := env.Namespace(t)
	ref := freshRepo(t)
	repo := openRepo(t, ref)
	v1 := pushModel(t, repo, "stable", map[string]string{"m.onnx": "v1"}, artifact.Metadata{})
	attach(t, repo, v1, map[string]float64{"accuracy": 0.95, "latency_ms": 12})
	nodes(t, ns, nil, 1)
	m := edgeModel(ns, "m", ref, "stable")
	m.Spec.Selection = &v1alpha1.SelectionSpec{Require: []string{"metrics.accuracy >= 0.9", "metrics.latency_ms <= 20"}}
	create(t, m)
	resolvedTo(t, m, ns, "stable", v1, "passes metrics.accuracy >= 0.9 and metrics.latency_ms <= 20")

	v2 := pushModel(t, repo, "stable", map[string]string{"m.onnx": "v2"}, artifact.Metadata{})
	attach(t, repo, v2, map[string]float64{"accuracy": 0.97, "latency_ms": 45})
	want := fmt.Sprintf("stable (sha256:%s) fails spec.selection.require metrics.latency_ms <= 20; stable (sha256:%s) keeps running",
		shortDigest(v2.Digest.String()), shortDigest(v1.Digest.String()))
	for i := 0; i < 3; i++ {
		intervalPassed(t, m)
		eventually(t, "RequirementFailed", func() error {
			get(t, m)
			if m.Status.Resolved.ResolvedAt.Time.Before(time.Now().Add(-time.Minute)) {
				return fmt.Errorf("not resolved again yet")
			}
			return conds{ready: metav1.ConditionFalse, reason: ReasonRequirementFailed, stalled: true, message: want}.
				check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
		})
	}
	if r := m.Status.Resolved; r.Digest != v1.Digest.String() || !strings.Contains(r.Reason, "passes") {
		t.Errorf("status.resolved = %+v; want v1 kept", r)
	}
	if got := onDigest(nodeArtifacts(t, ns), v1.Digest.String()); len(got) != 1 {
		t.Errorf("nodes on v1: %v; want the node left there", got)
	}
	// A node that joins between two resolutions gets the running version,
	// and the hold stays said.
	nodes(t, ns, nil, 1)
	waitNodeArtifacts(t, ns, "the new node on v1", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, v1.Digest.String()); len(got) != 2 {
			return fmt.Errorf("nodes on v1: %v", got)
		}
		return nil
	})
	for _, na := range nodeArtifacts(t, ns) {
		puller(t, na, v1alpha1.NodeArtifactReady, v1.Digest.String(), "")
	}
	eventually(t, "both nodes Ready, still held", func() error {
		get(t, m)
		if m.Status.Nodes.Ready != 2 {
			return fmt.Errorf("status.nodes %+v", m.Status.Nodes)
		}
		if err := conditionIs(m.Status.Conditions, HeldCondition, metav1.ConditionTrue, ReasonRequirementFailed, want); err != nil {
			return err
		}
		return conds{ready: metav1.ConditionFalse, reason: ReasonRequirementFailed, stalled: true, message: want}.
			check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	time.Sleep(time.Second) // events are sent in the background
	if n := countEvents(t, ns, "m", ReasonRequirementFailed); n != 1 {
		t.Errorf("%d RequirementFailed events after three refusals and the passes between; want one", n)
	}

	attach(t, repo, v2, map[string]float64{"latency_ms": 15})
	intervalPassed(t, m)
	resolvedTo(t, m, ns, "stable", v2, "passes")
}

// countEvents counts the occurrences of events of a reason about an object.
func countEvents(t *testing.T, ns, name, reason string) int {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Name != name || e.Reason != reason {
			continue
		}
		n++
		if e.Series != nil {
			n += int(e.Series.Count) - 1
		}
	}
	return n
}

// TestInvalidSelection: an expression that does not compile stalls the
// model with InvalidSelection, naming the expression and CEL's error,
// before anything is deployed.
func TestInvalidSelection(t *testing.T) {
	ns := env.Namespace(t)
	ref := freshRepo(t)
	pushVersions(t, openRepo(t, ref), []string{"1.0.0"}, nil)
	nodes(t, ns, nil, 1)
	for _, tt := range []struct {
		name           string
		require, order []string
		want           string
	}{
		{name: "syntax", require: []string{"metrics.accuracy >="}, want: `spec.selection: require "metrics.accuracy >=": ERROR: <input>:1:20: Syntax error`},
		{name: "type", order: []string{"metadata.task"}, want: `spec.selection: order "metadata.task" is of type string, want double or int`},
		{name: "undeclared", require: []string{"metric.accuracy > 0.9"}, want: "undeclared reference to 'metric'"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := edgeModel(ns, tt.name, ref, "1.0.0")
			m.Spec.Selection = &v1alpha1.SelectionSpec{Require: tt.require, Order: tt.order}
			create(t, m)
			eventually(t, "InvalidSelection", func() error {
				get(t, m)
				return conds{ready: metav1.ConditionFalse, reason: ReasonInvalidSelection, stalled: true, message: tt.want}.
					check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
			})
			if c := m.Status.Conditions[0]; strings.Contains(c.Message, "\n") || len(c.Message) > 400 {
				t.Errorf("message %q: want one line of at most 400 characters", c.Message)
			}
		})
	}
	if nas := nodeArtifacts(t, ns); len(nas) != 0 {
		t.Errorf("NodeArtifacts of models with invalid selections: %v", nas)
	}
}

// TestRejectedDigests: resolution never chooses a digest a rollout rolled
// back (resolveFacts.rejected, which the rollout fills from
// status.history): a range passes over it to the next best, a tag or
// digest naming one keeps the running digest, and with nothing running it
// stalls.
func TestRejectedDigests(t *testing.T) {
	ref := freshRepo(t)
	repo := openRepo(t, ref)
	ds := pushVersions(t, repo, []string{"1.0.0", "1.1.0", "1.2.0"}, map[string]map[string]float64{
		"1.0.0": {"accuracy": 0.91}, "1.1.0": {"accuracy": 0.95}, "1.2.0": {"accuracy": 0.93},
	})
	digest := func(v string) string { return ds[v].Digest.String() }
	long := metav1.NewTime(time.Now().Add(-time.Hour))
	running := &v1alpha1.ResolvedArtifact{Version: "1.0.0", Digest: digest("1.0.0"), Reason: "chosen before", ResolvedAt: &long}
	byAccuracy := &v1alpha1.SelectionSpec{Order: []string{"metrics.accuracy"}}
	rolledBack := func(vs ...string) map[string]string {
		out := map[string]string{}
		for _, v := range vs {
			out[digest(v)] = "2 nodes failed: pull refused"
		}
		return out
	}
	for _, tt := range []struct {
		name       string
		version    string
		selection  *v1alpha1.SelectionSpec
		rejected   map[string]string
		running    *v1alpha1.ResolvedArtifact
		want       string // the version chosen or kept
		wantReason string // status.resolved.reason
		held       string // the held message, when the running digest is kept
		stalled    string // the failure, when nothing can run
	}{
		{name: "range by accuracy passes over the best", version: "^1", selection: byAccuracy, rejected: rolledBack("1.1.0"),
			want: "1.2.0", wantReason: "accuracy 0.93, best of 2; passed over 1.1.0 (rolled back)"},
		{name: "range, newest passed over", version: "^1", rejected: rolledBack("1.2.0"),
			want: "1.1.0", wantReason: "newest not rolled back; passed over 1.2.0"},
		{name: "range, all rolled back", version: "^1", rejected: rolledBack("1.0.0", "1.1.0", "1.2.0"), running: running,
			want: "1.0.0", wantReason: "chosen before", held: `every version matching "^1" was rolled back (1.2.0, 1.1.0, 1.0.0); the nodes stay on the version they were rolled back to`},
		{name: "tag naming a rolled-back version", version: "1.2.0", rejected: rolledBack("1.2.0"), running: running,
			want: "1.0.0", wantReason: "chosen before",
			held: "1.2.0 (sha256:" + shortDigest(digest("1.2.0")) + ") was rolled back (2 nodes failed: pull refused) and is not rolled out again; 1.0.0 (sha256:" + shortDigest(digest("1.0.0")) + ") keeps running"},
		{name: "digest naming a rolled-back version", version: digest("1.2.0"), rejected: rolledBack("1.2.0"), running: running,
			want: "1.0.0", wantReason: "chosen before", held: "sha256:" + shortDigest(digest("1.2.0")) + " was rolled back"},
		{name: "tag naming a rolled-back version, nothing running", version: "1.2.0", rejected: rolledBack("1.2.0"),
			stalled: "was rolled back (2 nodes failed: pull refused) and is not rolled out again; nothing runs until one does"},
		{name: "not rolled back", version: "1.2.0", rejected: rolledBack("1.1.0"), want: "1.2.0"},
		{name: "the tag still names the version just rolled back", version: "1.2.0", rejected: rolledBack("1.2.0"),
			running: &v1alpha1.ResolvedArtifact{Version: "1.2.0", Digest: digest("1.2.0"), ResolvedAt: &long},
			want:    "1.2.0", held: "is not rolled out again; the nodes stay on the version they were rolled back to"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &resolveFacts{src: source{Repository: ref, Version: tt.version, Insecure: true}, interval: time.Minute,
				rejected: tt.rejected, selection: tt.selection}
			_, err := f.resolveStep(context.Background(), &Resolver{}, 1, 1, tt.running, nil)
			if tt.stalled != "" {
				if f, ok := err.(*failure); !ok || !f.stalled || f.reason != ReasonVersionRejected || !strings.Contains(f.message, tt.stalled) {
					t.Fatalf("error %#v; want VersionRejected stalled with %q", err, tt.stalled)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.res.Descriptor.Digest.String(); got != digest(tt.want) {
				t.Errorf("chose %s; want %s", got, tt.want)
			}
			if f.choiceReason != tt.wantReason {
				t.Errorf("reason %q; want %q", f.choiceReason, tt.wantReason)
			}
			switch {
			case tt.held == "" && f.held != nil:
				t.Errorf("held: %s; want the version to roll out", f.held.message)
			case tt.held != "" && (f.held == nil || f.held.reason != ReasonVersionRejected || !strings.Contains(f.held.message, tt.held)):
				t.Errorf("held %+v; want VersionRejected with %q", f.held, tt.held)
			case tt.held != "" && f.newDigest:
				t.Error("a held version counts as a new digest")
			}
		})
	}
}

// TestSelectionReads: a range with spec.selection reads its candidates at
// most four at a time; the next resolution reads no manifest or metrics
// again (one list of referrers per candidate tells nothing changed), and
// after barge metrics attach only the new metrics are read.
func TestSelectionReads(t *testing.T) {
	ref := freshRepo(t)
	repo := openRepo(t, ref)
	var versions []string
	metrics := map[string]map[string]float64{}
	for i := range 10 {
		v := fmt.Sprintf("1.%d.0", i)
		versions = append(versions, v)
		if i != 3 {
			metrics[v] = map[string]float64{"accuracy": 0.8 + float64(i)/100}
		}
	}
	ds := pushVersions(t, repo, versions, metrics)
	counter := &countingTransport{counts: map[string]int{}}
	r := &Resolver{HTTPClient: &http.Client{Transport: counter}}
	resolve := func() *resolveFacts {
		t.Helper()
		f := &resolveFacts{src: source{Repository: ref, Version: "^1", Insecure: true}, interval: time.Minute,
			selection: &v1alpha1.SelectionSpec{Require: []string{"metrics.accuracy >= 0.85"}, Order: []string{"metrics.accuracy"}}}
		if _, err := f.resolveStep(context.Background(), r, 1, 1, nil, nil); err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := resolve(); f.res.Tag != "1.9.0" {
		t.Fatalf("chose %s; want 1.9.0", f.res.Tag)
	}
	first := counter.take()
	if counter.maxInFlight > candidateReads || first["GET blob"] < 10 {
		t.Errorf("first resolution: %v, %d at once; want every candidate read, at most %d at once", first, counter.maxInFlight, candidateReads)
	}
	resolve()
	if again := counter.take(); again["GET blob"] != 0 || again["HEAD manifest"] != 10 {
		t.Errorf("second resolution: %v; want a HEAD per tag and no blob read again", again)
	}
	attach(t, repo, ds["1.3.0"], map[string]float64{"accuracy": 0.99})
	if f := resolve(); f.res.Tag != "1.3.0" || f.choiceReason != "accuracy 0.99, best of 10; 4 fail metrics.accuracy >= 0.85" {
		t.Errorf("after attach: chose %s (%s); want 1.3.0", f.res.Tag, f.choiceReason)
	}
	if after := counter.take(); after["GET blob"] != 1 {
		t.Errorf("after attach: %v; want only the new metrics read (one blob)", after)
	}
}

// TestGateByDigest: a digest in targetVersion is gated like a tag.
func TestGateByDigest(t *testing.T) {
	ref := freshRepo(t)
	ds := pushVersions(t, openRepo(t, ref), []string{"1.0.0", "1.1.0"}, map[string]map[string]float64{
		"1.0.0": {"accuracy": 0.95}, "1.1.0": {"accuracy": 0.5},
	})
	long := metav1.NewTime(time.Now().Add(-time.Hour))
	running := &v1alpha1.ResolvedArtifact{Digest: ds["1.0.0"].Digest.String(), ResolvedAt: &long}
	gate := &v1alpha1.SelectionSpec{Require: []string{"metrics.accuracy >= 0.9"}}
	for v, wantHeld := range map[string]bool{"1.0.0": false, "1.1.0": true} {
		f := &resolveFacts{src: source{Repository: ref, Version: ds[v].Digest.String(), Insecure: true}, interval: time.Minute, selection: gate}
		if _, err := f.resolveStep(context.Background(), &Resolver{}, 1, 1, running, nil); err != nil {
			t.Fatal(err)
		}
		if held := f.held != nil; held != wantHeld || f.res.Descriptor.Digest != ds["1.0.0"].Digest {
			t.Errorf("digest of %s: held %v, runs %s; want held %v and 1.0.0 running", v, f.held, f.res.Descriptor.Digest, wantHeld)
		}
		if wantHeld && !strings.Contains(f.held.message, "fails spec.selection.require metrics.accuracy >= 0.9") {
			t.Errorf("held message %q", f.held.message)
		}
	}
}

// TestNewestReferrers: past the bound, the newest metrics are read.
func TestNewestReferrers(t *testing.T) {
	var refs []ocispec.Descriptor
	for i := range 5 {
		refs = append(refs, ocispec.Descriptor{Digest: digest.FromString(fmt.Sprint(i)),
			Annotations: map[string]string{ocispec.AnnotationCreated: time.Date(2026, 1, 1, 0, 0, (i*7)%5, 0, time.UTC).Format(time.RFC3339)}})
	}
	refs = append(refs, ocispec.Descriptor{Digest: digest.FromString("undated")})
	got := newestReferrers(refs, 3)
	// Seconds by index: 0, 2, 4, 1, 3, and one undated: 1, 2 and 4 are the newest.
	if len(got) != 3 || got[0].Digest != refs[1].Digest || got[1].Digest != refs[2].Digest || got[2].Digest != refs[4].Digest {
		t.Errorf("kept %v", got)
	}
	if len(newestReferrers(refs, 10)) != 6 {
		t.Error("under the bound, every referrer is kept")
	}
}
