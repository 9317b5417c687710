package artifact_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/registry"
)

type fetcherFunc func()

func (f fetcherFunc) Fetch(context.Context, ocispec.Descriptor) (io.ReadCloser, error) {
	f()
	return io.NopCloser(strings.NewReader("")), nil
}

func TestParseMetrics(t *testing.T) {
	tests := []struct {
		name, in string
		want     map[string]float64
		dataset  string
		err      string
	}{
		{name: "flat", in: `{"accuracy":0.91,"f1":0.88}`, want: map[string]float64{"accuracy": 0.91, "f1": 0.88}},
		{name: "barge form", in: `{"metrics":{"map50":0.5},"dataset":"sha256:abc","time":"2026-01-02T03:04:05Z"}`, want: map[string]float64{"map50": 0.5}, dataset: "sha256:abc"},
		{name: "string value", in: `{"accuracy":"high"}`, err: `metric "accuracy" is "high", not a number`},
		{name: "empty", in: `{}`, err: "no values"},
		{name: "not an object", in: `[1,2]`, err: "not a JSON object"},
		{name: "not JSON", in: `accuracy=1`, err: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := artifact.ParseMetrics([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Metrics) != len(tt.want) || m.Dataset != tt.dataset {
				t.Errorf("got %+v", m)
			}
			for k, v := range tt.want {
				if m.Metrics[k] != v {
					t.Errorf("%s = %v", k, m.Metrics[k])
				}
			}
		})
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add([]byte(`{"accuracy":0.91}`))
	f.Add([]byte(`{"metrics":{"a":1},"time":"x"}`))
	f.Add([]byte(`{"a":1e400}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := artifact.ParseMetrics(b)
		if err == nil && len(m.Metrics) == 0 {
			t.Fatal("accepted metrics with no values")
		}
	})
}

func TestMetricsReferrers(t *testing.T) {
	ctx := context.Background()
	reg := registry.StartForTest(t)
	repo, err := remote.NewRepository(reg.Host() + "/models/resnet")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true

	for _, tt := range []struct {
		name  string
		store interface {
			artifact.Storage
			content.ReadOnlyGraphStorage
		}
	}{
		{"registry without referrers API (tag schema)", repo},
		{"local store", memory.New()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeTree(t, modelTree)
			model, err := artifact.Pack(ctx, tt.store, dir, artifact.PackOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			if _, err := artifact.AttachMetrics(ctx, tt.store, model, artifact.Metrics{Metrics: map[string]float64{"accuracy": 0.8}, Time: t0}); err != nil {
				t.Fatal(err)
			}
			if _, err := artifact.AttachMetrics(ctx, tt.store, model, artifact.Metrics{Metrics: map[string]float64{"accuracy": 0.9, "f1": 0.7}, Dataset: "sha256:abc", Time: t0.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			recs, err := artifact.ListMetrics(ctx, tt.store, model)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 2 || recs[0].Metrics.Metrics["accuracy"] != 0.8 || recs[1].Dataset != "sha256:abc" {
				t.Fatalf("records %+v", recs)
			}
			// Listed alone, then read: what a caching reader does.
			refs, err := artifact.MetricsReferrers(ctx, tt.store, model)
			if err != nil || len(refs) != 2 {
				t.Fatalf("referrers %v, %v; want 2", refs, err)
			}
			if again, err := artifact.ReadMetrics(ctx, tt.store, refs); err != nil || len(again) != 2 || again[1].Dataset != "sha256:abc" {
				t.Fatalf("ReadMetrics: %+v, %v; want the records ListMetrics gave", again, err)
			}
			latest := artifact.Latest(recs)
			if latest["accuracy"] != 0.9 || latest["f1"] != 0.7 {
				t.Errorf("latest %v", latest)
			}
			// Metrics never change the model.
			again, err := artifact.Pack(ctx, tt.store, dir, artifact.PackOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if again.Digest != model.Digest {
				t.Error("attaching metrics changed the model digest")
			}
		})
	}
}
