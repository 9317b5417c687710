package fetch_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// segSize is the big file of the segment tests: four segments of 1 MiB
// and a tail, with segments of at least 1 MiB.
const segSize = 4<<20 + 12345

// newSegmented is a one-file model of segSize bytes behind a fault proxy,
// with segments small enough for it.
func newSegmented(t *testing.T) *faulty {
	t.Helper()
	t.Cleanup(fetch.SetSegmentSizes(1<<20, 1<<20))
	reg := startRegistry(t)
	weights := randomBytes(segSize, 11)
	m := pushModel(t, reg.Host(), "models/big", "v1", map[string][]byte{"weights.bin": weights})
	p := newProxy(t, reg)
	return &faulty{reg: reg, p: p, m: m, weights: weights, ref: p.Host() + "/models/big:v1"}
}

func ranges(gets []exchange) []string {
	var out []string
	for _, g := range gets {
		out = append(out, g.Range)
	}
	slices.Sort(out)
	return out
}

// TestSegmentedPull: a large blob alone in its pull is fetched from the
// origin with four bounded Range requests at once, each byte once.
func TestSegmentedPull(t *testing.T) {
	f := newSegmented(t)
	st := newStore(t)
	res, gets, err := f.pull(t, st, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, f.m)
	want := []string{"bytes=0-1048575", "bytes=1048576-2097151", "bytes=2097152-3145727", fmt.Sprintf("bytes=3145728-%d", segSize-1)}
	if got := ranges(gets); !slices.Equal(got, want) {
		t.Fatalf("GETs with Range %q, want %q", got, want)
	}
	if got := bodyBytes(gets); got != segSize {
		t.Errorf("received %d bytes for a blob of %d", got, segSize)
	}
	if res.FromOrigin < segSize || res.Retries != 0 {
		t.Errorf("Result %+v: want every byte from the origin, no retry", res)
	}
}

// TestSegmentedNotWithPeers: with Announce set (a peer server follows the
// ingest by its size), or Segments 1, the blob comes in one stream.
func TestSegmentedNotWithPeers(t *testing.T) {
	for name, opts := range map[string]fetch.Options{
		"announce":   {Announce: func(ocispec.Descriptor) func() { return nil }},
		"segments 1": {Segments: 1},
	} {
		t.Run(name, func(t *testing.T) {
			f := newSegmented(t)
			st := newStore(t)
			_, gets, err := f.pull(t, st, opts)
			if err != nil {
				t.Fatal(err)
			}
			assertStored(t, st, f.m)
			if len(gets) != 1 || gets[0].Range != "" {
				t.Fatalf("GETs %+v, want one without Range", gets)
			}
		})
	}
}

// TestSegmentCut cuts the third segment once, part way: that segment
// alone resumes where it was cut, and no byte crosses the link twice.
func TestSegmentCut(t *testing.T) {
	f := newSegmented(t)
	const at = 100 << 10
	var cut atomic.Bool
	f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.Header.Get("Range"), "bytes=2097152-") || !cut.CompareAndSwap(false, true) {
			return false
		}
		f.p.cutAfter(w, r, at)
		return true
	})
	st := newStore(t)
	res, gets, err := f.pull(t, st, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, f.m)
	if !slices.Contains(ranges(gets), fmt.Sprintf("bytes=%d-3145727", 2097152+at)) {
		t.Fatalf("GETs with Range %q: the cut segment was not resumed at %d", ranges(gets), 2097152+at)
	}
	if got := bodyBytes(gets); got > segSize+64<<10 {
		t.Errorf("received %d bytes for a blob of %d cut once", got, segSize)
	}
	if res.Retries != 1 {
		t.Errorf("Retries = %d, want 1", res.Retries)
	}
}

// TestSegmentsRangeIgnored: an origin that answers a bounded Range with
// the whole blob (200), or refuses it (416), gets one plain GET after the
// first refusals, and the blob is right.
func TestSegmentsRangeIgnored(t *testing.T) {
	for name, status := range map[string]int{"200": http.StatusOK, "416": http.StatusRequestedRangeNotSatisfiable} {
		t.Run(name, func(t *testing.T) {
			f := newSegmented(t)
			f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
				if status == http.StatusRequestedRangeNotSatisfiable {
					if r.Header.Get("Range") == "" {
						return false
					}
					registryError(w, status, "BLOB_UNKNOWN", "range not satisfiable")
					return true
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(f.weights)))
				w.Header().Set("Content-Type", "application/octet-stream")
				w.WriteHeader(http.StatusOK)
				w.Write(f.weights)
				return true
			})
			st := newStore(t)
			_, gets, err := f.pull(t, st, fetch.Options{})
			if err != nil {
				t.Fatal(err)
			}
			assertStored(t, st, f.m)
			last := gets[len(gets)-1]
			if last.Range != "" || last.Status != http.StatusOK || last.Body != segSize {
				t.Fatalf("last GET %+v, want a plain GET of the whole blob", last)
			}
			// The refused segments were dropped unread: at most a buffer each.
			if got := bodyBytes(gets); got > segSize+4<<20 {
				t.Errorf("received %d bytes for a blob of %d", got, segSize)
			}
		})
	}
}

// TestSegmentedInterrupted stops a pull whose first segment is stalled
// while the others complete: what the others wrote beyond the prefix is
// dropped, the next pull resumes from the prefix's checkpoint, and the
// blob is right.
func TestSegmentedInterrupted(t *testing.T) {
	f := newSegmented(t)
	const at = 300 << 10
	held := make(chan struct{})
	var held1 atomic.Bool
	f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") || !held1.CompareAndSwap(false, true) {
			return false
		}
		resp := f.p.upstream(r)
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.CopyN(w, resp.Body, at)
		w.(http.Flusher).Flush()
		close(held)
		<-r.Context().Done()
		return true
	})
	st, err := newStoreWith(t, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := newCounter(t)
	done := make(chan error, 1)
	go func() {
		_, _, _, err := fetch.Pull(ctx, st, f.ref, fetch.Options{PlainHTTP: true, Client: c.client(), Backoff: fastRetry})
		done <- err
	}()
	<-held
	waitFor(t, func() bool { return bodyBytes(c.blobGETs("", f.m.digestOf("weights.bin"))) >= segSize-1<<20+at })
	cancel()
	if err := <-done; err == nil {
		t.Fatal("interrupted pull succeeded")
	}
	s, err := st.Status(context.Background(), f.m.digestOf("weights.bin"))
	if err != nil || s.Offset > at || s.Offset < at-2*64<<10 {
		t.Fatalf("after the interruption Status = %+v, %v; want the prefix's checkpoint near %d", s, err, at)
	}
	f.p.fault("", nil)
	_, gets, err := f.pull(t, st, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, f.m)
	if !slices.ContainsFunc(ranges(gets), func(r string) bool { return strings.HasPrefix(r, fmt.Sprintf("bytes=%d-", s.Offset)) }) {
		t.Fatalf("resumed with Range %q, want one from %d", ranges(gets), s.Offset)
	}
	if got := bodyBytes(gets); got != segSize-s.Offset {
		t.Errorf("the resume received %d bytes, want the %d from the checkpoint", got, segSize-s.Offset)
	}
}

func newStoreWith(t *testing.T, checkpoint int64) (*store.Store, error) {
	return store.Open(t.TempDir(), store.Options{CheckpointBytes: checkpoint})
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
	}
}

// pullHelperEnv makes TestPullHelperProcess pull BARGE_PULL_REF into the
// store at BARGE_PULL_STORE, with segments of 1 MiB, as a separate process
// that the test can SIGKILL.
const pullHelperEnv = "BARGE_PULL_HELPER"

func TestPullHelperProcess(t *testing.T) {
	if os.Getenv(pullHelperEnv) == "" {
		return
	}
	fetch.SetSegmentSizes(1<<20, 1<<20)
	st, err := store.Open(os.Getenv("BARGE_PULL_STORE"), store.Options{CheckpointBytes: 64 << 10})
	if err == nil {
		_, _, _, err = fetch.Pull(context.Background(), st, os.Getenv("BARGE_PULL_REF"), fetch.Options{PlainHTTP: true})
	}
	fmt.Fprintln(os.Stderr, "helper:", err)
	os.Exit(3) // it is meant to be killed
}

// TestSegmentedSIGKILL kills a puller whose first segment stalls part way
// while the three others are complete: the next pull resumes from the
// prefix's checkpoint (what lay beyond it was never verified), asks only
// for the rest, and the blob is right.
func TestSegmentedSIGKILL(t *testing.T) {
	f := newSegmented(t)
	const at = 300 << 10
	var others atomic.Int32
	stalled := make(chan struct{}, 1)
	f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
		first := strings.HasPrefix(r.Header.Get("Range"), "bytes=0-")
		resp := f.p.upstream(r)
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		if !first {
			io.Copy(w, resp.Body)
			others.Add(1)
			return true
		}
		io.CopyN(w, resp.Body, at)
		w.(http.Flusher).Flush()
		stalled <- struct{}{}
		<-r.Context().Done()
		return true
	})
	root := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPullHelperProcess$")
	cmd.Env = append(os.Environ(), pullHelperEnv+"=1", "BARGE_PULL_STORE="+root, "BARGE_PULL_REF="+f.ref)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	<-stalled
	waitFor(t, func() bool { return others.Load() == 3 })
	st, err := store.Open(root, store.Options{CheckpointBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	// Let the puller absorb what it received, up to a checkpoint that
	// lands (Status takes no lock), before the kill.
	waitFor(t, func() bool {
		s, err := st.Status(context.Background(), f.m.digestOf("weights.bin"))
		return err == nil && s.Offset >= at-2*64<<10
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	s, err := st.Status(context.Background(), f.m.digestOf("weights.bin"))
	if err != nil || s.Offset > at || s.Offset < at-2*64<<10 {
		t.Fatalf("after SIGKILL Status = %+v, %v; want a checkpoint of the prefix, at most 2 intervals below %d", s, err, at)
	}
	f.p.fault("", nil)
	_, gets, err := f.pull(t, st, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, f.m)
	if got := bodyBytes(gets); got != segSize-s.Offset {
		t.Errorf("the resume received %d bytes, want the %d from the checkpoint at %d", got, segSize-s.Offset, s.Offset)
	}
}

// TestSegmentsLeaveLayersTheirStreams: a model whose large layers fill
// Concurrency gets one stream per layer, whatever order they start in; with
// two, the first to start takes the two streams left over.
func TestSegmentsLeaveLayersTheirStreams(t *testing.T) {
	t.Cleanup(fetch.SetSegmentSizes(1<<20, 1<<20))
	reg := startRegistry(t)
	for _, layers := range []int{4, 2} {
		t.Run(fmt.Sprint(layers), func(t *testing.T) {
			files := map[string][]byte{}
			for i := range layers {
				files[fmt.Sprintf("part-%d.bin", i)] = randomBytes(segSize, uint64(100+10*layers+i))
			}
			m := pushModel(t, reg.Host(), fmt.Sprintf("models/parts%d", layers), "v1", files)
			st := newStore(t)
			c := newCounter(t)
			if _, _, _, err := fetch.Pull(context.Background(), st, reg.Host()+fmt.Sprintf("/models/parts%d:v1", layers), fetch.Options{PlainHTTP: true, Client: c.client()}); err != nil {
				t.Fatal(err)
			}
			assertStored(t, st, m)
			gets := 0
			for name := range files {
				gets += len(c.blobGETs("", m.digestOf(name)))
			}
			if want := map[int]int{4: 4, 2: 4}[layers]; gets != want {
				t.Errorf("%d layers took %d GETs, want %d (Concurrency 4)", layers, gets, want)
			}
		})
	}
}
