package dataset

import (
	"context"
	"strings"
	"testing"
)

func TestParseJSONL(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     Counts
		problems []prob
	}{{
		name: "blank lines, CRLF, BOM, no trailing newline",
		in:   "\xEF\xBB\xBF{\"text\": \"a\", \"label\": \"pos\"}\r\n\r\n   \n{\"text\": \"b\", \"label\": \"neg\"}",
		want: Counts{NumberOfSamples: 2, Classes: m{"pos": 1, "neg": 1}},
	}, {
		name: "invalid lines are problems with their line",
		in:   "{\"label\": \"pos\"}\n{\"label\": \"pos\"\n\n{bad}\n{\"label\": \"neg\"} {}\n{\"label\": \"neg\"}\n",
		want: Counts{NumberOfSamples: 2, Classes: m{"pos": 1, "neg": 1}},
		problems: []prob{
			{"d.jsonl", 2, "invalid JSON"},
			{"d.jsonl", 4, "invalid JSON"},
			{"d.jsonl", 5, "invalid JSON"},
		},
	}, {
		name: "class field, numbers, lists, and samples without label",
		in:   "{\"class\": 3}\n{\"label\": [\"a\", \"b\"]}\n{\"label\": null}\n{\"text\": \"x\"}\n{\"label\": true}\n[1, 2]\n\"just a string\"\n",
		want: Counts{NumberOfSamples: 7, Unlabeled: 4, Classes: m{"3": 1, "a": 1, "b": 1, "true": 1}},
	}, {
		name: "no labels at all: no unlabeled count",
		in:   "{\"text\": \"x\"}\n{\"text\": \"y\"}\n",
		want: Counts{NumberOfSamples: 2},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, JSONL, func(ctx context.Context, acc *accumulator) error {
				return parseJSONL(ctx, strings.NewReader(tt.in), "d.jsonl", "", acc)
			})
			checkCounts(t, "dataset", &s.Counts, tt.want)
			checkProblems(t, s, tt.problems)
		})
	}
}

func TestAnalyzeJSONLSplits(t *testing.T) {
	dir := tree(t, map[string]string{
		"data/train.jsonl":      "{\"label\": \"a\"}\n{\"label\": \"b\"}\n",
		"data/validation.jsonl": "{\"label\": \"a\"}\n",
		"README.md":             "card",
	})
	s := analyze(t, dir, Options{})
	if s.Format != JSONL {
		t.Fatalf("Format = %q, want jsonl", s.Format)
	}
	checkCounts(t, "dataset", &s.Counts, Counts{NumberOfSamples: 3, Classes: m{"a": 2, "b": 1}})
	checkCounts(t, "train", s.Splits["train"], Counts{NumberOfSamples: 2, Classes: m{"a": 1, "b": 1}})
	checkCounts(t, "val", s.Splits["val"], Counts{NumberOfSamples: 1, Classes: m{"a": 1}})
}
