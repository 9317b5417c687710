package dataset

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestParseCSV(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		labelColumn string
		want        Counts
		columns     []string
		label       string
		problems    []prob
	}{{
		name:    "quoted comma",
		in:      "id,text,label\n1,\"a, b\",cat\n2,x,dog\n",
		want:    Counts{NumberOfSamples: 2, Classes: m{"cat": 1, "dog": 1}},
		columns: []string{"id", "text", "label"}, label: "label",
	}, {
		name:     "quoted newline keeps line numbers right",
		in:       "id,text,label\n1,\"one\ntwo\",cat\n2,\"x\",cat\n3,short\n",
		want:     Counts{NumberOfSamples: 2, Classes: m{"cat": 2}},
		problems: []prob{{"d.csv", 5, "record has 2 fields, the header has 3"}},
	}, {
		name: "CRLF",
		in:   "a,label\r\n1,x\r\n2,\"y\"\r\n",
		want: Counts{NumberOfSamples: 2, Classes: m{"x": 1, "y": 1}},
	}, {
		name:    "BOM before the header",
		in:      "\xEF\xBB\xBFlabel,b\nx,1\n",
		want:    Counts{NumberOfSamples: 1, Classes: m{"x": 1}},
		columns: []string{"label", "b"}, label: "label",
	}, {
		name: "blank and space-only lines are not samples",
		in:   "a,label\n\n1,x\n\n\n2,x\n   \n",
		want: Counts{NumberOfSamples: 2, Classes: m{"x": 2}},
	}, {
		name:    "header only",
		in:      "a,b\n",
		want:    Counts{},
		columns: []string{"a", "b"},
	}, {
		name:     "empty file",
		in:       "",
		problems: []prob{{"d.csv", 0, "no header"}},
	}, {
		name: "too few and too many fields",
		in:   "a,b,label\n1,2,x\n3,4\n5,6,y,7\n8,9,x\n",
		want: Counts{NumberOfSamples: 2, Classes: m{"x": 2}},
		problems: []prob{
			{"d.csv", 3, "record has 2 fields, the header has 3"},
			{"d.csv", 4, "record has 4 fields, the header has 3"},
		},
	}, {
		name:     "bare quote",
		in:       "a,label\n1,x\"y\n2,z\n",
		want:     Counts{NumberOfSamples: 1, Classes: m{"z": 1}},
		problems: []prob{{"d.csv", 2, "bare \""}},
	}, {
		name:     "unterminated quote",
		in:       "a,label\n1,\"x\n2,y\n",
		label:    "label",
		problems: []prob{{"d.csv", 3, "extraneous or missing \" in quoted-field"}},
	}, {
		name:  "Class column in any case",
		in:    "id,Class\n1,a\n2,a\n",
		want:  Counts{NumberOfSamples: 2, Classes: m{"a": 2}},
		label: "Class",
	}, {
		name: "no label column, no classes",
		in:   "a,b\n1,2\n3,4\n",
		want: Counts{NumberOfSamples: 2},
	}, {
		name:        "label column chosen",
		in:          "label,species\n1,cat\n2,dog\n",
		labelColumn: "species",
		want:        Counts{NumberOfSamples: 2, Classes: m{"cat": 1, "dog": 1}},
		label:       "species",
	}, {
		name:        "label column missing",
		in:          "a,b\n1,2\n",
		labelColumn: "species",
		want:        Counts{NumberOfSamples: 1},
		problems:    []prob{{"d.csv", 1, `no label column "species"`}},
	}, {
		name: "empty label is unlabeled",
		in:   "a,label\n1,x\n2,\n3, \n",
		want: Counts{NumberOfSamples: 3, Unlabeled: 2, Classes: m{"x": 1}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, CSV, func(ctx context.Context, acc *accumulator) error {
				return parseCSV(ctx, strings.NewReader(tt.in), "d.csv", "", tt.labelColumn, acc)
			})
			checkCounts(t, "dataset", &s.Counts, tt.want)
			checkProblems(t, s, tt.problems)
			if tt.columns != nil && !slices.Equal(s.Columns, tt.columns) {
				t.Errorf("Columns = %q, want %q", s.Columns, tt.columns)
			}
			if (tt.label != "" || tt.want.Classes == nil) && s.LabelColumn != tt.label {
				t.Errorf("LabelColumn = %q, want %q", s.LabelColumn, tt.label)
			}
		})
	}
}

func TestAnalyzeCSVSplits(t *testing.T) {
	dir := tree(t, map[string]string{
		"train.csv":       "text,label\na,pos\nb,neg\nc,pos\n",
		"val.csv":         "text,label\nd,neg\n",
		"test/part-0.csv": "text,label\ne,pos\n",
		"extra.csv":       "text,kind\nf,x\n",
		"README.md":       "# about\n",
		".hidden.csv":     "text,label\ng,pos\n",
	})
	s := analyze(t, dir, Options{})
	if s.Format != CSV {
		t.Errorf("Format = %q, want csv", s.Format)
	}
	checkCounts(t, "dataset", &s.Counts, Counts{NumberOfSamples: 6, Unlabeled: 1, Classes: m{"pos": 3, "neg": 2}})
	checkCounts(t, "train", s.Splits["train"], Counts{NumberOfSamples: 3, Classes: m{"pos": 2, "neg": 1}})
	checkCounts(t, "val", s.Splits["val"], Counts{NumberOfSamples: 1, Classes: m{"neg": 1}})
	checkCounts(t, "test", s.Splits["test"], Counts{NumberOfSamples: 1, Classes: m{"pos": 1}})
	if s.Files != 4 {
		t.Errorf("Files = %d, want 4 (README and hidden files are not data)", s.Files)
	}
	checkProblems(t, s, []prob{{"extra.csv", 1, `its header ["text" "kind"], not the ["text" "label"] of 3 other files`}})
	if !slices.Equal(s.Columns, []string{"text", "label"}) || s.LabelColumn != "label" {
		t.Errorf("Columns, LabelColumn = %q, %q; want the header most files have", s.Columns, s.LabelColumn)
	}
}

func TestParseCSVUnbalancedQuoteDoesNotHoldTheFile(t *testing.T) {
	in := "a,label\n1,x\n2,\"" + strings.Repeat("more text\n", 1<<20) // 10 MiB inside one quote
	s := run(t, CSV, func(ctx context.Context, acc *accumulator) error {
		return parseCSV(ctx, strings.NewReader(in), "d.csv", "", "", acc)
	})
	checkCounts(t, "dataset", &s.Counts, Counts{NumberOfSamples: 1, Classes: m{"x": 1}})
	checkProblems(t, s, []prob{{"d.csv", 3, "record longer than 8 MiB (an unbalanced quote?)"}})
}
