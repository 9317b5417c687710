package gc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/bargeml/barge/edgepuller/gc"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/edgepuller/unpack"
)

// node is a puller's disk: one store and artifact directories under a root.
type node struct {
	t     *testing.T
	dir   string
	st    *store.Store
	clock time.Time // version use times, advanced by activate
}

func newNode(t *testing.T) *node {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "store"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return &node{t: t, dir: dir, st: st, clock: time.Now().Add(-time.Hour)}
}

func (n *node) root(name string) string { return filepath.Join(n.dir, "artifacts", name) }

func (n *node) push(b []byte) ocispec.Descriptor {
	n.t.Helper()
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := n.st.Push(context.Background(), desc, bytes.NewReader(b)); err != nil && !exists(err) {
		n.t.Fatal(err)
	}
	return desc
}

func exists(err error) bool { return errors.Is(err, errdef.ErrAlreadyExists) }

// version stores a manifest with one raw layer per file, as fetch leaves
// it, and returns its digest and layers.
func (n *node) version(files map[string]string) (digest.Digest, []ocispec.Descriptor) {
	n.t.Helper()
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: n.push([]byte("{}"))}
	m.SchemaVersion = 2
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		l := n.push([]byte(files[name]))
		l.MediaType = "application/vnd.cncf.model.weight.v1.raw"
		l.Annotations = map[string]string{ocispec.AnnotationTitle: name}
		m.Layers = append(m.Layers, l)
	}
	b, _ := json.Marshal(m)
	return n.push(b).Digest, m.Layers
}

// activate materializes files as the current version of name, one minute
// of use after the previous activation.
func (n *node) activate(name string, files map[string]string) digest.Digest {
	n.t.Helper()
	d, layers := n.version(files)
	root := n.root(name)
	if old, err := unpack.Current(root); err == nil {
		gc.Touch(root, old, n.clock)
	}
	if _, err := unpack.Activate(context.Background(), n.st, layers, root, d, unpack.Options{}); err != nil {
		n.t.Fatal(err)
	}
	n.clock = n.clock.Add(time.Minute)
	if err := gc.Touch(root, d, n.clock); err != nil {
		n.t.Fatal(err)
	}
	return d
}

func (n *node) collect(opts gc.Options, pinned ...digest.Digest) gc.Result {
	n.t.Helper()
	var roots []string
	entries, _ := os.ReadDir(filepath.Join(n.dir, "artifacts"))
	for _, e := range entries {
		roots = append(roots, n.root(e.Name()))
	}
	res, err := gc.Collect(context.Background(), n.st, roots, pinned, opts)
	if err != nil {
		n.t.Fatal(err)
	}
	return res
}

func (n *node) hasBlob(content string) bool {
	ok, err := n.st.Exists(context.Background(), ocispec.Descriptor{Digest: digest.FromString(content)})
	if err != nil {
		n.t.Fatal(err)
	}
	return ok
}

func (n *node) versions(name string) []digest.Digest {
	n.t.Helper()
	ds, err := unpack.Versions(n.root(name))
	if err != nil {
		n.t.Fatal(err)
	}
	slices.Sort(ds)
	return ds
}

func (n *node) readCurrent(name, file string) string {
	n.t.Helper()
	b, err := os.ReadFile(filepath.Join(n.root(name), "current", file))
	if err != nil {
		n.t.Fatalf("a workload reading %s/current/%s: %v", name, file, err)
	}
	return string(b)
}

func sorted(ds ...digest.Digest) []digest.Digest {
	slices.Sort(ds)
	return ds
}

// Three versions of a model were rolled out; the collector keeps current
// and as many previous ones as asked, most recent first, and deletes the
// blobs only the removed ones used.
func TestCollectRetention(t *testing.T) {
	tests := []struct {
		name     string
		previous int
		keep     func(v1, v2, v3 digest.Digest) []digest.Digest
		v1Blob   bool
	}{
		{"default keeps one previous", 0, func(v1, v2, v3 digest.Digest) []digest.Digest { return sorted(v2, v3) }, false},
		{"none", -1, func(v1, v2, v3 digest.Digest) []digest.Digest { return sorted(v3) }, false},
		{"two", 2, func(v1, v2, v3 digest.Digest) []digest.Digest { return sorted(v1, v2, v3) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			v1 := n.activate("resnet", map[string]string{"model.onnx": "weights v1", "labels.txt": "cat dog"})
			v2 := n.activate("resnet", map[string]string{"model.onnx": "weights v2", "labels.txt": "cat dog"})
			v3 := n.activate("resnet", map[string]string{"model.onnx": "weights v3", "labels.txt": "cat dog"})

			res := n.collect(gc.Options{Previous: tt.previous})

			if got, want := n.versions("resnet"), tt.keep(v1, v2, v3); !slices.Equal(got, want) {
				t.Errorf("versions kept = %v, want %v", got, want)
			}
			if n.hasBlob("weights v1") != tt.v1Blob {
				t.Errorf("blob of v1's weights in store = %v, want %v", !tt.v1Blob, tt.v1Blob)
			}
			if !n.hasBlob("weights v3") || !n.hasBlob("cat dog") {
				t.Error("a blob of the current version was deleted")
			}
			if ok, _ := n.st.Exists(context.Background(), ocispec.Descriptor{Digest: v3}); !ok {
				t.Error("the current version's manifest was deleted")
			}
			if got := n.readCurrent("resnet", "model.onnx"); got != "weights v3" {
				t.Errorf("current/model.onnx = %q", got)
			}
			if tt.previous == 0 && !n.hasBlob("weights v2") {
				t.Error("the blob of the kept previous version was deleted")
			}
			if !tt.v1Blob && (res.VersionsRemoved == 0 || res.BlobsDeleted == 0 || res.BytesFreed < int64(len("weights v1"))) {
				t.Errorf("result %+v does not count what was removed", res)
			}
		})
	}
}

// Blobs shared between two artifacts stay while either uses them.
func TestCollectSharedBlobs(t *testing.T) {
	n := newNode(t)
	n.activate("a", map[string]string{"shared.bin": "shared", "a.bin": "only a"})
	n.activate("b", map[string]string{"shared.bin": "shared"})
	n.activate("a", map[string]string{"a.bin": "a v2"})

	n.collect(gc.Options{Previous: -1})

	if !n.hasBlob("shared") {
		t.Error("a blob artifact b's current version uses was deleted because a dropped it")
	}
	if n.hasBlob("only a") {
		t.Error("a blob no kept version references is still there")
	}
	if got := n.readCurrent("b", "shared.bin"); got != "shared" {
		t.Errorf("b/current/shared.bin = %q", got)
	}
}

// A pull in flight has its manifest pinned: the blobs it found in the store
// stay although no version references them yet; and while a pinned
// manifest is not even stored, no blob is deleted.
func TestCollectPinned(t *testing.T) {
	n := newNode(t)
	n.activate("a", map[string]string{"w": "old weights"})
	n.activate("a", map[string]string{"w": "current weights"})
	os.RemoveAll(n.root("a")) // pretend the artifact was dropped: its blobs are unreferenced
	inFlight, _ := n.version(map[string]string{"w": "old weights", "x": "new file"})

	n.collect(gc.Options{}, digest.FromString("a manifest not fetched yet"))
	if !n.hasBlob("current weights") {
		t.Fatal("a blob was deleted while a pull had not stored its manifest yet")
	}

	n.collect(gc.Options{}, inFlight)
	if !n.hasBlob("old weights") || !n.hasBlob("new file") {
		t.Error("a blob of the pinned manifest was deleted")
	}
	if n.hasBlob("current weights") {
		t.Error("an unreferenced blob survived")
	}
}

// Under a quota, the least recently used version that is not current goes
// first, whichever artifact it belongs to; current versions are never
// evicted, even when the quota cannot be met.
func TestCollectQuota(t *testing.T) {
	big := func(c byte) string { return string(bytes.Repeat([]byte{c}, 100_000)) }
	n := newNode(t)
	n.activate("a", map[string]string{"w": big('1')}) // a's previous, used first
	n.activate("b", map[string]string{"w": big('2')}) // b's previous, used later
	n.activate("a", map[string]string{"w": big('3')})
	n.activate("b", map[string]string{"w": big('4')})

	res := n.collect(gc.Options{})
	if res.VersionsRemoved != 0 || res.Usage < 400_000 || res.Usage > 410_000 {
		t.Fatalf("without a quota: %+v; want nothing removed and hard-linked files counted once (~400 kB)", res)
	}

	res = n.collect(gc.Options{Quota: 350_000})
	if n.hasBlob(big('1')) || len(n.versions("a")) != 1 {
		t.Error("a's previous version, the least recently used, was not evicted")
	}
	if !n.hasBlob(big('2')) || len(n.versions("b")) != 2 {
		t.Error("b's previous version was evicted although evicting a's was enough")
	}
	if res.OverQuota || res.Usage > 350_000 || res.BytesFreed < 100_000 {
		t.Errorf("result %+v: want usage under the quota and 100 kB freed", res)
	}

	res = n.collect(gc.Options{Quota: 1000})
	if !res.OverQuota {
		t.Errorf("result %+v: want OverQuota when only current versions are left", res)
	}
	if n.readCurrent("a", "w") != big('3') || n.readCurrent("b", "w") != big('4') {
		t.Error("a current version was evicted to meet the quota")
	}
	if !n.hasBlob(big('3')) || !n.hasBlob(big('4')) {
		t.Error("a blob of a current version was deleted to meet the quota")
	}
}

// A partial download being written is never discarded, however old it
// looks and whatever the quota; an abandoned one is.
func TestCollectIngests(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	partial := func(content string) (*store.Writer, digest.Digest) {
		b := []byte(content)
		desc := ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
		w, err := n.st.Writer(ctx, desc)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b[:5])
		old := time.Now().Add(-30 * 24 * time.Hour)
		os.Chtimes(filepath.Join(n.dir, "store", "ingest", desc.Digest.Encoded(), "data"), old, old)
		return w, desc.Digest
	}
	active, activeD := partial("being downloaded now")
	defer active.Close()
	abandoned, abandonedD := partial("abandoned a month ago")
	abandoned.Close()

	res := n.collect(gc.Options{Quota: 1})

	if _, err := n.st.Status(ctx, activeD); err != nil {
		t.Errorf("the partial being written was discarded: %v", err)
	}
	if _, err := n.st.Status(ctx, abandonedD); err == nil {
		t.Error("the abandoned partial is still there")
	}
	if res.IngestsAborted != 1 {
		t.Errorf("IngestsAborted = %d, want 1", res.IngestsAborted)
	}
	if _, err := active.Write([]byte("!")); err != nil {
		t.Errorf("the writer of the kept partial cannot continue: %v", err)
	}
}
