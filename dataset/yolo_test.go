package dataset

import (
	"context"
	"strings"
	"testing"
)

func TestParseYOLONames(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       map[int]string
		err        string
	}{
		{name: "list", yaml: "path: ../datasets/x\ntrain: images/train\nnc: 2\nnames: [person, 'traffic light']\n", want: map[int]string{0: "person", 1: "traffic light"}},
		{name: "block list", yaml: "names:\n  - person\n  - car\n", want: map[int]string{0: "person", 1: "car"}},
		{name: "map", yaml: "names:\n  0: person\n  1: bicycle\n  5: bus\n", want: map[int]string{0: "person", 1: "bicycle", 5: "bus"}},
		{name: "map with quoted keys", yaml: "names: {'0': a, '1': b}\n", want: map[int]string{0: "a", 1: "b"}},
		{name: "numeric names", yaml: "names: [1, 2]\n", want: map[int]string{0: "1", 1: "2"}},
		{name: "no names", yaml: "train: images\n", err: "no names"},
		{name: "names a string", yaml: "names: person\n", err: "names is a string, want a list or a map"},
		{name: "bad key", yaml: "names: {x: a}\n", err: "key x is not a class id"},
		{name: "empty name", yaml: "names: [a, '', c]\n", err: "class id 1 has an empty name"},
		{name: "invalid YAML", yaml: "names: [a, b\n", err: "invalid YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			names, err := parseYOLOYAML(strings.NewReader(tt.yaml), "data.yaml")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want …%s…", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(names.byID) != len(tt.want) {
				t.Fatalf("names = %v, want %v", names.byID, tt.want)
			}
			for id, n := range tt.want {
				if names.byID[id] != n {
					t.Errorf("names = %v, want %v", names.byID, tt.want)
				}
			}
		})
	}
}

func TestParseYOLO(t *testing.T) {
	names := &yoloNames{source: "classes.txt", byID: map[int]string{0: "cat", 1: "dog"}}
	pose := &yoloNames{source: "data.yaml", byID: map[int]string{0: "person"}, fields: 5 + 2*3, kptDims: 3}
	tests := []struct {
		name     string
		in       string
		names    *yoloNames
		want     Counts
		problems []prob
	}{{
		name:  "boxes, a polygon, blank lines and CRLF",
		in:    "0 0.5 0.5 0.2 0.2\r\n\r\n1 0.1 0.1 0.05 0.05\n0 0.1 0.1 0.2 0.1 0.2 0.2\n",
		names: names,
		want:  Counts{NumberOfSamples: 1, NumberOfObjects: 3, Classes: m{"cat": 2, "dog": 1}},
	}, {
		name:  "empty file is a background image",
		in:    "",
		names: names,
		want:  Counts{NumberOfSamples: 1},
	}, {
		name:  "malformed lines",
		in:    "0 0.5 0.5 0.2\n2 0.5 0.5 0.2 0.2\nx 0.5 0.5 0.2 0.2\n0 0.5 abc 0.2 0.2\n0 0.5 0.5 1.2 0.2\n-1 0.5 0.5 0.2 0.2\n0 NaN 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.2 0.1 0.2 0.2 0.3\n",
		names: names,
		want:  Counts{NumberOfSamples: 1, NumberOfObjects: 1, Classes: m{"dog": 1}},
		problems: []prob{
			{"labels/a.txt", 1, "4 fields, want 5"},
			{"labels/a.txt", 2, "class id 2 has no name in classes.txt"},
			{"labels/a.txt", 3, `class id "x" is not a non-negative integer`},
			{"labels/a.txt", 4, `field 3: "abc" is not a number`},
			{"labels/a.txt", 5, "field 4: 1.2 is outside [0, 1]"},
			{"labels/a.txt", 6, `class id "-1"`},
			{"labels/a.txt", 7, `field 2: "NaN" is not a number`},
			{"labels/a.txt", 9, "8 fields"},
		},
	}, {
		name: "no names: classes by id",
		in:   "3 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n",
		want: Counts{NumberOfSamples: 1, NumberOfObjects: 2, Classes: m{"3": 2}},
	}, {
		name:     "pose with visibility flags",
		in:       "0 0.5 0.5 0.2 0.2 0.4 0.4 2 0.6 0.6 0\n0 0.5 0.5 0.2 0.2\n",
		names:    pose,
		want:     Counts{NumberOfSamples: 1, NumberOfObjects: 1, Classes: m{"person": 1}},
		problems: []prob{{"labels/a.txt", 2, "5 fields, want 11"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, YOLO, func(ctx context.Context, acc *accumulator) error {
				return parseYOLO(ctx, strings.NewReader(tt.in), "labels/a.txt", "", tt.names, acc)
			})
			checkCounts(t, "dataset", &s.Counts, tt.want)
			checkProblems(t, s, tt.problems)
		})
	}
}

func TestAnalyzeYOLO(t *testing.T) {
	labels := map[string]string{
		"images/train/1.jpg": "jpg",
		"labels/train/1.txt": "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
		"labels/train/2.txt": "",
		"labels/val/3.txt":   "1 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n",
	}
	with := func(extra map[string]string) map[string]string {
		files := map[string]string{}
		for k, v := range labels {
			files[k] = v
		}
		for k, v := range extra {
			files[k] = v
		}
		return files
	}
	tests := []struct {
		name     string
		files    map[string]string
		classes  m
		problems []prob
	}{{
		name:     "classes.txt",
		files:    with(map[string]string{"classes.txt": "cat\ndog\nbird\n"}),
		classes:  m{"cat": 1, "dog": 2, "bird": 0},
		problems: []prob{{"labels/val/3.txt", 2, "class id 7 has no name in classes.txt"}},
	}, {
		name:     "data.yaml list, preferred to classes.txt",
		files:    with(map[string]string{"data.yaml": "names: [person, car]\n", "classes.txt": "cat\ndog\n"}),
		classes:  m{"person": 1, "car": 2},
		problems: []prob{{"labels/val/3.txt", 2, "class id 7 has no name in data.yaml"}},
	}, {
		name:    "data.yaml map",
		files:   with(map[string]string{"data.yaml": "nc: 8\nnames:\n  0: person\n  1: car\n  7: truck\n"}),
		classes: m{"person": 1, "car": 2, "truck": 1},
	}, {
		name:     "no names",
		files:    with(nil),
		classes:  m{"0": 1, "1": 2, "7": 1},
		problems: []prob{{".", 0, "no classes.txt, *.names or data.yaml with names"}},
	}, {
		name:     "names in a deeper data.yaml than a YAML without names",
		files:    with(map[string]string{"config.yaml": "epochs: 3\n", "dataset/data.yaml": "names: [a, b]\n"}),
		classes:  m{"a": 1, "b": 2},
		problems: []prob{{"labels/val/3.txt", 2, "class id 7 has no name in dataset/data.yaml"}},
	}, {
		name:     "data.yaml without names falls back to classes.txt; blank line in names",
		files:    with(map[string]string{"data.yaml": "train: images/train\n", "classes.txt": "cat\n\ndog\n"}),
		classes:  m{"cat": 1, "dog": 2},
		problems: []prob{{"classes.txt", 2, `blank line between class names: it is not a class, so class 1 is "dog"`}, {"labels/val/3.txt", 2, "class id 7"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := analyze(t, tree(t, tt.files), Options{})
			if s.Format != YOLO {
				t.Fatalf("Format = %q, want yolo", s.Format)
			}
			objects := int64(0)
			for _, n := range tt.classes {
				objects += n
			}
			checkCounts(t, "dataset", &s.Counts, Counts{NumberOfSamples: 3, NumberOfObjects: objects, Classes: tt.classes})
			if s.Splits["train"].NumberOfSamples != 2 || s.Splits["val"].NumberOfSamples != 1 {
				t.Errorf("splits = train %d, val %d samples; want 2, 1", s.Splits["train"].NumberOfSamples, s.Splits["val"].NumberOfSamples)
			}
			checkProblems(t, s, tt.problems)
		})
	}
}
