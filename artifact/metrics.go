package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// Metrics is an evaluation of a model: metric name → number, the dataset it
// was measured on, and when. It is stored as a referrer of the model, so
// adding one never changes the model's digest.
type Metrics struct {
	Metrics map[string]float64 `json:"metrics"`
	// Dataset is the digest (or reference) of the dataset measured on.
	Dataset string    `json:"dataset,omitempty"`
	Time    time.Time `json:"time,omitzero"`
}

// MaxMetricsBytes bounds a metrics document.
const MaxMetricsBytes = 1 << 20

// ParseMetrics reads a metrics document. It takes Barge's form
// {"metrics": {"accuracy": 0.91}, "dataset": "sha256:…", "time": "…"} or a
// flat object of numbers {"accuracy": 0.91, "f1": 0.88}.
func ParseMetrics(b []byte) (Metrics, error) {
	if len(b) > MaxMetricsBytes {
		return Metrics{}, errorf("metrics are %d bytes, more than the %d KiB limit", len(b), MaxMetricsBytes>>10)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return Metrics{}, errorf("metrics are not a JSON object: %v", err)
	}
	var m Metrics
	if _, ok := raw["metrics"]; ok {
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(&m); err != nil {
			return Metrics{}, errorf("metrics: %v", err)
		}
	} else {
		m.Metrics = make(map[string]float64, len(raw))
		for k, v := range raw {
			var f float64
			if err := json.Unmarshal(v, &f); err != nil {
				return Metrics{}, errorf("metric %q is %s, not a number: write metrics as {\"name\": number}", k, truncate(string(v), 40))
			}
			m.Metrics[k] = f
		}
	}
	if len(m.Metrics) == 0 {
		return Metrics{}, errorf("metrics have no values: write them as {\"accuracy\": 0.91}")
	}
	for k, v := range m.Metrics {
		if k == "" {
			return Metrics{}, errorf("a metric has an empty name")
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Metrics{}, errorf("metric %q is not a finite number", k)
		}
	}
	return m, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// MetricsRecord is one metrics referrer read back.
type MetricsRecord struct {
	Digest digest.Digest `json:"digest"`
	Metrics
}

// AttachMetrics stores m as a referrer of subject in dst and returns the
// referrer's manifest descriptor. On a registry without the referrers API,
// oras-go's repository keeps the referrers tag (sha256-<hex>) up to date.
func AttachMetrics(ctx context.Context, dst Storage, subject ocispec.Descriptor, m Metrics) (ocispec.Descriptor, error) {
	if len(m.Metrics) == 0 {
		return ocispec.Descriptor{}, errorf("attach metrics to %s: no values", subject.Digest)
	}
	if m.Time.IsZero() {
		m.Time = time.Now().UTC().Truncate(time.Second)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer := content.NewDescriptorFromBytes(ArtifactTypeMetrics, b)
	layer.Annotations = map[string]string{AnnotationTitle: "metrics.json"}
	if err := pushBytes(ctx, dst, layer, b); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("attach metrics to %s: %w", subject.Digest, err)
	}
	empty := ocispec.DescriptorEmptyJSON
	if err := pushBytes(ctx, dst, empty, empty.Data); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("attach metrics to %s: %w", subject.Digest, err)
	}
	empty.Data = nil
	subj := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	return PushManifest(ctx, dst, ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactTypeMetrics,
		Config:       empty,
		Layers:       []ocispec.Descriptor{layer},
		Subject:      &subj,
		Annotations:  map[string]string{ocispec.AnnotationCreated: m.Time.Format(time.RFC3339)},
	})
}

// ListMetrics reads every metrics referrer of subject, oldest first. It uses
// the registry's referrers API, or the referrers tag where there is none.
func ListMetrics(ctx context.Context, src content.ReadOnlyGraphStorage, subject ocispec.Descriptor) ([]MetricsRecord, error) {
	refs, err := MetricsReferrers(ctx, src, subject)
	if err != nil {
		return nil, err
	}
	return ReadMetrics(ctx, src, refs)
}

// MetricsReferrers lists the manifests of subject's metrics referrers
// without reading them. Referrers are content-addressed, so a reader that
// keeps what ReadMetrics returned for a set of them reads again only when
// the set changes (a new `barge metrics attach`).
func MetricsReferrers(ctx context.Context, src content.ReadOnlyGraphStorage, subject ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	refs, err := registry.Referrers(ctx, src, subject, ArtifactTypeMetrics)
	if err != nil {
		return nil, fmt.Errorf("list metrics of %s: %w", subject.Digest, err)
	}
	return refs, nil
}

// ReadMetrics reads the metrics referrers refs (as MetricsReferrers lists
// them), oldest first.
func ReadMetrics(ctx context.Context, src content.Fetcher, refs []ocispec.Descriptor) ([]MetricsRecord, error) {
	var out []MetricsRecord
	for _, ref := range refs {
		b, err := FetchLimited(ctx, src, ref)
		if err != nil {
			return nil, fmt.Errorf("read metrics %s: %w", ref.Digest, err)
		}
		a, err := Parse(ref, b)
		if err != nil {
			return nil, err
		}
		if len(a.Files) != 1 {
			return nil, errorf("metrics %s has %d layers, want 1", ref.Digest, len(a.Files))
		}
		lb, err := fetchMetricsLayer(ctx, src, a.Files[0].Descriptor())
		if err != nil {
			return nil, fmt.Errorf("read metrics %s: %w", ref.Digest, err)
		}
		m, err := ParseMetrics(lb)
		if err != nil {
			return nil, fmt.Errorf("read metrics %s: %w", ref.Digest, err)
		}
		out = append(out, MetricsRecord{Digest: ref.Digest, Metrics: m})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

func fetchMetricsLayer(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > MaxMetricsBytes {
		return nil, errorf("metrics layer %s is %d bytes, more than the %d KiB limit", desc.Digest, desc.Size, MaxMetricsBytes>>10)
	}
	return content.FetchAll(ctx, src, desc)
}

// Latest merges records, newer values overriding older ones: the metrics a
// model has now.
func Latest(records []MetricsRecord) map[string]float64 {
	if len(records) == 0 {
		return nil
	}
	out := map[string]float64{}
	for _, r := range records {
		for k, v := range r.Metrics.Metrics {
			out[k] = v
		}
	}
	return out
}
