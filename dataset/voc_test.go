package dataset

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// vocXML is an annotation with the given objects, each "name" or "name!"
// for a difficult one.
func vocXML(objects ...string) string {
	var b strings.Builder
	b.WriteString("<annotation>\n  <filename>x.jpg</filename>\n  <size><width>10</width><height>10</height></size>\n")
	for _, o := range objects {
		difficult := 0
		if strings.HasSuffix(o, "!") {
			o, difficult = strings.TrimSuffix(o, "!"), 1
		}
		fmt.Fprintf(&b, "  <object>\n    <name>%s</name>\n    <difficult>%d</difficult>\n    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>\n  </object>\n", o, difficult)
	}
	b.WriteString("</annotation>\n")
	return b.String()
}

func TestParseVOC(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     Counts
		problems []prob
	}{{
		name: "several objects, difficult counted in both",
		in:   vocXML("dog", "dog!", "cat"),
		want: Counts{NumberOfSamples: 1, NumberOfObjects: 3, Classes: m{"dog": 2, "cat": 1}, Difficult: m{"dog": 1}},
	}, {
		name: "image without objects",
		in:   vocXML(),
		want: Counts{NumberOfSamples: 1},
	}, {
		name: "part names are not objects",
		in: `<?xml version="1.0" encoding="utf-8"?>
<annotation><object><name>person</name><part><name>head</name></part><part><name>hand</name></part></object></annotation>`,
		want: Counts{NumberOfSamples: 1, NumberOfObjects: 1, Classes: m{"person": 1}},
	}, {
		name: "ISO-8859-1 declared",
		in:   "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<annotation><object><name>caf\xe9</name></object></annotation>",
		want: Counts{NumberOfSamples: 1, NumberOfObjects: 1, Classes: m{"café": 1}},
	}, {
		name:     "malformed XML is not counted",
		in:       "<annotation>\n<object>\n<name>dog</name>\n</objekt>\n</annotation>\n",
		problems: []prob{{"a.xml", 4, "malformed XML: element <object> closed by </objekt>: annotation not counted"}},
	}, {
		name:     "truncated",
		in:       "<annotation>\n<object><name>dog</name></object>\n",
		problems: []prob{{"a.xml", 3, "malformed XML: unexpected EOF"}},
	}, {
		name:     "wrong root",
		in:       "<svg>\n</svg>",
		problems: []prob{{"a.xml", 1, "root element is <svg>, want <annotation>"}},
	}, {
		name:     "not XML",
		in:       "hello",
		problems: []prob{{"a.xml", 0, "no <annotation> element"}},
	}, {
		name:     "object without name",
		in:       "<annotation>\n<object><name>cat</name></object>\n<object>\n<difficult>1</difficult></object></annotation>",
		want:     Counts{NumberOfSamples: 1, NumberOfObjects: 1, Classes: m{"cat": 1}},
		problems: []prob{{"a.xml", 3, "<object> without <name>: object not counted"}},
	}, {
		name:     "unknown encoding",
		in:       `<?xml version="1.0" encoding="EBCDIC"?><annotation/>`,
		problems: []prob{{"a.xml", 1, `unsupported encoding "EBCDIC"`}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := run(t, VOC, func(ctx context.Context, acc *accumulator) error {
				return parseVOC(ctx, strings.NewReader(tt.in), "a.xml", "", acc)
			})
			checkCounts(t, "dataset", &s.Counts, tt.want)
			checkProblems(t, s, tt.problems)
		})
	}
}

func TestAnalyzeVOCSplits(t *testing.T) {
	dir := tree(t, map[string]string{
		"VOC2012/Annotations/001.xml":            vocXML("dog", "dog!"),
		"VOC2012/Annotations/002.xml":            vocXML("cat"),
		"VOC2012/Annotations/003.xml":            vocXML("cat!", "person"),
		"VOC2012/Annotations/004.xml":            "<annotation><object><name>dog</name>",
		"VOC2012/Annotations/005.xml":            vocXML("bird"),
		"VOC2012/ImageSets/Main/train.txt":       "001\n002\n",
		"VOC2012/ImageSets/Main/val.txt":         "003\n004\n006\n",
		"VOC2012/ImageSets/Main/trainval.txt":    "001\n002\n003\n004\n",
		"VOC2012/ImageSets/Main/dog_train.txt":   "001  1\n002 -1\n",
		"VOC2012/JPEGImages/001.jpg":             "jpg",
		"VOC2012/SegmentationClass/001.png":      "png",
		"VOC2012/ImageSets/Segmentation/val.txt": "001\n",
	})
	s := analyze(t, dir, Options{})
	if s.Format != VOC {
		t.Fatalf("Format = %q, want voc", s.Format)
	}
	checkCounts(t, "dataset", &s.Counts, Counts{NumberOfSamples: 4, NumberOfObjects: 6,
		Classes: m{"dog": 2, "cat": 2, "person": 1, "bird": 1}, Difficult: m{"dog": 1, "cat": 1}})
	checkCounts(t, "train", s.Splits["train"], Counts{NumberOfSamples: 2, NumberOfObjects: 3,
		Classes: m{"dog": 2, "cat": 1}, Difficult: m{"dog": 1}})
	checkCounts(t, "val", s.Splits["val"], Counts{NumberOfSamples: 1, NumberOfObjects: 2,
		Classes: m{"cat": 1, "person": 1}, Difficult: m{"cat": 1}})
	if len(s.Splits) != 2 {
		t.Errorf("splits = %v, want train and val (005 is in no list, trainval is not a split)", s.Splits)
	}
	checkProblems(t, s, []prob{
		{"VOC2012/Annotations/004.xml", 1, "malformed XML"},
		{"VOC2012/ImageSets/Main/val.txt", 3, `image "006" is listed but has no annotation file`},
	})
}

// Exports such as Roboflow's keep the XML files next to the images, in split
// folders, with no Annotations directory.
func TestAnalyzeVOCNextToImages(t *testing.T) {
	dir := tree(t, map[string]string{
		"train/1.jpg":         "jpg",
		"train/1.xml":         vocXML("cat"),
		"train/2.xml":         vocXML("cat", "dog"),
		"valid/3.xml":         vocXML("dog!"),
		"valid/3.jpg":         "jpg",
		"README.roboflow.txt": "exported",
	})
	s := analyze(t, dir, Options{})
	if s.Format != VOC {
		t.Fatalf("Format = %q, want voc", s.Format)
	}
	checkCounts(t, "dataset", &s.Counts, Counts{NumberOfSamples: 3, NumberOfObjects: 4, Classes: m{"cat": 2, "dog": 2}, Difficult: m{"dog": 1}})
	checkCounts(t, "train", s.Splits["train"], Counts{NumberOfSamples: 2, NumberOfObjects: 3, Classes: m{"cat": 2, "dog": 1}})
	checkCounts(t, "val", s.Splits["val"], Counts{NumberOfSamples: 1, NumberOfObjects: 1, Classes: m{"dog": 1}, Difficult: m{"dog": 1}})
	checkProblems(t, s, nil)
}
