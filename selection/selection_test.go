package selection_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/bargeml/barge/selection"
)

var candidates = []selection.Candidate{
	{Version: "1.0.0", Metrics: map[string]float64{"accuracy": 0.88, "latency_ms": 9}},
	{Version: "1.1.0", Metrics: map[string]float64{"accuracy": 0.931, "latency_ms": 18}, Metadata: map[string]string{"task": "object-detection"}},
	{Version: "1.2.0", Metrics: map[string]float64{"accuracy": 0.925, "latency_ms": 12}},
	{Version: "2.0.0-rc.1", Metrics: map[string]float64{"accuracy": 0.95, "latency_ms": 40}},
	{Version: "1.3.0"}, // no metrics yet
}

func versions(cs []selection.Candidate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Version)
	}
	return out
}

func TestChoose(t *testing.T) {
	for _, tt := range []struct {
		name           string
		require, order []string
		ranked         []string
		refused        []string
	}{
		{name: "nothing asked: newest semver first", ranked: []string{"2.0.0-rc.1", "1.3.0", "1.2.0", "1.1.0", "1.0.0"}},
		{name: "a gate; a version without the metric fails it",
			require: []string{"metrics.accuracy >= 0.9"},
			ranked:  []string{"2.0.0-rc.1", "1.2.0", "1.1.0"}, refused: []string{"1.0.0", "1.3.0"}},
		{name: "two gates, best accuracy first",
			require: []string{"metrics.accuracy >= 0.9", "metrics.latency_ms <= 20"}, order: []string{"metrics.accuracy"},
			ranked: []string{"1.1.0", "1.2.0"}, refused: []string{"1.0.0", "2.0.0-rc.1", "1.3.0"}},
		{name: "ascending order key",
			require: []string{"has(metrics.latency_ms)"}, order: []string{"metrics.latency_ms asc"},
			ranked: []string{"1.0.0", "1.2.0", "1.1.0", "2.0.0-rc.1"}, refused: []string{"1.3.0"}},
		{name: "a missing order value ranks last, then semver",
			order:  []string{"metrics.accuracy desc"},
			ranked: []string{"2.0.0-rc.1", "1.1.0", "1.2.0", "1.0.0", "1.3.0"}},
		{name: "metadata and version",
			require: []string{`metadata.task == "object-detection" || version.startsWith("1.0")`},
			ranked:  []string{"1.1.0", "1.0.0"}, refused: []string{"1.2.0", "2.0.0-rc.1", "1.3.0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := selection.Compile(tt.require, tt.order)
			if err != nil {
				t.Fatal(err)
			}
			ch := p.Choose(candidates)
			if got := versions(ch.Ranked); !slices.Equal(got, tt.ranked) {
				t.Errorf("ranked %v, want %v", got, tt.ranked)
			}
			var refused []string
			for _, r := range ch.Refused {
				refused = append(refused, r.Candidate.Version)
				if r.Require == "" || r.String() == "" {
					t.Errorf("refusal of %s names no expression", r.Candidate.Version)
				}
			}
			if !slices.Equal(refused, tt.refused) {
				t.Errorf("refused %v, want %v", refused, tt.refused)
			}
			best, ok := ch.Best()
			if ok != (len(tt.ranked) > 0) || (ok && best.Version != tt.ranked[0]) {
				t.Errorf("best %v (%v), want %v", best.Version, ok, tt.ranked)
			}
		})
	}
}

// A wrong expression is refused when compiled, naming it and what is wrong.
func TestCompileRefuses(t *testing.T) {
	for _, tt := range []struct {
		require, order []string
		want           string
	}{
		{require: []string{"metrics.accuracy >="}, want: `require "metrics.accuracy >="`},
		{require: []string{"metrics.accuracy"}, want: "want bool"},
		{require: []string{"metric.accuracy > 1"}, want: "undeclared reference"},
		{order: []string{"metadata.task"}, want: "want double or int"},
		{require: []string{strings.Repeat("1 + ", 400) + "1 > 0"}, want: "at most 1024"},
	} {
		_, err := selection.Compile(tt.require, tt.order)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Compile(%q, %q): %v, want an error saying %q", tt.require, tt.order, err, tt.want)
		}
	}
}

// Expressions come from users (InferenceModel specs, barge flags): any text
// is compiled or refused, and a compiled policy evaluates without panicking.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{"metrics.accuracy >= 0.9", "metrics.latency_ms asc", `metadata.task == "x"`, "version.startsWith('1.')", "1/0 > 0", "[1,2].all(x, x > 0)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		if p, err := selection.Compile([]string{expr}, nil); err == nil {
			p.Choose(candidates)
		}
		if p, err := selection.Compile(nil, []string{expr}); err == nil {
			p.Choose(candidates)
		}
	})
}

// An expression that would run long is stopped by CEL's cost limit: the
// candidate is refused with the reason, and nothing hangs.
func TestCostLimit(t *testing.T) {
	ten := "[0,1,2,3,4,5,6,7,8,9]"
	expr := ten + ".all(a, " + ten + ".all(b, " + ten + ".all(c, " + ten + ".all(d, " + ten + ".all(e, " + ten + ".all(f, a+b+c+d+e+f >= 0))))))"
	p, err := selection.Compile([]string{expr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := p.Choose(candidates[:1])
	if len(ch.Refused) != 1 || ch.Refused[0].Err == nil || !strings.Contains(ch.Refused[0].Err.Error(), "cost") {
		t.Errorf("a 10^6-step expression: %+v; want the candidate refused for exceeding the cost limit", ch.Refused)
	}
}

// Summary is the one line status.resolved.reason and barge versions show.
func TestSummary(t *testing.T) {
	for _, tt := range []struct {
		name           string
		require, order []string
		candidates     []selection.Candidate
		want           string
	}{
		{name: "best by a metric, refusals by expression",
			require: []string{"metrics.accuracy >= 0.9", "metrics.latency_ms <= 20"}, order: []string{"metrics.accuracy"},
			want: "accuracy 0.931, best of 5; 2 fail metrics.accuracy >= 0.9 (1 of them: no such key: accuracy); 1 fails metrics.latency_ms <= 20"},
		{name: "two keys, one ascending",
			require: []string{"has(metrics.latency_ms)"}, order: []string{"metrics.latency_ms asc", "metrics.accuracy * 100.0"},
			want: "latency_ms 9, metrics.accuracy * 100.0 88, best of 5; 1 fails has(metrics.latency_ms)"},
		{name: "no order: the newest", require: []string{"metrics.accuracy >= 0.9"},
			want: "newest of 5; 2 fail metrics.accuracy >= 0.9 (1 of them: no such key: accuracy)"},
		{name: "a gate passes", require: []string{"metrics.accuracy >= 0.9", "metrics.latency_ms <= 20"}, candidates: candidates[1:2],
			want: "passes metrics.accuracy >= 0.9 and metrics.latency_ms <= 20"},
		{name: "a gate fails", require: []string{"metrics.accuracy >= 0.9"}, candidates: candidates[:1],
			want: "none of 1 passes: 1 fails metrics.accuracy >= 0.9"},
		{name: "none passes", require: []string{"metrics.accuracy >= 0.99"}, order: []string{"metrics.accuracy"},
			want: "none of 5 passes: 5 fail metrics.accuracy >= 0.99 (1 of them: no such key: accuracy)"},
		{name: "the winner lacks the order metric", order: []string{"metrics.f1"}, candidates: candidates[:2],
			want: "no f1, best of 2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := selection.Compile(tt.require, tt.order)
			if err != nil {
				t.Fatal(err)
			}
			cs := tt.candidates
			if cs == nil {
				cs = candidates
			}
			if got := p.Summary(p.Choose(cs)); got != tt.want {
				t.Errorf("Summary:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
