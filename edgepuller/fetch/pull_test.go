package fetch_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/fetch"
)

func fourFiles(seed uint64) map[string][]byte {
	return map[string][]byte{
		"weights.bin":    randomBytes(3<<20+123, seed),
		"config.json":    []byte(`{"layers": 50}`),
		"code/pre.py":    randomBytes(10<<10, seed+1),
		"docs/README.md": randomBytes(700, seed+2),
	}
}

// TestPullEndToEnd pulls a four-file model with the default client, as a
// node would, and finds every file in the store and every layer reported.
func TestPullEndToEnd(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	m := pushModel(t, reg.Host(), "models/resnet", "v1", fourFiles(1))
	st := newStore(t)
	var ev events

	desc, a, res, err := fetch.Pull(ctx, st, m.ref, fetch.Options{PlainHTTP: true, Progress: ev.record})
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != m.manifest.Digest {
		t.Errorf("pulled manifest %s, pushed %s", desc.Digest, m.manifest.Digest)
	}
	if a.Name != "models/resnet" || a.Version != "v1" {
		t.Errorf("artifact is %q version %q, want the name and version from the model config", a.Name, a.Version)
	}
	var paths []string
	for _, f := range a.Files {
		paths = append(paths, f.Path)
		if f.Digest != m.digestOf(f.Path) {
			t.Errorf("%s: digest %s, want %s", f.Path, f.Digest, m.digestOf(f.Path))
		}
		if len(ev.of(f.Digest, fetch.Started)) != 1 || len(ev.of(f.Digest, fetch.Done)) != 1 {
			t.Errorf("%s: want one Started and one Done event", f.Path)
		}
	}
	if want := []string{"code/pre.py", "config.json", "docs/README.md", "weights.bin"}; !equal(paths, want) {
		t.Errorf("files %v, want %v", paths, want)
	}
	assertStored(t, st, m)
	for _, d := range []digest.Digest{desc.Digest, a.Config.Digest} {
		if ok, _ := st.Exists(ctx, ocispecDesc(d)); !ok {
			t.Errorf("%s (manifest or config) is not in the store", d)
		}
	}
	if res.Fetched < a.Size || res.Fetched > a.Size+1<<10 || res.Reused != 0 || res.Resumed != 0 || res.Retries != 0 {
		t.Errorf("result %+v, want Fetched = %d (manifest, config and files) and nothing else", res, a.Size)
		for _, e := range ev.all {
			if e.Kind == fetch.Retrying {
				t.Logf("%s %s: %v", e.Name, e.Kind, e.Err)
			}
		}
	}
}

// TestPullSharedLayers pulls a second version that shares three of its
// four files with the first: only the new file and the new config cross
// the network.
func TestPullSharedLayers(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	v1 := pushModel(t, reg.Host(), "models/resnet", "v1", fourFiles(1))
	files := fourFiles(1)
	files["weights.bin"] = randomBytes(2<<20, 99)
	v2 := pushModel(t, reg.Host(), "models/resnet", "v2", files)
	st := newStore(t)
	if _, _, _, err := fetch.Pull(ctx, st, v1.ref, fetch.Options{PlainHTTP: true}); err != nil {
		t.Fatal(err)
	}

	c := newCounter(t)
	var ev events
	_, a, res, err := fetch.Pull(ctx, st, v2.ref, fetch.Options{PlainHTTP: true, Client: c.client(), Progress: ev.record})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, v2)
	gets := c.blobGETs("", "")
	var got []string
	for _, g := range gets {
		got = append(got, g.Path[len(g.Path)-71:])
	}
	want := []string{a.Config.Digest.String(), v2.digestOf("weights.bin").String()}
	sort.Strings(got)
	sort.Strings(want)
	if !equal(got, want) {
		t.Errorf("blob GETs %v, want only the new config and weights %v", got, want)
	}
	if n, want := bodyBytes(gets), a.Config.Size+int64(len(files["weights.bin"])); n != want {
		t.Errorf("blob bodies carried %d bytes, want %d", n, want)
	}
	var shared int64
	for _, name := range []string{"config.json", "code/pre.py", "docs/README.md"} {
		shared += int64(len(files[name]))
		if len(ev.of(v2.digestOf(name), fetch.Skipped)) != 1 {
			t.Errorf("%s: no Skipped event", name)
		}
	}
	if res.Reused != shared {
		t.Errorf("Reused = %d, want the %d bytes of the three shared files", res.Reused, shared)
	}
}

// TestPullResumesPartial leaves half of a blob in the store's ingest, as a
// pull killed midway does, and checks that the next pull asks for the rest
// only.
func TestPullResumesPartial(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	m := pushModel(t, reg.Host(), "models/resnet", "v1", fourFiles(1))
	st := newStore(t)
	weights := m.files["weights.bin"]
	half := int64(len(weights) / 2)
	w, err := st.Writer(ctx, fileDesc(weights))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(weights[:half]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	c := newCounter(t)
	var ev events
	_, _, res, err := fetch.Pull(ctx, st, m.ref, fetch.Options{PlainHTTP: true, Client: c.client(), Progress: ev.record})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, m)
	gets := c.blobGETs("", m.digestOf("weights.bin"))
	if len(gets) != 1 || gets[0].Range != "bytes="+itoa(half)+"-" || gets[0].Status != http.StatusPartialContent {
		t.Fatalf("weights GETs %+v, want one Range request from %d answered 206", gets, half)
	}
	if gets[0].Body != int64(len(weights))-half {
		t.Errorf("received %d bytes of weights, want only the missing %d", gets[0].Body, int64(len(weights))-half)
	}
	if res.Resumed != 1 {
		t.Errorf("Resumed = %d, want 1", res.Resumed)
	}
	if r := ev.of(m.digestOf("weights.bin"), fetch.Resumed); len(r) != 1 || r[0].Offset != half {
		t.Errorf("Resumed events %+v, want one at offset %d", r, half)
	}
}

// TestPullConcurrency holds every blob response for a while and counts how
// many are in flight at once.
func TestPullConcurrency(t *testing.T) {
	reg := startRegistry(t)
	files := map[string][]byte{}
	for i := range 6 {
		files["part"+itoa(int64(i))] = randomBytes(64<<10, uint64(i)+10)
	}
	pushModel(t, reg.Host(), "datasets/parts", "v1", files)
	for _, concurrency := range []int{1, 3} {
		t.Run(itoa(int64(concurrency)), func(t *testing.T) {
			var mu sync.Mutex
			inflight, peak := 0, 0
			p := newProxy(t, reg)
			p.hold = func() func() {
				mu.Lock()
				inflight++
				peak = max(peak, inflight)
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
				return func() { mu.Lock(); inflight--; mu.Unlock() }
			}
			ref := p.Host() + "/datasets/parts:v1"
			if _, _, _, err := fetch.Pull(context.Background(), newStore(t), ref, fetch.Options{PlainHTTP: true, Concurrency: concurrency}); err != nil {
				t.Fatal(err)
			}
			if peak != concurrency {
				t.Errorf("%d blob downloads at once, want %d", peak, concurrency)
			}
		})
	}
}

// TestPullCheckRefusesBeforeLayers: what the caller refuses, once it sees
// the manifest and config, costs no layer bytes.
func TestPullCheckRefusesBeforeLayers(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	m := pushModel(t, reg.Host(), "models/resnet", "v1", fourFiles(1))
	st := newStore(t)
	c := newCounter(t)
	refused := errors.New("not for this node")
	var seen *artifact.Artifact
	_, _, _, err := fetch.Pull(ctx, st, m.ref, fetch.Options{PlainHTTP: true, Client: c.client(),
		Check: func(a *artifact.Artifact) error { seen = a; return refused }})
	if !errors.Is(err, refused) {
		t.Fatalf("error %v, want the Check's", err)
	}
	if seen == nil || len(seen.Files) != 4 {
		t.Fatalf("Check saw %+v, want the typed view with 4 files", seen)
	}
	for _, g := range c.blobGETs("", "") {
		if g.Path[len(g.Path)-71:] != seen.Config.Digest.String() {
			t.Errorf("a refused pull fetched blob %s", g.Path)
		}
	}
}

// TestPullFetchesChangedBlobAgain: a workload wrote through its hard link
// into a weights file that the next version shares. The pull of that
// version must fetch the file again instead of handing the damage on, and
// must not hash again the shared files nobody touched.
func TestPullFetchesChangedBlobAgain(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	v1 := pushModel(t, reg.Host(), "models/resnet", "v1", fourFiles(1))
	files2 := fourFiles(1)
	files2["config.json"] = []byte(`{"layers": 51}`)
	v2 := pushModel(t, reg.Host(), "models/resnet", "v2", files2)
	st := newStore(t)
	opts := fetch.Options{PlainHTTP: true}
	if _, _, _, err := fetch.Pull(ctx, st, v1.ref, opts); err != nil {
		t.Fatal(err)
	}

	// The workload's writable mount of v1's weights: a hard link to the blob.
	weights := filepath.Join(t.TempDir(), "weights.bin")
	if err := os.Link(st.BlobPath(v1.digestOf("weights.bin")), weights); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(weights, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(weights, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("fine-tuned in place"), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chmod(weights, 0o444); err != nil {
		t.Fatal(err)
	}

	var ev events
	opts.Progress = ev.record
	hashed := st.Rehashed()
	_, _, res, err := fetch.Pull(ctx, st, v2.ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(ev.of(v2.digestOf("weights.bin"), fetch.Done)); got != 1 {
		t.Errorf("weights.bin, changed in the store, was fetched %d times; want once", got)
	}
	if want := int64(len(v2.files["weights.bin"])); res.Fetched < want {
		t.Errorf("pull fetched %d bytes; want at least weights.bin's %d", res.Fetched, want)
	}
	for _, name := range []string{"code/pre.py", "docs/README.md"} {
		if got := len(ev.of(v2.digestOf(name), fetch.Skipped)); got != 1 {
			t.Errorf("%s, unchanged in the store, was not reused", name)
		}
	}
	// Only the changed file was hashed again: the first stat that did not
	// match cost one read of it, the unchanged blobs a stat each.
	if got, want := st.Rehashed()-hashed, int64(len(v1.files["weights.bin"])); got != want {
		t.Errorf("the pull hashed %d bytes of stored blobs again; want %d, only the changed weights.bin", got, want)
	}
	assertStored(t, st, v2)
}

// TestVerifyBeforeAnyLayer: Options.Verify sees the manifest's descriptor
// before the config or any layer is asked for, and its refusal stops the
// pull there: a digest without a trusted signature costs a slow link no
// layer bytes. Accepted, the pull goes on as usual.
func TestVerifyBeforeAnyLayer(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	m := pushModel(t, reg.Host(), "models/unsigned", "v1", fourFiles(7))
	c := newCounter(t)
	st := newStore(t)
	var asked []digest.Digest
	refuse := errors.New("no trusted signature")
	_, _, _, err := fetch.Pull(ctx, st, m.ref, fetch.Options{PlainHTTP: true, Client: c.client(),
		Verify: func(_ context.Context, desc ocispec.Descriptor) error {
			asked = append(asked, desc.Digest)
			return refuse
		}})
	if !errors.Is(err, refuse) {
		t.Fatalf("pull refused by Verify: %v, want its error", err)
	}
	if len(asked) != 1 || asked[0] != m.manifest.Digest {
		t.Errorf("Verify asked for %v, want once for the manifest %s", asked, m.manifest.Digest)
	}
	if blobs := c.blobGETs(reg.Host(), ""); len(blobs) != 0 {
		t.Errorf("%d blob requests after Verify refused the manifest, want none", len(blobs))
	}
	for name := range m.files {
		if ok, _ := st.Exists(ctx, ocispecDesc(m.digestOf(name))); ok {
			t.Errorf("%s is in the store after a refused pull", name)
		}
	}

	if _, _, _, err := fetch.Pull(ctx, st, m.ref, fetch.Options{PlainHTTP: true,
		Verify: func(context.Context, ocispec.Descriptor) error { return nil }}); err != nil {
		t.Fatalf("pull with Verify accepting: %v", err)
	}
	assertStored(t, st, m)
}
