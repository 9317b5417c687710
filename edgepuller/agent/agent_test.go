package agent_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"

	"github.com/bargeml/barge/edgepuller/agent"
)

// Two artifacts, one by tag and one by digest, are materialized; moving the
// tag rolls the new version out while a workload keeps reading, and the
// version before the previous one is collected.
func TestKeepsArtifactsAndRollsOutMovedTag(t *testing.T) {
	e := newEnv(t)
	v1 := e.push("models/resnet", "stable", map[string]string{"model.onnx": "resnet v1", "labels.txt": "cat\ndog\n"})
	yolo := e.push("models/yolo", "1.0", map[string]string{"yolo.onnx": "yolo weights", "pre/resize.py": "print(1)"})
	reg := prometheus.NewRegistry()
	r := e.start(func(o *agent.Options) { o.ResolveInterval = 100 * time.Millisecond; o.Metrics = reg })
	r.set(
		agent.Desired{Name: "resnet", Reference: e.ref("models/resnet:stable"), Insecure: true},
		agent.Desired{Name: "vision/yolo", Reference: e.ref("models/yolo@" + yolo.String()), Insecure: true},
	)
	s := r.waitReady(t, "resnet", v1)
	r.waitReady(t, "vision/yolo", yolo)
	if got := e.mustRead("resnet", "model.onnx"); got != "resnet v1" {
		t.Errorf("resnet/current/model.onnx = %q", got)
	}
	if got := e.mustRead("vision/yolo", "pre/resize.py"); got != "print(1)" {
		t.Errorf("vision/yolo/current/pre/resize.py = %q", got)
	}
	if s.Path != filepath.Join(e.root, "artifacts", "resnet", "current") || s.BytesTotal == 0 || s.BytesDone != s.BytesTotal {
		t.Errorf("Ready status %+v: want the current path and the artifact's size", s)
	}
	if got := metric(t, reg, "barge_edgepuller_artifacts", "Ready"); got != 2 {
		t.Errorf("artifacts{phase=Ready} = %v, want 2", got)
	}

	// Unchanged tag: resolving again costs a HEAD, and nothing is pulled.
	gets, heads := e.proxy.gets.Load(), e.proxy.heads.Load()
	pulls, reused := r.rec.count("resnet", agent.Pulling), metric(t, reg, "barge_edgepuller_bytes_reused_total", "")
	waitFor(t, "three more resolutions", func() bool { return e.proxy.heads.Load() >= heads+3 })
	if n := e.proxy.gets.Load() - gets; n != 0 {
		t.Errorf("%d GETs while the tag did not move; want none", n)
	}
	if n := r.rec.count("resnet", agent.Pulling) - pulls; n != 0 {
		t.Errorf("%d pulls while the tag did not move; want none", n)
	}
	if metric(t, reg, "barge_edgepuller_bytes_reused_total", "") != reused {
		t.Error("bytes_reused_total grew while the tag did not move")
	}

	// A workload reads resnet through the rollouts.
	var misses atomic.Int64
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if got, err := e.readCurrent("resnet", "model.onnx"); err != nil || !strings.HasPrefix(got, "resnet v") {
				misses.Add(1)
			}
		}
	}()
	v2 := e.push("models/resnet", "stable", map[string]string{"model.onnx": "resnet v2", "labels.txt": "cat\ndog\n"})
	r.waitReady(t, "resnet", v2)
	v3 := e.push("models/resnet", "stable", map[string]string{"model.onnx": "resnet v3", "labels.txt": "cat\ndog\n"})
	r.waitReady(t, "resnet", v3)
	close(stop)
	<-readerDone
	if n := misses.Load(); n > 0 {
		t.Errorf("a reader of resnet/current/model.onnx failed %d times during the rollouts", n)
	}
	if got := e.mustRead("resnet", "model.onnx"); got != "resnet v3" {
		t.Errorf("after the rollouts, model.onnx = %q", got)
	}
	waitFor(t, "v1 collected, v2 kept as the previous version", func() bool {
		return e.versions("resnet") == 2 && !e.hasBlob("resnet v1") && e.hasBlob("resnet v2")
	})
	if !e.hasBlob("cat\ndog\n") {
		t.Error("a blob the current version shares with collected ones was deleted")
	}
	// The counter grows when the collection returns, just after the files go.
	waitFor(t, "gc_bytes_freed_total to count the collected version", func() bool {
		return metric(t, reg, "barge_edgepuller_gc_bytes_freed_total", "") >= float64(len("resnet v1"))
	})
}

// Dropping an entry removes its directory; the others stay untouched.
func TestRemovesDroppedArtifact(t *testing.T) {
	e := newEnv(t)
	a := e.push("models/a", "1", map[string]string{"a.bin": "aaa"})
	b := e.push("models/b", "1", map[string]string{"b.bin": "bbb"})
	r := e.start(nil)
	da := agent.Desired{Name: "a", Reference: e.ref("models/a:1"), Insecure: true}
	db := agent.Desired{Name: "team/b", Reference: e.ref("models/b:1"), Insecure: true}
	r.set(da, db)
	r.waitReady(t, "a", a)
	r.waitReady(t, "team/b", b)

	r.set(da)
	waitFor(t, "team/b's directory removed", func() bool {
		_, err := os.Stat(filepath.Join(e.root, "artifacts", "team"))
		return os.IsNotExist(err)
	})
	waitFor(t, "b's blob collected", func() bool { return !e.hasBlob("bbb") })
	if got := e.mustRead("a", "a.bin"); got != "aaa" {
		t.Errorf("a/current/a.bin = %q after b was dropped", got)
	}
	for _, s := range r.Statuses() {
		if s.Name == "team/b" {
			t.Errorf("status of the dropped artifact still listed: %+v", s)
		}
	}
	b2, _ := os.ReadFile(filepath.Join(e.root, "desired.json"))
	if strings.Contains(string(b2), "team/b") {
		t.Errorf("desired.json still lists the dropped artifact:\n%s", b2)
	}
}

// Removed is called once a dropped artifact's directory is gone, and only
// for what was dropped: a finalizer waiting on it may then let go.
func TestRemovedHookAfterFilesGone(t *testing.T) {
	e := newEnv(t)
	a := e.push("models/a", "1", map[string]string{"a.bin": "aaa"})
	b := e.push("models/b", "1", map[string]string{"b.bin": "bbb"})
	removed := make(chan string, 10)
	r := e.start(func(o *agent.Options) {
		o.Removed = func(name string) {
			// Called after the directory is gone: check it here, not later.
			if _, err := os.Stat(filepath.Join(e.root, "artifacts", "team", "b")); !os.IsNotExist(err) {
				t.Errorf("Removed(%s) called while its directory is still there (%v)", name, err)
			}
			removed <- name
		}
	})
	da := agent.Desired{Name: "a", Reference: e.ref("models/a:1"), Insecure: true}
	db := agent.Desired{Name: "team/b", Reference: e.ref("models/b:1"), Insecure: true}
	r.set(da, db)
	r.waitReady(t, "a", a)
	r.waitReady(t, "team/b", b)

	r.set(da)
	select {
	case name := <-removed:
		if name != "team/b" {
			t.Errorf("Removed(%q), want team/b", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Removed was not called for the dropped artifact")
	}
	select {
	case name := <-removed:
		t.Errorf("Removed(%q) called again", name)
	case <-time.After(200 * time.Millisecond):
	}
}

// A restart without the source and without the registry serves what is on
// disk and reports it Ready; an artifact dropped while the agent was down
// (it is not in the persisted list) is removed at the next list.
func TestRestartOfflineServesFromDisk(t *testing.T) {
	e := newEnv(t)
	a := e.push("models/a", "1", map[string]string{"a.bin": "aaa"})
	b := e.push("models/b", "1", map[string]string{"b.bin": "bbb"})
	r := e.start(nil)
	r.set(
		agent.Desired{Name: "a", Reference: e.ref("models/a:1"), Insecure: true},
		agent.Desired{Name: "b", Reference: e.ref("models/b@" + b.String()), Insecure: true},
	)
	r.waitReady(t, "a", a)
	r.waitReady(t, "b", b)
	r.stop(t)

	e.proxy.down.Store(true)
	r2 := e.start(nil) // its source never sends anything
	r2.waitReady(t, "a", a)
	r2.waitReady(t, "b", b)
	if e.mustRead("a", "a.bin") != "aaa" || e.mustRead("b", "b.bin") != "bbb" {
		t.Error("files changed across the offline restart")
	}
	waitFor(t, "a's status to say the registry cannot be reached", func() bool {
		s, _ := r2.rec.get("a")
		return s.Phase == agent.Ready && strings.Contains(s.Message, "cannot check for a newer version")
	})
	if r2.rec.sawPhase("a", agent.Failed) || r2.rec.sawPhase("b", agent.Failed) {
		t.Error("an artifact served from disk was reported Failed because the registry is down")
	}
}

// A reference that cannot be pulled yet (its tag is not pushed) makes the
// artifact Failed, retried with backoff until it works.
func TestRetriesFailedPull(t *testing.T) {
	e := newEnv(t)
	a := e.push("models/a", "1", map[string]string{"a.bin": "aaa"})
	e.proxy.missing.Store(3)
	var attempts atomic.Int64
	r := e.start(func(o *agent.Options) {
		o.Backoff = func(n int) time.Duration { attempts.Store(int64(n)); return 20 * time.Millisecond }
	})
	r.set(agent.Desired{Name: "a", Reference: e.ref("models/a:1"), Insecure: true})
	r.waitReady(t, "a", a)
	if !r.rec.sawPhase("a", agent.Failed) {
		t.Error("no Failed status while the tag could not be found")
	}
	if attempts.Load() != 3 {
		t.Errorf("backed off %d times, want 3", attempts.Load())
	}
	s, _ := r.rec.get("a")
	if s.Message != "" {
		t.Errorf("Ready status keeps an old message: %q", s.Message)
	}
}

// A second artifact sharing a layer with the first downloads only what it
// lacks, and the metrics say so.
func TestMetricsCountDedup(t *testing.T) {
	e := newEnv(t)
	shared := strings.Repeat("shared weights ", 1000)
	a := e.push("models/a", "1", map[string]string{"base.bin": shared, "head-a.bin": "head a"})
	b := e.push("models/b", "1", map[string]string{"base.bin": shared, "head-b.bin": "head b"})
	reg := prometheus.NewRegistry()
	r := e.start(func(o *agent.Options) { o.Metrics = reg })
	da := agent.Desired{Name: "a", Reference: e.ref("models/a:1"), Insecure: true}
	r.set(da)
	r.waitReady(t, "a", a)
	fetchedA := metric(t, reg, "barge_edgepuller_bytes_fetched_total", "")
	if fetchedA < float64(len(shared)) {
		t.Errorf("bytes_fetched_total = %v after the first pull, want at least %d", fetchedA, len(shared))
	}
	r.set(da, agent.Desired{Name: "b", Reference: e.ref("models/b:1"), Insecure: true})
	r.waitReady(t, "b", b)
	fetchedB := metric(t, reg, "barge_edgepuller_bytes_fetched_total", "") - fetchedA
	if reused := metric(t, reg, "barge_edgepuller_bytes_reused_total", ""); reused < float64(len(shared)) {
		t.Errorf("bytes_reused_total = %v, want at least the shared layer's %d bytes", reused, len(shared))
	}
	if fetchedB >= float64(len(shared)) {
		t.Errorf("the second artifact fetched %v bytes: the shared layer was downloaded again", fetchedB)
	}
	if n := metric(t, reg, "barge_edgepuller_pull_duration_seconds", ""); n != 2 {
		t.Errorf("pull_duration_seconds counts %v pulls, want 2", n)
	}
}

// Entries the agent cannot take are reported and skipped; the others work.
func TestInvalidEntrySkipped(t *testing.T) {
	e := newEnv(t)
	a := e.push("models/a", "1", map[string]string{"a.bin": "aaa"})
	r := e.start(nil)
	r.set(
		agent.Desired{Name: "a", Reference: e.ref("models/a:1"), Insecure: true},
		agent.Desired{Name: "a", Reference: e.ref("models/a:2"), Insecure: true},
		agent.Desired{Name: "../escape", Reference: e.ref("models/a:1")},
		agent.Desired{Name: "notag", Reference: e.ref("models/a")},
	)
	r.waitReady(t, "a", a)
	if s, _ := r.rec.get("notag"); s.Phase != agent.Failed || !strings.Contains(s.Message, "names no version") {
		t.Errorf("status of an entry without a tag: %+v", s)
	}
	if _, err := os.Stat(filepath.Join(e.root, "escape")); err == nil {
		t.Error("a name with .. wrote outside artifacts/")
	}
	time.Sleep(100 * time.Millisecond)
	if got := e.mustRead("a", "a.bin"); got != "aaa" {
		t.Errorf("the duplicate entry replaced the first: %q", got)
	}
}

func TestValidate(t *testing.T) {
	ref := "reg.example:5000/models/resnet:1.0"
	tests := []struct {
		list []agent.Desired
		want string // "" for valid
	}{
		{[]agent.Desired{{Name: "resnet", Reference: ref}, {Name: "ns/yolo_v8.1", Reference: "reg/x@sha256:" + strings.Repeat("a", 64)}}, ""},
		{[]agent.Desired{{Name: "", Reference: ref}}, "name is empty"},
		{[]agent.Desired{{Name: "a/b/c", Reference: ref}}, "more than one '/'"},
		{[]agent.Desired{{Name: "..", Reference: ref}}, "letters, digits"},
		{[]agent.Desired{{Name: ".hidden", Reference: ref}}, "letters, digits"},
		{[]agent.Desired{{Name: "a b", Reference: ref}}, "letters, digits"},
		{[]agent.Desired{{Name: "a", Reference: ""}}, "no reference"},
		{[]agent.Desired{{Name: "a", Reference: "reg/x"}}, "names no version"},
		{[]agent.Desired{{Name: "a", Reference: "not a reference"}}, "reference"},
		{[]agent.Desired{{Name: "a", Reference: ref}, {Name: "a", Reference: ref}}, "artifact #2 (a): its directory overlaps"},
		{[]agent.Desired{{Name: "a", Reference: ref}, {Name: "a/b", Reference: ref}}, "overlaps"},
		{[]agent.Desired{{Name: "a", Reference: ref, Verify: agent.VerifyRef{Keys: "k", Index: "sha256:" + strings.Repeat("b", 64)}}}, ""},
		{[]agent.Desired{{Name: "a", Reference: ref, Verify: agent.VerifyRef{Keys: "k", Index: "latest"}}}, "verify index \"latest\": not a digest"},
		{[]agent.Desired{{Name: "a", Reference: ref, Verify: agent.VerifyRef{Index: "sha256:" + strings.Repeat("b", 64)}}}, "names no key material"},
	}
	for _, tt := range tests {
		err := agent.Validate(tt.list)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Validate(%v) = %v, want nil", tt.list, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Validate(%v) = %v, want an error containing %q", tt.list, err, tt.want)
		}
	}
}

// metric reads a counter or gauge (with that phase, if not ""), or a
// histogram's sample count, from reg.
func metric(t *testing.T, reg *prometheus.Registry, name, phase string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if phase != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != phase) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s %s not exposed", name, phase)
	return 0
}

// A container image is refused before its layers are downloaded: on an
// edge link, a mistaken reference must not cost gigabytes.
func TestRefusesImageBeforeItsLayers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	repo, err := remote.NewRepository(e.reg.Host() + "/apps/server")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	layer := bytes.Repeat([]byte("image layer "), 200_000) // 2.4 MB
	push := func(mediaType string, b []byte) ocispec.Descriptor {
		desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := repo.Push(ctx, desc, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		return desc
	}
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    push(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)),
		Layers:    []ocispec.Descriptor{push(ocispec.MediaTypeImageLayerGzip, layer)},
	}
	m.SchemaVersion = 2
	desc, err := artifact.PushManifest(ctx, repo, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, desc, "1"); err != nil {
		t.Fatal(err)
	}

	r := e.start(nil)
	r.set(agent.Desired{Name: "server", Reference: e.ref("apps/server:1"), Insecure: true})
	waitFor(t, "server Failed", func() bool { return r.rec.sawPhase("server", agent.Failed) })
	if s, _ := r.rec.get("server"); !strings.Contains(s.Message, "container image") {
		t.Errorf("message %q does not say it is a container image", s.Message)
	}
	time.Sleep(200 * time.Millisecond) // a retry or two
	if n := e.proxy.bodyOut.Load(); n >= int64(len(layer)) {
		t.Errorf("%d bytes were downloaded; the %d-byte image layer should not have been", n, len(layer))
	}
	if _, err := os.Stat(filepath.Join(e.root, "store", "blobs", "sha256", m.Layers[0].Digest.Encoded())); err == nil {
		t.Error("the image layer is in the store")
	}
}
