package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/registry"
)

// TestSilentRegistryHoldsNoWorker: models on a registry that accepts
// connections and never answers report it within the request timeout, and
// while they keep every worker busy in turn, a model on a good registry
// still becomes Ready.
func TestSilentRegistryHoldsNoWorker(t *testing.T) {
	ns := env.Namespace(t)
	silent := registry.SilentForTest(t)
	start := time.Now()
	// As many as the controller has workers, so that without a deadline on
	// each request nothing else would ever be reconciled.
	var hung []*v1alpha1.InferenceModel
	for i := range 4 {
		m := edgeModel(ns, fmt.Sprintf("hung-%d", i), silent.Host()+"/models/m", "1.0.0")
		create(t, m)
		hung = append(hung, m)
	}
	eventually(t, "every worker waits on the silent registry", func() error {
		if n := silent.Accepted(); n < 4 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})

	ref := repoName(t, "good")
	pushModel(t, openRepo(t, ref), "1.0.0", map[string]string{"m.onnx": "w"}, artifact.Metadata{})
	good := edgeModel(ns, "good", ref, "1.0.0")
	good.Spec.NodeSelector = map[string]string{"barge-test": ns, "none": "matches"}
	create(t, good)

	bound := testRequestTimeout + 15*time.Second
	for _, m := range hung {
		waitCondition(t, m, bound, func() error {
			return conditionIs(m.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonRegistryTimeout, "registry "+silent.Host()+" did not answer in time")
		})
	}
	if took := time.Since(start); took > bound+10*time.Second {
		t.Errorf("the silent registry was reported after %s; want within %s of the request timeout", took, bound)
	}
	waitCondition(t, good, bound, func() error {
		return conditionIs(good.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionTrue, ReasonSucceeded, "")
	})
}

// waitCondition polls obj until check passes, within bound.
func waitCondition(t *testing.T, obj *v1alpha1.InferenceModel, bound time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		get(t, obj)
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", obj.Name, bound, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// endlessPages is a registry that answers every tag list and referrers
// request with a page and a Link to the next, forever (the referrers pages
// empty, which oras-go does not hand to its caller): a fault no real
// registry produces.
func endlessPages(t *testing.T, subject digest.Digest) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var pages atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := pages.Add(1)
		switch {
		case strings.HasSuffix(r.URL.Path, "/tags/list"):
			w.Header().Set("Link", fmt.Sprintf(`<%s?n=1&last=t%d>; rel="next"`, r.URL.Path, n))
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"name": "m", "tags": []string{fmt.Sprintf("junk-%d", n)}})
		case strings.Contains(r.URL.Path, "/referrers/"+subject.String()):
			w.Header().Set("Link", fmt.Sprintf(`<%s?n=1&page=%d>; rel="next"`, r.URL.Path, n))
			w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
			json.NewEncoder(w).Encode(ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}})
		default:
			pages.Add(-1)
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &pages
}

// TestEndlessPages: a registry whose tag or referrers list never ends stops
// being read at the page limit, with a message that says what to do.
func TestEndlessPages(t *testing.T) {
	subject := digest.FromString("subject")
	srv, pages := endlessPages(t, subject)
	host := strings.TrimPrefix(srv.URL, "http://")
	src := source{Namespace: "default", Repository: host + "/models/m", Version: ">=1.0", Insecure: true}
	r := &Resolver{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	repo, err := r.open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.resolve(ctx, repo, src)
	var f *failure
	if !errors.As(err, &f) || !f.stalled || !strings.Contains(f.message, fmt.Sprintf("goes on past %d pages", maxTagPages)) || !strings.Contains(f.message, "name a tag or a digest") {
		t.Fatalf("endless tag list: %#v", err)
	}
	if n := pages.Swap(0); n != maxTagPages {
		t.Errorf("read %d pages of tags; want the limit, %d", n, maxTagPages)
	}

	_, err = r.metrics(ctx, repo, src, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subject, Size: 10})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("past %d pages", maxReferrerPages)) {
		t.Fatalf("endless referrers: %v", err)
	}
	if n := pages.Load(); n != maxReferrerPages {
		t.Errorf("read %d pages of referrers; want the limit, %d", n, maxReferrerPages)
	}
}
