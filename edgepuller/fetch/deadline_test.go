package fetch_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/registry"
)

// TestSilentRegistry: a registry, mirror or token server that accepts the
// connection and never answers fails the request after RequestTimeout,
// with the default client and its retries, and the error says so; a
// silent mirror does not stop the origin from serving the pull.
func TestSilentRegistry(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const digestRef = "@sha256:4c7b5a7b8a4f2d1c0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d"
	silent := registry.SilentForTest(t).Host()
	// A registry whose token server is the silent one.
	tokenless := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="registry",scope="repository:models/m:pull"`, silent))
		registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
	}))
	t.Cleanup(tokenless.Close)
	for _, tc := range []struct{ name, ref string }{
		{"tag lookup", silent + "/models/m:v1"},
		{"digest lookup", silent + "/models/m" + digestRef},
		{"token request", tokenless.Listener.Addr().String() + "/models/m:v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, _, _, err := fetch.Pull(context.Background(), newStore(t), tc.ref, fetch.Options{PlainHTTP: true, RequestTimeout: timeout})
			took := time.Since(start)
			if err == nil {
				t.Fatal("pull from a silent registry succeeded")
			}
			if !strings.Contains(err.Error(), "no answer within the request timeout of 300ms") {
				t.Errorf("error does not say that the registry did not answer in time: %v", err)
			}
			if took > timeout+2*time.Second {
				t.Errorf("pull failed after %v with a request timeout of %v", took, timeout)
			}
		})
	}

	t.Run("silent mirror", func(t *testing.T) {
		reg := startRegistry(t)
		m := pushModel(t, reg.Host(), "models/m", "v1", fourFiles(9))
		st := newStore(t)
		ref := reg.Host() + "/models/m@" + m.manifest.Digest.String()
		start := time.Now()
		_, _, _, err := fetch.Pull(context.Background(), st, ref, fetch.Options{
			PlainHTTP: true, RequestTimeout: timeout, StallTimeout: timeout, Backoff: fastRetry, Mirrors: []string{"http://" + silent},
		})
		if err != nil {
			t.Fatalf("pull with a silent mirror: %v", err)
		}
		assertStored(t, st, m)
		// The mirror costs one request timeout, then is skipped.
		if took := time.Since(start); took > timeout+2*time.Second {
			t.Errorf("pull took %v past a silent mirror with a %v request timeout", took, timeout)
		}
	})
}

// TestPullTimeout: a registry that trickles a blob, a byte now and then,
// never stalls, but the pull as a whole ends at Timeout, with an error that
// says so, and keeps what arrived for the next pull.
func TestPullTimeout(t *testing.T) {
	f := newFaulty(t)
	f.p.fault(f.m.digestOf("weights.bin"), func(n int, w http.ResponseWriter, r *http.Request) bool {
		resp := f.p.upstream(r)
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		for {
			if _, err := io.CopyN(w, resp.Body, 1024); err != nil {
				return true
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return true
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	st := newStore(t)
	start := time.Now()
	_, _, err := f.pull(t, st, fetch.Options{Timeout: 700 * time.Millisecond})
	took := time.Since(start)
	if err == nil {
		t.Fatal("a trickled pull finished within the pull timeout")
	}
	if !strings.Contains(err.Error(), "did not finish within the pull timeout of 700ms") {
		t.Errorf("error does not name the pull timeout: %v", err)
	}
	if took > 3*time.Second {
		t.Errorf("pull ended after %v with a 700ms pull timeout", took)
	}
	if s, err := st.Status(context.Background(), f.m.digestOf("weights.bin")); err != nil || s.Offset == 0 && s.Total == 0 {
		t.Errorf("the partial download was not kept: %+v, %v", s, err)
	}
}
