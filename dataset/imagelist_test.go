package dataset

import (
	"context"
	"strings"
	"testing"
)

func TestParseImageList(t *testing.T) {
	present := map[string]bool{"a.jpg": true, "b.jpg": true, "dir with space/c.jpg": true}
	exists := func(ref string) bool { return present[ref] }
	tests := []struct {
		name     string
		in       string
		want     Counts
		problems []prob
	}{{
		name: "comments and blank lines",
		in:   "# path label\n\na.jpg cat\n   \n  # indented comment\nb.jpg\tdog\n",
		want: Counts{NumberOfSamples: 2, Classes: m{"cat": 1, "dog": 1}},
	}, {
		name: "CRLF, BOM and a path with spaces",
		in:   "\xEF\xBB\xBFa.jpg 0\r\ndir with space/c.jpg 1\r\n",
		want: Counts{NumberOfSamples: 2, Classes: m{"0": 1, "1": 1}},
	}, {
		name:     "missing file is reported and counted",
		in:       "a.jpg cat\nnope.jpg cat\n",
		want:     Counts{NumberOfSamples: 2, Classes: m{"cat": 2}},
		problems: []prob{{"train.txt", 2, `file "nope.jpg" not found`}},
	}, {
		name:     "line without label",
		in:       "a.jpg cat\n\nb.jpg\n",
		want:     Counts{NumberOfSamples: 1, Classes: m{"cat": 1}},
		problems: []prob{{"train.txt", 3, `"b.jpg" has no label`}},
	}, {
		name:     "too long line",
		in:       "a.jpg " + strings.Repeat("x", maxLine+1) + "\nb.jpg dog",
		want:     Counts{NumberOfSamples: 1, Classes: m{"dog": 1}},
		problems: []prob{{"train.txt", 1, "line longer than"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, ImageList, func(ctx context.Context, acc *accumulator) error {
				return parseImageList(ctx, strings.NewReader(tt.in), "train.txt", "", exists, acc)
			})
			checkCounts(t, "dataset", &s.Counts, tt.want)
			checkProblems(t, s, tt.problems)
		})
	}
}

func TestAnalyzeImageList(t *testing.T) {
	dir := tree(t, map[string]string{
		"images/1.jpg":      "x",
		"images/2.jpg":      "x",
		"lists/3.jpg":       "x",
		"lists/train.txt":   "# relative to the root, or to the list\nimages/1.jpg cat\n3.jpg dog\n",
		"lists/val.txt":     "images/2.jpg cat\nimages/9.jpg dog\n",
		"lists/classes.txt": "cat\ndog\n",
		"lists/synsets.txt": "n01 cat\nn02 dog\n",
		"LICENSE.txt":       "MIT\n",
	})
	s := analyze(t, dir, Options{})
	if s.Format != ImageList {
		t.Fatalf("Format = %q, want imagelist", s.Format)
	}
	checkCounts(t, "dataset", &s.Counts, Counts{NumberOfSamples: 4, Classes: m{"cat": 2, "dog": 2}})
	checkCounts(t, "train", s.Splits["train"], Counts{NumberOfSamples: 2, Classes: m{"cat": 1, "dog": 1}})
	checkCounts(t, "val", s.Splits["val"], Counts{NumberOfSamples: 2, Classes: m{"cat": 1, "dog": 1}})
	checkProblems(t, s, []prob{
		{"lists/synsets.txt", 0, `not a list of "path label" lines: skipped`},
		{"lists/val.txt", 2, `file "images/9.jpg" not found`},
	})
}
