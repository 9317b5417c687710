package kube_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/edgepuller/kube"
)

// runNode runs a kube.Node without an agent until the test ends; desired
// returns the last list it gave.
func runNode(t *testing.T, s *site, opts kube.Options) (n *kube.Node, desired func() []agent.Desired) {
	t.Helper()
	if opts.NodeName == "" {
		opts.NodeName = node
	}
	if opts.ArtifactDir == nil {
		opts.ArtifactDir = func(name string) string { return filepath.Join(s.root, name) }
	}
	n, err := kube.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last []agent.Desired
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Watch(ctx, func(list []agent.Desired) { mu.Lock(); last = list; mu.Unlock() })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return n, func() []agent.Desired { mu.Lock(); defer mu.Unlock(); return last }
}

// Quick pulls by a real puller, a dozen at once (some wait for a download
// slot), make at most 2 status patches each (in practice one, the Ready), counted as the API server answered them: no
// Pending or Pulling patch for a pull that finishes before the first tick.
func TestQuickPullFewPatches(t *testing.T) {
	s := newSite(t)
	const count = 12
	var names []string
	for i := range count {
		name := fmt.Sprintf("quick-%02d", i)
		m := s.push("models/"+name, map[string]string{"model.onnx": name})
		s.create(name, node, m)
		names = append(names, name)
	}
	c := &counter{}
	// A tick of 5 s keeps these pulls quick on a busy machine too, where a
	// pull of a few bytes can take 2 s; TestUnfinishedStatusWaitsATick
	// checks the default tick.
	s.start(c.wrap(pullerConfig(t)), func(o *kube.Options) { o.ProgressEvery = 5 * time.Second })
	for _, name := range names {
		s.waitStatus(name, "Ready", func(st v1alpha1.NodeArtifactStatus) bool { return st.Phase == v1alpha1.NodeArtifactReady })
	}
	time.Sleep(1500 * time.Millisecond) // a delayed patch would be sent by now
	total := 0
	for _, name := range names {
		n := c.count(statusPath(s.ns, name))
		total += n
		if n > 2 {
			t.Errorf("NodeArtifact %s: %d status patches for a quick pull, want at most 2", name, n)
		}
	}
	t.Logf("%d quick pulls made %d status patches", count, total)
}

// An unfinished status waits a tick: Pending, Pulling and progress followed
// by Ready within it make one patch; a Pulling that lasts is sent once the
// tick has passed, not before.
func TestUnfinishedStatusWaitsATick(t *testing.T) {
	s := newSite(t)
	m := s.push("models/tick", map[string]string{"model.onnx": "tick"})
	s.create("quick", node, m)
	s.create("slow", node, m)
	c := &counter{}
	n, desired := runNode(t, s, kube.Options{Config: c.wrap(pullerConfig(t))})
	waitFor(t, "both listed", func() bool { return len(desired()) == 2 })

	quick, slow := s.ns+"/quick", s.ns+"/slow"
	n.Report(agent.Status{Name: quick, Reference: m.ref, Phase: agent.Pending, Message: "not pulled yet"})
	n.Report(agent.Status{Name: quick, Reference: m.ref, Phase: agent.Pulling, BytesTotal: m.bytes})
	n.Report(agent.Status{Name: quick, Reference: m.ref, Phase: agent.Pulling, BytesDone: 1, BytesTotal: m.bytes})
	n.Report(agent.Status{Name: quick, Reference: m.ref, Phase: agent.Ready, Digest: m.digest, Path: "/x/current", BytesDone: m.bytes, BytesTotal: m.bytes})
	s.waitStatus("quick", "Ready", func(st v1alpha1.NodeArtifactStatus) bool { return st.Phase == v1alpha1.NodeArtifactReady })

	start := time.Now()
	n.Report(agent.Status{Name: slow, Reference: m.ref, Phase: agent.Pulling, BytesTotal: m.bytes})
	s.waitStatus("slow", "Pulling", func(st v1alpha1.NodeArtifactStatus) bool { return st.Phase == v1alpha1.NodeArtifactPulling })
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("the Pulling status reached the server after %s, want it held for the first tick (1 s)", d)
	}
	time.Sleep(1500 * time.Millisecond)
	if got := c.count(statusPath(s.ns, "quick")); got != 1 {
		t.Errorf("%d status patches for a pull that was Ready within the tick, want 1 (the Ready)", got)
	}
	if got := c.count(statusPath(s.ns, "slow")); got != 1 {
		t.Errorf("%d status patches for one lasting Pulling, want 1", got)
	}
}

// A list again, after a watch expired, is read from the API server's watch
// cache, not older than what the node had read: not a consistent read,
// which the API server answers from etcd, decoding every NodeArtifact of
// the cluster, whenever its cache lags; a fleet relisting at once after a
// watch cut would do that once per node. The watch is made to expire with
// a real 410 from the API server: its first request asks for a
// resourceVersion long compacted away.
func TestRelistReadsTheCache(t *testing.T) {
	s := newSite(t)
	m := s.push("models/relist", map[string]string{"model.onnx": "relist"})
	s.create("relist-a", node, m)
	c := &counter{}
	var expired sync.Once
	c.rewrite = func(r *http.Request) *http.Request {
		q := r.URL.Query()
		if q.Get("watch") != "true" {
			return r
		}
		expired.Do(func() {
			q.Set("resourceVersion", "1")
			r = r.Clone(r.Context())
			r.URL.RawQuery = q.Encode()
		})
		return r
	}
	_, desired := runNode(t, s, kube.Options{Config: c.wrap(pullerConfig(t))})
	waitFor(t, "a list again after the expired watch", func() bool { return len(c.listQueries()) >= 2 })
	qs := c.listQueries()
	if rv := qs[0].Get("resourceVersion"); rv != "" {
		t.Errorf("the first list asked for resourceVersion %q, want a consistent read (none)", rv)
	}
	if rv, match := qs[1].Get("resourceVersion"), qs[1].Get("resourceVersionMatch"); rv == "" || rv == "0" || match != "NotOlderThan" {
		t.Errorf("the list after the expired watch asked for resourceVersion %q, match %q; want the one the node had read, NotOlderThan", rv, match)
	}
	s.create("relist-b", node, m)
	waitFor(t, "the watch after the list again", func() bool { return len(desired()) == 2 })
}

// The list comes in pages of ListPageSize, all of them delivered as one
// list; the watch goes on from the list's resourceVersion.
func TestListIsPaginated(t *testing.T) {
	s := newSite(t)
	m := s.push("models/paged", map[string]string{"model.onnx": "paged"})
	const count, page = 25, 10
	for i := range count {
		s.create(fmt.Sprintf("paged-%02d", i), node, m)
	}
	c := &counter{}
	_, desired := runNode(t, s, kube.Options{Config: c.wrap(pullerConfig(t)), ListPageSize: page})
	waitFor(t, "all listed", func() bool { return len(desired()) == count })

	qs := c.listQueries()
	if len(qs) != 3 {
		t.Fatalf("%d list requests for %d objects in pages of %d, want 3", len(qs), count, page)
	}
	for i, q := range qs {
		if q.Get("limit") != fmt.Sprint(page) {
			t.Errorf("list request %d has limit %q, want %d", i+1, q.Get("limit"), page)
		}
		if (q.Get("continue") != "") != (i > 0) {
			t.Errorf("list request %d has continue %q", i+1, q.Get("continue"))
		}
	}
	s.create("after", node, m)
	waitFor(t, "the one created after the list, by the watch", func() bool { return len(desired()) == count+1 })
	if l, _ := c.listsAndWatches(); l != 3 {
		t.Errorf("%d list requests, want the 3 pages only: the watch goes on from the paged list", l)
	}
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPerChange lists count NodeArtifacts in a Node, then reports changes
// Ready statuses, one per artifact, and returns the CPU this process used
// per change: the patch, its answer and its watch event coming back.
func cpuPerChange(t *testing.T, count, changes int) time.Duration {
	s := newSite(t)
	m := s.push("models/many", map[string]string{"model.onnx": "many"})
	ctx := context.Background()
	for i := range count {
		na := &v1alpha1.NodeArtifact{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: fmt.Sprintf("many-%04d", i), Labels: map[string]string{v1alpha1.NodeLabel: node}},
			Spec:       v1alpha1.NodeArtifactSpec{NodeName: node, Reference: m.ref, Digest: m.digest.String(), Insecure: true},
		}
		if err := env.Client.Create(ctx, na); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		env.Client.DeleteAllOf(ctx, &v1alpha1.NodeArtifact{}, client.InNamespace(s.ns))
	})
	c := &counter{}
	n, desired := runNode(t, s, kube.Options{Config: c.wrap(pullerConfig(t))})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%d of %d desired; lists %v", len(desired()), count, c.listQueries())
		}
	})
	waitFor(t, "all listed", func() bool { return len(desired()) == count })
	time.Sleep(200 * time.Millisecond)

	start := cpuTime(t)
	for i := range changes {
		name := fmt.Sprintf("many-%04d", i)
		n.Report(agent.Status{Name: s.ns + "/" + name, Reference: m.ref, Phase: agent.Ready, Digest: m.digest, Path: "/x/current", BytesDone: m.bytes, BytesTotal: m.bytes})
		waitFor(t, name+" patched", func() bool { return c.count(statusPath(s.ns, name)) == 1 })
	}
	time.Sleep(300 * time.Millisecond) // the last watch events
	return (cpuTime(t) - start) / time.Duration(changes)
}

// The CPU a status change costs the puller does not grow with the number
// of NodeArtifacts it has: no pass over all of them per event.
func TestCPUPerChangeFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 1,100 NodeArtifacts")
	}
	const changes = 100
	var small, large time.Duration
	t.Run("100", func(t *testing.T) { small = cpuPerChange(t, 100, changes) })
	t.Run("1000", func(t *testing.T) { large = cpuPerChange(t, 1000, changes) })
	if t.Failed() {
		return
	}
	t.Logf("CPU per status change: %s at 100 NodeArtifacts, %s at 1,000", small, large)
	if large > small*3/2 {
		t.Errorf("CPU per change %s at 1,000 NodeArtifacts against %s at 100: it grows with the number of artifacts", large, small)
	}
}
