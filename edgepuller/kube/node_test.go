package kube_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/edgepuller/kube"
)

// A NodeArtifact for this node is materialized and its status says where,
// which digest and how many bytes; one for another node is not touched.
func TestReadyStatusAndOtherNodeIgnored(t *testing.T) {
	s := newSite(t)
	m := s.push("models/resnet", map[string]string{"model.onnx": "resnet v1", "labels.txt": "cat\ndog\n"})
	s.create("resnet", node, m)
	s.create("elsewhere", "edge-2", m)
	c := &counter{}
	p := s.start(c.wrap(pullerConfig(t)), nil)

	na := s.waitReady("resnet", m)
	st := na.Status
	if want := filepath.Join(s.dir("resnet"), "current"); st.Path != want {
		t.Errorf("status.path = %q, want %q", st.Path, want)
	}
	if st.BytesTotal != m.bytes || st.BytesDone != m.bytes {
		t.Errorf("status bytes %d of %d, want %d of %d", st.BytesDone, st.BytesTotal, m.bytes, m.bytes)
	}
	if st.ObservedGeneration != na.Generation || st.Message != "" {
		t.Errorf("status.observedGeneration %d (generation %d), message %q", st.ObservedGeneration, na.Generation, st.Message)
	}
	ready := meta.FindStatusCondition(st.Conditions, v1alpha1.ReadyCondition)
	if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != na.Generation || !strings.Contains(ready.Message, m.digest.String()) {
		t.Errorf("Ready condition %+v", ready)
	}
	for _, typ := range []string{v1alpha1.ReconcilingCondition, v1alpha1.StalledCondition} {
		if meta.FindStatusCondition(st.Conditions, typ) != nil {
			t.Errorf("%s present on a Ready object: kstatus wants it only while true", typ)
		}
	}
	if got, err := s.read("resnet", "labels.txt"); err != nil || got != "cat\ndog\n" {
		t.Errorf("current/labels.txt = %q, %v", got, err)
	}

	other, err := s.get("elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	if other.Status.Phase != "" || len(other.Status.Conditions) != 0 {
		t.Errorf("the other node's NodeArtifact got a status: %+v", other.Status)
	}
	if _, err := os.Stat(s.dir("elsewhere")); !os.IsNotExist(err) {
		t.Errorf("the other node's artifact has a directory here (%v)", err)
	}
	if n := c.count(statusPath(s.ns, "elsewhere")); n != 0 {
		t.Errorf("%d status patches for the other node's NodeArtifact", n)
	}
	if st := p.status(s.ns + "/elsewhere"); st.Phase != "" {
		t.Errorf("the agent knows the other node's artifact: %+v", st)
	}
}

// Progress reported many times a second reaches the API server about once a
// second; a phase change goes at once.
func TestProgressThrottled(t *testing.T) {
	s := newSite(t)
	m := s.push("models/big", map[string]string{"weights.bin": "not pulled in this test"})
	s.create("big", node, m)
	c := &counter{}
	n, err := kube.New(kube.Options{Config: c.wrap(pullerConfig(t)), NodeName: node,
		ArtifactDir: func(name string) string { return filepath.Join(s.root, name) }})
	if err != nil {
		t.Fatal(err)
	}
	var listed atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Watch(ctx, func(list []agent.Desired) { listed.Store(len(list) == 1) })
	}()
	defer func() { cancel(); <-done }()
	waitFor(t, "the NodeArtifact listed", listed.Load)

	name := s.ns + "/big"
	const total = 1 << 30
	start := time.Now()
	var last int64
	for i := int64(1); time.Since(start) < 3*time.Second; i++ {
		last = i << 10
		n.Report(agent.Status{Name: name, Reference: m.ref, Phase: agent.Pulling, BytesDone: last, BytesTotal: total})
		time.Sleep(5 * time.Millisecond)
	}
	reports := last >> 10
	s.waitStatus("big", "the last progress", func(st v1alpha1.NodeArtifactStatus) bool { return st.BytesDone == last })
	patches := c.count(statusPath(s.ns, "big"))
	t.Logf("%d progress reports in 3 s gave %d status patches", reports, patches)
	if reports < 100 {
		t.Fatalf("only %d reports in 3 s: the test proves nothing", reports)
	}
	// The first Pulling waits one tick, so 3 s of progress is 2 ticks and
	// the last progress: 3, or 2 when a loaded machine stretches a tick.
	if patches < 2 || patches > 5 {
		t.Errorf("%d status patches for 3 s of progress, want about one a second (2 to 5)", patches)
	}

	sent := time.Now()
	n.Report(agent.Status{Name: name, Reference: m.ref, Phase: agent.Ready, Digest: m.digest, Path: "/var/lib/barge/x/current", BytesDone: total, BytesTotal: total})
	s.waitStatus("big", "Ready", func(st v1alpha1.NodeArtifactStatus) bool { return st.Phase == v1alpha1.NodeArtifactReady })
	if d := time.Since(sent); d > 700*time.Millisecond {
		t.Errorf("the Ready transition took %s to reach the server, want it sent at once", d)
	}
}

// Deleting a NodeArtifact removes its files, then its finalizer: the object
// goes, and when its finalizer was patched away the directory was gone.
func TestDeleteRemovesFilesThenFinalizer(t *testing.T) {
	s := newSite(t)
	m := s.push("models/resnet", map[string]string{"model.onnx": "resnet"})
	keep := s.push("models/keep", map[string]string{"keep.onnx": "keep"})
	s.create("resnet", node, m)
	s.create("keep", node, keep)

	var mu sync.Mutex
	var atRelease []error // the directory's stat when the finalizer patch is sent
	c := &counter{rewrite: func(r *http.Request) *http.Request {
		if r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/nodeartifacts/resnet") {
			_, err := os.Stat(s.dir("resnet"))
			mu.Lock()
			atRelease = append(atRelease, err)
			mu.Unlock()
		}
		return r
	}}
	s.start(c.wrap(pullerConfig(t)), nil)
	s.waitReady("resnet", m)
	s.waitReady("keep", keep)

	na, _ := s.get("resnet")
	if err := env.Client.Delete(context.Background(), na); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the NodeArtifact gone", func() bool {
		_, err := s.get("resnet")
		return isNotFound(err)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(atRelease) == 0 {
		t.Fatal("no finalizer patch was seen")
	}
	for _, err := range atRelease {
		if !os.IsNotExist(err) {
			t.Errorf("the finalizer patch was sent while the directory existed (stat: %v)", err)
		}
	}
	if got, err := s.read("keep", "keep.onnx"); err != nil || got != "keep" {
		t.Errorf("the other artifact's files: %q, %v", got, err)
	}
}

// The finalizer patch is conditional on the resourceVersion the puller
// read: when another controller removes its own finalizer just before, the
// puller's patch fails with a conflict instead of putting that finalizer
// back; it reads the object again and retries, and the object goes.
func TestReleaseRetriesOnConflict(t *testing.T) {
	s := newSite(t)
	m := s.push("models/resnet", map[string]string{"model.onnx": "resnet"})
	na := s.create("resnet", node, m)
	na.Finalizers = append(na.Finalizers, "example.com/audit")
	if err := env.Client.Update(context.Background(), na); err != nil {
		t.Fatal(err)
	}
	var once atomic.Bool
	c := &counter{rewrite: func(r *http.Request) *http.Request {
		if r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/nodeartifacts/resnet") && !once.Swap(true) {
			cur, _ := s.get("resnet")
			cur.Finalizers = slices.DeleteFunc(cur.Finalizers, func(f string) bool { return f == "example.com/audit" })
			if err := env.Client.Update(context.Background(), cur); err != nil {
				t.Errorf("remove the other finalizer: %v", err)
			}
		}
		return r
	}}
	s.start(c.wrap(pullerConfig(t)), nil)
	s.waitReady("resnet", m)
	if err := env.Client.Delete(context.Background(), na); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the NodeArtifact gone", func() bool {
		_, err := s.get("resnet")
		return isNotFound(err)
	})
	if !once.Load() {
		t.Fatal("no finalizer patch was seen")
	}
	if n := c.count("GET /apis/barge.dev/v1alpha1/namespaces/" + s.ns + "/nodeartifacts/resnet"); n != 1 {
		t.Errorf("%d reads of the object, want 1 after the conflict", n)
	}
	if _, err := os.Stat(s.dir("resnet")); !os.IsNotExist(err) {
		t.Errorf("directory still there (%v)", err)
	}
}

// A new spec.reference rolls the node to the new digest: a reader of the
// files sees the old version, then the new one, never a mix or nothing,
// and the status keeps the old digest until the new one is Ready.
func TestChangedReferenceRollsOutAtomically(t *testing.T) {
	s := newSite(t)
	v1 := s.push("models/resnet", map[string]string{"model.onnx": "resnet v1"})
	v2 := s.push("models/resnet", map[string]string{"model.onnx": "resnet v2", "extra.bin": randomString(6<<20, 1)})
	s.create("resnet", node, v1)
	s.start(nil, nil)
	s.waitReady("resnet", v1)

	var seen []string
	var readErr error
	stop, readerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := s.read("resnet", "model.onnx")
			if err != nil {
				readErr = err
				return
			}
			if len(seen) == 0 || seen[len(seen)-1] != got {
				seen = append(seen, got)
			}
		}
	}()
	s.rate.Store(4 << 20) // 1.5 s for v2
	patch := fmt.Sprintf(`{"spec":{"reference":%q,"digest":%q}}`, v2.ref, v2.digest)
	na, _ := s.get("resnet")
	if err := env.Client.Patch(context.Background(), na, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
	pulling := s.waitStatus("resnet", "pulling v2", func(st v1alpha1.NodeArtifactStatus) bool {
		return st.Phase == v1alpha1.NodeArtifactPulling && st.ObservedGeneration == 2
	})
	if pulling.Status.Digest != v1.digest.String() {
		t.Errorf("while v2 is pulled, status.digest = %s, want v1 %s still", pulling.Status.Digest, v1.digest)
	}
	ready := s.waitReady("resnet", v2)
	close(stop)
	<-readerDone
	if readErr != nil {
		t.Errorf("a reader failed during the rollout: %v", readErr)
	}
	if strings.Join(seen, ",") != "resnet v1,resnet v2" {
		t.Errorf("a reader saw %q; want v1 then v2 and nothing else", seen)
	}
	if ready.Status.ObservedGeneration != 2 || ready.Status.BytesTotal != v2.bytes {
		t.Errorf("Ready status %+v: want observedGeneration 2, bytesTotal %d", ready.Status, v2.bytes)
	}
}

// A watch the server ends is renewed from where it was, without a list; a
// watch that expired (410 Gone) is followed by a list.
func TestWatchRenewedAndRelistedWhenExpired(t *testing.T) {
	s := newSite(t)
	m := s.push("models/a", map[string]string{"a.bin": "aaa"})
	var expired atomic.Bool
	c := &counter{rewrite: func(r *http.Request) *http.Request {
		q := r.URL.Query()
		if q.Get("watch") == "true" && !expired.Swap(true) {
			// A resourceVersion older than the server keeps: it answers 410 Gone.
			r = r.Clone(r.Context())
			q.Set("resourceVersion", "1")
			r.URL.RawQuery = q.Encode()
		}
		return r
	}}
	p := s.start(c.wrap(pullerConfig(t)), func(o *kube.Options) { o.WatchTimeout = 2 * time.Second })
	waitFor(t, "a list after the expired watch", func() bool { l, _ := c.listsAndWatches(); return l == 2 })
	time.Sleep(5 * time.Second) // two renewals at least
	s.create("a", node, m)
	s.waitReady("a", m)
	lists, watches := c.listsAndWatches()
	if lists != 2 || watches < 3 {
		t.Errorf("%d lists and %d watches: want 2 lists (the first and the one after 410) and the watch renewed without listing", lists, watches)
	}
	if !strings.Contains(p.logs.String(), "watch expired; listing again") {
		t.Error("the 410 was not seen as an expired watch")
	}
}

// With the API server unreachable, a restarted puller serves what it had and
// finishes the pull it was doing; when the link is back, one patch brings
// each changed status up to date.
func TestAPIServerUnreachable(t *testing.T) {
	s := newSite(t)
	a := s.push("models/a", map[string]string{"a.bin": "aaa"})
	bWeights := randomString(12<<20, 2)
	b := s.push("models/b", map[string]string{"b.bin": bWeights})
	proxy := newTCPProxy(t, apiHostPort(t))
	c := &counter{}
	cfg := c.wrap(proxy.config(t))

	p := s.start(cfg, nil)
	s.create("a", node, a)
	s.waitReady("a", a)
	s.rate.Store(3 << 20) // 4 s for b
	s.create("b", node, b)
	s.waitStatus("b", "progress of b", func(st v1alpha1.NodeArtifactStatus) bool {
		return st.Phase == v1alpha1.NodeArtifactPulling && st.BytesDone > 0
	})

	proxy.setCut(true)
	p.stop(t)
	patchesA, patchesB := c.count(statusPath(s.ns, "a")), c.count(statusPath(s.ns, "b"))
	if st := p.status(s.ns + "/b"); st.Phase == agent.Ready {
		t.Fatal("b was Ready before the restart: the test proves nothing")
	}

	p = s.start(cfg, nil)
	waitFor(t, "a served from disk, Ready", func() bool { return p.status(s.ns+"/a").Phase == agent.Ready })
	if got, err := s.read("a", "a.bin"); err != nil || got != "aaa" {
		t.Errorf("a/current/a.bin = %q, %v with the API server unreachable", got, err)
	}
	waitFor(t, "b's pull finished offline", func() bool {
		st := p.status(s.ns + "/b")
		return st.Phase == agent.Ready && st.Digest == b.digest
	})
	if got, err := s.read("b", "b.bin"); err != nil || got != bWeights {
		t.Errorf("b/current/b.bin differs after the offline pull (%v)", err)
	}
	time.Sleep(500 * time.Millisecond)
	if na, err := s.get("b"); err != nil || na.Status.Phase != v1alpha1.NodeArtifactPulling {
		t.Errorf("b's status on the server changed while the link was cut: %+v, %v", na.Status, err)
	}

	proxy.setCut(false)
	s.waitReady("b", b)
	time.Sleep(2 * time.Second) // anything queued would be sent by now
	if n := c.count(statusPath(s.ns, "b")) - patchesB; n != 1 {
		t.Errorf("%d status patches of b after the link came back, want 1 (the latest)", n)
	}
	if n := c.count(statusPath(s.ns, "a")) - patchesA; n != 0 {
		t.Errorf("%d status patches of a, whose status did not change, after the link came back", n)
	}
	na, _ := s.get("b")
	if st := na.Status; st.BytesDone != b.bytes || st.BytesTotal != b.bytes || st.Path != filepath.Join(s.dir("b"), "current") {
		t.Errorf("b's status after the link came back: %+v", st)
	}
}

// NodeArtifacts deleted while the puller was down: the one it had loses its
// files, then its finalizer; the one it never had loses its finalizer after
// UnknownGrace.
func TestDeletedWhilePullerDown(t *testing.T) {
	s := newSite(t)
	m := s.push("models/a", map[string]string{"a.bin": "aaa"})
	var mu sync.Mutex
	dirAtRelease := map[string]error{}
	c := &counter{rewrite: func(r *http.Request) *http.Request {
		if name, ok := strings.CutPrefix(r.URL.Path, "/apis/barge.dev/v1alpha1/namespaces/"+s.ns+"/nodeartifacts/"); ok && r.Method == http.MethodPatch && !strings.Contains(name, "/") {
			_, err := os.Stat(s.dir(name))
			mu.Lock()
			dirAtRelease[name] = err
			mu.Unlock()
		}
		return r
	}}
	had := s.create("had", node, m)
	p := s.start(c.wrap(pullerConfig(t)), nil)
	s.waitReady("had", m)
	p.stop(t)

	never := s.create("never", node, m)
	for _, na := range []*v1alpha1.NodeArtifact{had, never} {
		if err := env.Client.Delete(context.Background(), na); err != nil {
			t.Fatal(err)
		}
	}
	started := time.Now()
	s.start(c.wrap(pullerConfig(t)), func(o *kube.Options) { o.UnknownGrace = 2 * time.Second })
	for _, name := range []string{"had", "never"} {
		waitFor(t, name+" gone", func() bool {
			_, err := s.get(name)
			return isNotFound(err)
		})
	}
	if d := time.Since(started); d < 2*time.Second {
		t.Errorf("the NodeArtifact the puller never had went after %s, before UnknownGrace", d)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range []string{"had", "never"} {
		if err, ok := dirAtRelease[name]; !ok || !os.IsNotExist(err) {
			t.Errorf("%s: finalizer patch seen %v, directory at that time: %v", name, ok, err)
		}
	}
}

// The directory of an artifact is the same on every node: the controller's
// spec.artifactName, not the per-node object name.
func TestNameIsTheSameOnEveryNode(t *testing.T) {
	for _, tt := range []struct {
		na   v1alpha1.NodeArtifact
		want string
	}{
		{v1alpha1.NodeArtifact{ObjectMeta: metav1.ObjectMeta{Namespace: "vision", Name: "model-resnet-edge-1"},
			Spec: v1alpha1.NodeArtifactSpec{ArtifactName: "model-resnet"}}, "vision/model-resnet"},
		{v1alpha1.NodeArtifact{ObjectMeta: metav1.ObjectMeta{Namespace: "vision", Name: "model-resnet-edge-2"},
			Spec: v1alpha1.NodeArtifactSpec{ArtifactName: "model-resnet"}}, "vision/model-resnet"},
		{v1alpha1.NodeArtifact{ObjectMeta: metav1.ObjectMeta{Namespace: "vision", Name: "hand-made"}}, "vision/hand-made"},
	} {
		if got := kube.Name(&tt.na); got != tt.want {
			t.Errorf("Name(%s) = %s, want %s", tt.na.Name, got, tt.want)
		}
	}
	// The longest artifactName the CRD admits, in the longest namespace, is
	// a name the agent accepts.
	longest := v1alpha1.NodeArtifact{ObjectMeta: metav1.ObjectMeta{Namespace: strings.Repeat("n", 63)},
		Spec: v1alpha1.NodeArtifactSpec{ArtifactName: strings.Repeat("a", v1alpha1.MaxArtifactName)}}
	d := agent.Desired{Name: kube.Name(&longest), Reference: "example.com/m@sha256:" + strings.Repeat("0", 64)}
	if err := d.Validate(); err != nil {
		t.Errorf("the agent refuses the longest name the CRD admits: %v", err)
	}
}

// Two NodeArtifacts that name one directory never share files: the older
// owns it and is pulled; the later is reported Failed saying which object
// owns the directory, and deleting it releases it at once without touching
// the owner's files.
func TestDuplicateDirectoryName(t *testing.T) {
	s := newSite(t)
	first := s.push("models/first", map[string]string{"model.onnx": "first"})
	second := s.push("models/second", map[string]string{"model.onnx": "second"})
	ctx := context.Background()
	mk := func(name string, p pushed) {
		na := &v1alpha1.NodeArtifact{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: name,
				Labels: map[string]string{v1alpha1.NodeLabel: node}, Finalizers: []string{v1alpha1.FilesFinalizer}},
			Spec: v1alpha1.NodeArtifactSpec{NodeName: node, Reference: p.ref, Digest: p.digest.String(), Insecure: true, ArtifactName: "model-shared"},
		}
		if err := env.Client.Create(ctx, na); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.forget(name) })
	}
	mk("owner", first)
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has a resolution of a second
	mk("later", second)
	s.start(nil, nil)

	s.waitReady("owner", first)
	later := s.waitStatus("later", "Failed", func(st v1alpha1.NodeArtifactStatus) bool { return st.Phase == v1alpha1.NodeArtifactFailed })
	if !strings.Contains(later.Status.Message, "belongs to NodeArtifact owner") {
		t.Errorf("the later NodeArtifact's message %q does not name the owner", later.Status.Message)
	}
	if got, err := s.read("model-shared", "model.onnx"); err != nil || got != "first" {
		t.Errorf("model-shared/current/model.onnx = %q, %v; want the owner's file", got, err)
	}

	if err := env.Client.Delete(ctx, later); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the later NodeArtifact to be released and gone", func() bool {
		_, err := s.get("later")
		return isNotFound(err)
	})
	if got, err := s.read("model-shared", "model.onnx"); err != nil || got != "first" {
		t.Errorf("after the later one was deleted, model-shared/current/model.onnx = %q, %v; want the owner's file", got, err)
	}
	if owner, err := s.get("owner"); err != nil || owner.Status.Phase != v1alpha1.NodeArtifactReady {
		t.Errorf("owner after the later one was deleted: %+v, %v", owner.Status, err)
	}
}

// A status patch whose answer comes back after the watch has brought a
// newer spec must not take the Node back to the older object: the report
// for the newer spec would be taken for a stale worker's and dropped, and
// the NodeArtifact would never say Ready (a rollout or a rollback waiting
// on it for ever). Here the spec goes v1 → v2 → v1, as in a rollback.
func TestLateStatusAnswerKeepsTheNewerSpec(t *testing.T) {
	s := newSite(t)
	v1 := s.push("models/m", map[string]string{"m.bin": "v1"})
	v2 := s.push("models/m", map[string]string{"m.bin": "v2"})
	s.create("m", node, v1)
	var hold atomic.Bool
	patched, release := make(chan struct{}), make(chan struct{})
	cfg := rest.CopyConfig(pullerConfig(t))
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/status") && hold.Swap(false) {
				close(patched) // the server has it; its answer is late
				<-release
			}
			return resp, err
		})
	})
	n, err := kube.New(kube.Options{Config: cfg, NodeName: node,
		ArtifactDir: func(name string) string { return filepath.Join(s.root, name) }})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var desired string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Watch(ctx, func(list []agent.Desired) {
			mu.Lock()
			defer mu.Unlock()
			if len(list) == 1 {
				desired = list[0].Reference
			}
		})
	}()
	defer func() { cancel(); <-done }()
	wants := func(ref string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return desired == ref }
	}
	name, path := s.ns+"/m", "/var/lib/barge/m/current"
	setReference := func(p pushed) {
		t.Helper()
		na, _ := s.get("m")
		patch := fmt.Sprintf(`{"spec":{"reference":%q,"digest":%q}}`, p.ref, p.digest)
		if err := env.Client.Patch(context.Background(), na, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
			t.Fatal(err)
		}
	}

	waitFor(t, "v1 desired", wants(v1.ref))
	n.Report(agent.Status{Name: name, Reference: v1.ref, Phase: agent.Ready, Digest: v1.digest, Path: path})
	s.waitReady("m", v1)
	setReference(v2)
	waitFor(t, "v2 desired", wants(v2.ref))
	hold.Store(true)
	n.Report(agent.Status{Name: name, Reference: v2.ref, Phase: agent.Failed, Digest: v1.digest, Path: path, Message: "v2 failed"})
	<-patched
	setReference(v1) // the rollback, while the answer about v2 is on its way
	waitFor(t, "v1 desired again", wants(v1.ref))
	close(release)
	n.Report(agent.Status{Name: name, Reference: v1.ref, Phase: agent.Ready, Digest: v1.digest, Path: path})
	na := s.waitStatus("m", "Ready on v1 for the newest spec", func(st v1alpha1.NodeArtifactStatus) bool {
		return st.Phase == v1alpha1.NodeArtifactReady && st.ObservedGeneration == 3
	})
	if na.Generation != 3 || na.Status.Digest != v1.digest.String() {
		t.Errorf("generation %d, status %+v", na.Generation, na.Status)
	}
}
