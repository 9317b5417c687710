package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/registry"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// faulty is a one-file model on a real registry, reached through a proxy
// that can break the GETs of that file.
type faulty struct {
	reg     *registry.Registry
	p       *proxy
	m       model
	weights []byte
	ref     string // through the proxy
}

const weightsSize = 256 << 10

func newFaulty(t *testing.T) *faulty {
	t.Helper()
	reg := startRegistry(t)
	weights := randomBytes(weightsSize, 7)
	m := pushModel(t, reg.Host(), "models/m", "v1", map[string][]byte{"weights.bin": weights})
	p := newProxy(t, reg)
	return &faulty{reg: reg, p: p, m: m, weights: weights, ref: p.Host() + "/models/m:v1"}
}

// pull pulls through the proxy with a counting client and quick retries.
func (f *faulty) pull(t *testing.T, st *store.Store, opts fetch.Options) (fetch.Result, []exchange, error) {
	t.Helper()
	c := newCounter(t)
	opts.PlainHTTP, opts.Client = true, c.client()
	if opts.Backoff == nil {
		opts.Backoff = fastRetry
	}
	_, _, res, err := fetch.Pull(context.Background(), st, f.ref, opts)
	return res, c.blobGETs("", f.m.digestOf("weights.bin")), err
}

// partial leaves the first n bytes of the weights in st's ingest.
func (f *faulty) partial(t *testing.T, st *store.Store, n int) {
	t.Helper()
	w, err := st.Writer(context.Background(), fileDesc(f.weights))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(f.weights[:n]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func rangeFrom(off int64) string {
	if off == 0 {
		return ""
	}
	return fmt.Sprintf("bytes=%d-", off)
}

// TestCutBody drops the connection after k bytes of the first GET: the
// pull resumes at k inside the same call, so the blob crosses the link once.
func TestCutBody(t *testing.T) {
	for _, k := range []int64{0, 1, weightsSize / 2, weightsSize - 1} {
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			f := newFaulty(t)
			f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n > 1 {
					return false
				}
				f.p.cutAfter(w, r, k)
				return true
			})
			st := newStore(t)
			var ev events
			res, gets, err := f.pull(t, st, fetch.Options{Progress: ev.record})
			if err != nil {
				t.Fatal(err)
			}
			assertStored(t, st, f.m)
			if len(gets) != 2 || gets[1].Range != rangeFrom(k) {
				t.Fatalf("GETs %+v, want a second one with Range %q", gets, rangeFrom(k))
			}
			if got := bodyBytes(gets); got > weightsSize+1<<10 {
				t.Errorf("received %d bytes for a %d-byte blob cut at %d", got, weightsSize, k)
			}
			if r := ev.of(f.m.digestOf("weights.bin"), fetch.Retrying); res.Retries != 1 || len(r) != 1 || r[0].Offset != k {
				t.Errorf("Retries = %d, Retrying events %+v; want one retry from offset %d", res.Retries, r, k)
			}
		})
	}
}

// TestStalledBody sends half the blob and then nothing: after StallTimeout
// the pull gives up on that connection and resumes at the half.
func TestStalledBody(t *testing.T) {
	f := newFaulty(t)
	f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n > 1 {
			return false
		}
		resp := f.p.upstream(r)
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.CopyN(w, resp.Body, weightsSize/2)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // hang until the client gives up
		return true
	})
	st := newStore(t)
	start := time.Now()
	_, gets, err := f.pull(t, st, fetch.Options{StallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, f.m)
	if len(gets) != 2 || gets[1].Range != rangeFrom(weightsSize/2) {
		t.Fatalf("GETs %+v, want a second one resuming at %d", gets, weightsSize/2)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("pull took %v with a 300ms stall timeout", d)
	}
}

// TestRangeIgnored: a server (or proxy) that drops Range sends the whole
// blob with 200. The pull reads past the part it holds and completes.
func TestRangeIgnored(t *testing.T) {
	f := newFaulty(t)
	f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
		r.Header.Del("Range")
		return false
	})
	st := newStore(t)
	f.partial(t, st, weightsSize/2)
	res, gets, err := f.pull(t, st, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, f.m)
	if len(gets) != 1 || gets[0].Range != rangeFrom(weightsSize/2) || gets[0].Status != http.StatusOK || gets[0].Body != weightsSize {
		t.Errorf("GETs %+v, want one Range request answered with the whole blob", gets)
	}
	if res.Resumed != 1 || res.Retries != 0 {
		t.Errorf("result %+v, want Resumed 1 and no retry", res)
	}
}

// TestWrongContentRange: a 206 that starts elsewhere than asked cannot be
// appended; the pull restarts the blob from 0 and completes.
func TestWrongContentRange(t *testing.T) {
	f := newFaulty(t)
	f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n == 1 {
			r.Header.Set("Range", fmt.Sprintf("bytes=%d-", weightsSize/2-100))
		}
		return false
	})
	st := newStore(t)
	f.partial(t, st, weightsSize/2)
	_, gets, err := f.pull(t, st, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, f.m)
	if len(gets) != 2 || gets[0].Status != http.StatusPartialContent || gets[1].Range != "" || gets[1].Status != http.StatusOK {
		t.Errorf("GETs %+v, want a 206 at the wrong offset, then a GET of the whole blob", gets)
	}
}

// TestDigestMismatch: a proxy that flips one byte of every response. The
// pull fetches once more from 0, then fails naming the blob and both
// digests, and leaves nothing behind.
func TestDigestMismatch(t *testing.T) {
	f := newFaulty(t)
	d := f.m.digestOf("weights.bin")
	f.p.fault(d, func(n int, w http.ResponseWriter, r *http.Request) bool {
		relay(w, f.p.upstream(r), func(b []byte) []byte { b[len(b)/2] ^= 0x20; return b })
		return true
	})
	st := newStore(t)
	_, gets, err := f.pull(t, st, fetch.Options{})
	if !errors.Is(err, content.ErrMismatchedDigest) {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
	for _, want := range []string{f.ref, "layer weights.bin", d.String(), "got sha256:", "twice", "nothing was stored"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if len(gets) != 2 || gets[1].Range != "" {
		t.Errorf("GETs %+v, want the first and one refetch from 0", gets)
	}
	if _, err := os.Stat(st.BlobPath(d)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("blobs/ has the corrupt blob: %v", err)
	}
	if _, err := st.Status(context.Background(), d); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("the corrupt ingest was kept: %v", err)
	}
}

// TestRetryAfter: a 429 with Retry-After: 1 makes the pull wait about a
// second, although its backoff is a millisecond.
func TestRetryAfter(t *testing.T) {
	f := newFaulty(t)
	f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n > 1 {
			return false
		}
		w.Header().Set("Retry-After", "1")
		registryError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "slow down")
		return true
	})
	st := newStore(t)
	_, gets, err := f.pull(t, st, fetch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, f.m)
	if len(gets) != 2 {
		t.Fatalf("GETs %+v, want two", gets)
	}
	if wait := gets[1].At.Sub(gets[0].At); wait < 900*time.Millisecond || wait > 3*time.Second {
		t.Errorf("waited %v after Retry-After: 1", wait)
	}
}

// TestServerErrors: 5xx are retried up to MaxAttempts.
func TestServerErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failures int // the first n GETs fail
		status   int
		wantGETs int
		wantErr  []string
	}{
		{"500 twice then success", 2, http.StatusInternalServerError, 3, nil},
		{"503 without Retry-After", 1, http.StatusServiceUnavailable, 2, nil},
		{"502 for good", 100, http.StatusBadGateway, 4, []string{"HTTP 502", "gave up after 4 attempts", "the partial (0 of"}},
		{"500 for good", 100, http.StatusInternalServerError, 4, []string{"HTTP 500", "gave up after 4 attempts", "INTERNAL: disk on fire"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaulty(t)
			d := f.m.digestOf("weights.bin")
			f.p.fault(d, func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n > tc.failures {
					return false
				}
				registryError(w, tc.status, "INTERNAL", "disk on fire")
				return true
			})
			st := newStore(t)
			res, gets, err := f.pull(t, st, fetch.Options{MaxAttempts: 4})
			if len(gets) != tc.wantGETs {
				t.Errorf("%d GETs, want %d", len(gets), tc.wantGETs)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				assertStored(t, st, f.m)
				if res.Retries != tc.failures {
					t.Errorf("Retries = %d, want %d", res.Retries, tc.failures)
				}
				return
			}
			if err == nil {
				t.Fatal("pull succeeded")
			}
			for _, want := range append(tc.wantErr, f.ref, d.String(), f.p.Host()) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestRefusals: answers that retrying cannot change fail the pull at once,
// with a single request and a message that says what to do.
func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, f *faulty)
		wantIs  error
		wantErr []string
	}{
		{"404: blob deleted from the real registry", func(t *testing.T, f *faulty) {
			if err := repository(t, f.reg.Host(), "models/m").Blobs().Delete(context.Background(), fileDesc(f.weights)); err != nil {
				t.Fatal(err)
			}
		}, errdef.ErrNotFound, []string{"HTTP 404", "BLOB_UNKNOWN", "push the artifact again"}},
		{"403", func(t *testing.T, f *faulty) {
			f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
				registryError(w, http.StatusForbidden, "DENIED", "requested access to the resource is denied")
				return true
			})
		}, nil, []string{"HTTP 403", "DENIED", "may not pull"}},
		{"401 with no credentials configured", func(t *testing.T, f *faulty) {
			f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("WWW-Authenticate", `Basic realm="barge"`)
				registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
				return true
			})
		}, nil, []string{"none are configured", "credentials"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaulty(t)
			tc.setup(t, f)
			_, gets, err := f.pull(t, newStore(t), fetch.Options{})
			if err == nil {
				t.Fatal("pull succeeded")
			}
			if len(gets) != 1 {
				t.Errorf("%d GETs of the blob, want 1: %+v", len(gets), gets)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.wantIs)
			}
			for _, want := range append(tc.wantErr, f.m.digestOf("weights.bin").String(), f.p.Host()+"/models/m", "layer weights.bin") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}
