package dataset

import (
	"context"
	"strings"
	"testing"
)

const cocoCategories = `"categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "kite"}]`

func TestParseCOCO(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     Counts
		classes  m // dataset classes, declared ones included; nil = want.Classes
		problems []prob
	}{{
		name: "image without annotations is a sample; unused category listed with 0",
		in: `{"info": {"year": 2017, "nested": [1, [2, {"x": 3}]]}, "licenses": [],
"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}, {"id": 3}],
"annotations": [
  {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "segmentation": [[1, 2, 3, 4, 5, 6]]},
  {"id": 11, "image_id": 1, "category_id": 2},
  {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 1}
],
` + cocoCategories + `}`,
		want:    Counts{NumberOfSamples: 3, NumberOfObjects: 3, Classes: m{"person": 2, "dog": 1}},
		classes: m{"person": 2, "dog": 1, "kite": 0},
	}, {
		name: "annotations and categories before images",
		in: `{` + cocoCategories + `, "annotations": [{"id": 1, "image_id": 7, "category_id": 3}],
"images": [{"id": 7}]}`,
		want:    Counts{NumberOfSamples: 1, NumberOfObjects: 1, Classes: m{"kite": 1}},
		classes: m{"person": 0, "dog": 0, "kite": 1},
	}, {
		name: "unknown category and image",
		in: `{"images": [{"id": 1}],
"annotations": [
  {"id": 1, "image_id": 1, "category_id": 99},
  {"id": 2, "image_id": 1, "category_id": 99},
  {"id": 3, "image_id": 5, "category_id": 1},
  {"id": 4, "image_id": 1, "category_id": 1}
],
"categories": [{"id": 1, "name": "person"}]}`,
		want: Counts{NumberOfSamples: 1, NumberOfObjects: 1, Classes: m{"person": 1}},
		problems: []prob{
			{"i.json", 5, "annotation id 3 refers to image_id 5, which is not in the file: not counted"},
			{"i.json", 3, "annotation id 1 and 1 more refer to category_id 99, which is not in the file"},
		},
	}, {
		name: "wrong types and missing fields",
		in: `{"images": [{"id": "one"}, {"file_name": "x.jpg"}, {"id": 1}, {"id": 1}],
"annotations": [{"id": 1, "image_id": 1}, {"id": 2, "image_id": 1, "category_id": 1.5}],
"categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}, {"name": "c"}]}`,
		want:    Counts{NumberOfSamples: 1},
		classes: m{"a": 0},
		problems: []prob{
			{"i.json", 1, `image: field "id" is a JSON string, want int64: not counted`},
			{"i.json", 1, `image without "id"`},
			{"i.json", 1, "image id 1 appears twice"},
			{"i.json", 2, `annotation id 1 has no "category_id"`},
			{"i.json", 2, `annotation: field "category_id" is a JSON number 1.5, want int64`},
			{"i.json", 3, `category id 1 appears twice ("a" at line 3, "b" here)`},
			{"i.json", 3, `category "c" without "id"`},
		},
	}, {
		name:     "syntax error: file not counted, line of the error",
		in:       "{\"images\": [\n{\"id\": 1},\n{\"id\": 2,,}\n]}",
		problems: []prob{{"i.json", 3, "malformed JSON: invalid character ',' looking for beginning of object key string: file not counted"}},
	}, {
		name:     "truncated",
		in:       "{\"images\": [\n{\"id\": 1},\n",
		problems: []prob{{"i.json", 3, "JSON ends early"}},
	}, {
		name:     "not an object",
		in:       `[{"id": 1}]`,
		problems: []prob{{"i.json", 1, "top level is not a JSON object"}},
	}, {
		name: "images not an array",
		in:   `{"images": {"id": 1}, "categories": []}`,
		problems: []prob{
			{"i.json", 1, `"images" is not an array: ignored`},
		},
	}, {
		name:     "no images key",
		in:       `{"annotations": [], ` + cocoCategories + `}`,
		classes:  m{"person": 0, "dog": 0, "kite": 0},
		problems: []prob{{"i.json", 0, `no "images" array`}},
	}, {
		name:     "trailing data",
		in:       `{"images": [], "categories": []} {}`,
		problems: []prob{{"i.json", 1, "after the top-level object"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, COCO, func(ctx context.Context, acc *accumulator) error {
				return parseCOCO(ctx, strings.NewReader(tt.in), "i.json", "", acc)
			})
			want := tt.want
			if tt.classes != nil {
				want.Classes = tt.classes
			}
			checkCounts(t, "dataset", &s.Counts, want)
			checkProblems(t, s, tt.problems)
		})
	}
}

func TestAnalyzeCOCOSplits(t *testing.T) {
	train := `{"images": [{"id": 1}, {"id": 2}], "annotations": [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 2, "category_id": 2}], ` + cocoCategories + `}`
	val := `{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "category_id": 2}], ` + cocoCategories + `}`
	dir := tree(t, map[string]string{
		"annotations/instances_train2017.json":      train,
		"annotations/instances_val2017.json":        val,
		"annotations/captions_train2017.json":       `{"images": [{"id": 1}, {"id": 2}], "annotations": [{"id": 1, "image_id": 1, "caption": "a dog"}]}`,
		"annotations/person_keypoints_val2017.json": val,
		"train2017/000000000001.jpg":                "jpg",
		"val2017/000000000001.jpg":                  "jpg",
	})
	s := analyze(t, dir, Options{})
	if s.Format != COCO {
		t.Fatalf("Format = %q, want coco", s.Format)
	}
	checkCounts(t, "dataset", &s.Counts, Counts{NumberOfSamples: 3, NumberOfObjects: 3, Classes: m{"person": 1, "dog": 2, "kite": 0}})
	checkCounts(t, "train", s.Splits["train"], Counts{NumberOfSamples: 2, NumberOfObjects: 2, Classes: m{"person": 1, "dog": 1}})
	checkCounts(t, "val", s.Splits["val"], Counts{NumberOfSamples: 1, NumberOfObjects: 1, Classes: m{"dog": 1}})
	checkProblems(t, s, nil)
	if s.Files != 6 {
		t.Errorf("Files = %d, want 6", s.Files)
	}
}
