package dataset

import "testing"

func TestAnalyzeImageFolder(t *testing.T) {
	tests := []struct {
		name   string
		files  []string
		want   Counts
		splits map[string]Counts
	}{{
		name:  "class folders, any image extension case, other files ignored",
		files: []string{"cat/1.jpg", "cat/2.JPEG", "cat/notes.txt", "dog/1.png", "dog/deep/2.webp", "bird/x.Gif", "bird/y.bmp"},
		want:  Counts{NumberOfSamples: 6, Classes: m{"cat": 2, "dog": 2, "bird": 2}},
	}, {
		name:  "split level, unlabeled test split",
		files: []string{"train/cat/1.jpg", "train/dog/1.jpg", "valid/cat/2.jpg", "test/a.jpg", "test/b.jpg"},
		want:  Counts{NumberOfSamples: 5, Unlabeled: 2, Classes: m{"cat": 2, "dog": 1}},
		splits: map[string]Counts{
			"train": {NumberOfSamples: 2, Classes: m{"cat": 1, "dog": 1}},
			"val":   {NumberOfSamples: 1, Classes: m{"cat": 1}},
			"test":  {NumberOfSamples: 2, Unlabeled: 2},
		},
	}, {
		name:  "a class named test among others is a class",
		files: []string{"test/1.jpg", "cat/1.jpg", "cat/2.jpg"},
		want:  Counts{NumberOfSamples: 3, Classes: m{"test": 1, "cat": 2}},
	}, {
		name:  "images without class folders",
		files: []string{"1.jpg", "2.png"},
		want:  Counts{NumberOfSamples: 2},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			for _, f := range tt.files {
				files[f] = "img"
			}
			s := analyze(t, tree(t, files), Options{})
			if s.Format != ImageFolder {
				t.Fatalf("Format = %q, want imagefolder", s.Format)
			}
			checkCounts(t, "dataset", &s.Counts, tt.want)
			if len(s.Splits) != len(tt.splits) {
				t.Errorf("splits = %v, want %v", s.Splits, tt.splits)
			}
			for name, want := range tt.splits {
				checkCounts(t, name, s.Splits[name], want)
			}
			checkProblems(t, s, nil)
			if s.Files != int64(len(tt.files)) || s.Bytes != 3*int64(len(tt.files)) {
				t.Errorf("Files, Bytes = %d, %d; want %d, %d", s.Files, s.Bytes, len(tt.files), 3*len(tt.files))
			}
		})
	}
}
