package dataset

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDetect(t *testing.T) {
	coco := `{"info": {}, "images": [], "annotations": [], "categories": []}`
	tests := []struct {
		name  string
		files map[string]string
		want  Format
	}{
		{"csv", map[string]string{"train.csv": "a,b\n1,2\n", "notes.txt": "hello world"}, CSV},
		{"jsonl", map[string]string{"x.ndjson": "{}\n"}, JSONL},
		{"coco", map[string]string{"annotations/instances_val.json": coco, "val/1.jpg": "x", "meta.json": `{"name": "x"}`}, COCO},
		{"voc", map[string]string{"Annotations/1.xml": vocXML("a"), "JPEGImages/1.jpg": "x", "ImageSets/Main/train.txt": "1\n"}, VOC},
		{"yolo with classes.txt", map[string]string{"labels/1.txt": "0 .5 .5 .1 .1\n", "images/1.jpg": "x", "classes.txt": "a\n"}, YOLO},
		{"yolo with image lists", map[string]string{"train/labels/1.txt": "", "data.yaml": "names: [a]\n", "train.txt": "./images/1.jpg\n"}, YOLO},
		{"imagefolder", map[string]string{"cat/1.jpg": "x", "dog/1.png": "x"}, ImageFolder},
		{"imagelist", map[string]string{"train.txt": "# list\nimgs/1.jpg 0\n", "imgs/1.jpg": "x"}, ImageList},
		{"hidden files and README ignored", map[string]string{"cat/1.jpg": "x", ".DS_Store": "x", ".git/config": "x", "README.txt": "a b\n", "LICENSE": "MIT"}, ImageFolder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := analyze(t, tree(t, tt.files), Options{})
			if s.Format != tt.want {
				t.Errorf("Format = %q, want %q", s.Format, tt.want)
			}
		})
	}
}

func TestAnalyzeErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f.csv")
	os.WriteFile(file, []byte("a\n"), 0o644)
	tests := []struct {
		name  string
		dir   string
		opts  Options
		is    error
		parts []string
	}{{
		name:  "mixed CSV and VOC",
		dir:   tree(t, map[string]string{"labels.csv": "a,label\n1,x\n", "Annotations/1.xml": vocXML("a"), "Annotations/2.xml": vocXML("b")}),
		is:    ErrMixedFormats,
		parts: []string{"csv (1 files, e.g. labels.csv)", "voc (2 files, e.g. Annotations/1.xml)", "--format"},
	}, {
		name:  "empty directory",
		dir:   tree(t, map[string]string{".hidden": "x", "README.md": "x"}),
		is:    ErrNoData,
		parts: []string{"analyze dataset /"},
	}, {
		name:  "unknown files",
		dir:   tree(t, map[string]string{"a.parquet": "x", "b.parquet": "x", "Makefile": "x"}),
		is:    ErrUnknownFormat,
		parts: []string{"3 files (.parquet: 2, no extension: 1)", "--format"},
	}, {
		name:  "unknown format option",
		dir:   tree(t, map[string]string{"a.csv": "x"}),
		opts:  Options{Format: "parquet"},
		is:    ErrUnknownFormat,
		parts: []string{`format "parquet"`, "csv, imagelist"},
	}, {
		name:  "missing directory",
		dir:   filepath.Join(t.TempDir(), "nope"),
		is:    os.ErrNotExist,
		parts: []string{"nope"},
	}, {
		name:  "a file",
		dir:   file,
		parts: []string{"f.csv: not a directory"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Analyze(context.Background(), tt.dir, tt.opts)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.dir) {
				t.Errorf("err = %v, want it to name %s", err, tt.dir)
			}
			for _, p := range tt.parts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("err = %v, want …%s…", err, p)
				}
			}
		})
	}
}

func TestFormatOptionOverridesDetection(t *testing.T) {
	dir := tree(t, map[string]string{"labels.csv": "a,label\n1,x\n", "Annotations/1.xml": vocXML("a"), "Annotations/2.xml": vocXML("b")})
	s := analyze(t, dir, Options{Format: VOC})
	checkCounts(t, "voc", &s.Counts, Counts{NumberOfSamples: 2, NumberOfObjects: 2, Classes: m{"a": 1, "b": 1}})
	s = analyze(t, dir, Options{Format: CSV})
	checkCounts(t, "csv", &s.Counts, Counts{NumberOfSamples: 1, Classes: m{"x": 1}})
	if s.Files != 3 {
		t.Errorf("Files = %d, want 3: every file of the dataset, not only the CSV", s.Files)
	}
}

func TestAnalyzeStopsWhenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Analyze(ctx, tree(t, map[string]string{"a.csv": "a\n1\n"}), Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestSplitOf(t *testing.T) {
	for rel, want := range map[string]string{
		"train.csv":                          "train",
		"data/valid/x.csv":                   "val",
		"annotations/instances_val2017.json": "val",
		"Validation.jsonl":                   "val",
		"test-00000-of-00001.jsonl":          "test",
		"training/part.csv":                  "train",
		"trainval.csv":                       "",
		"contest.csv":                        "",
		"attestation/x.csv":                  "",
	} {
		if got := splitOfFile(rel); got != want {
			t.Errorf("splitOfFile(%q) = %q, want %q", rel, got, want)
		}
	}
}
