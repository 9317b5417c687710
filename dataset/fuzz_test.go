package dataset

import (
	"bytes"
	"context"
	"testing"
)

// Each parser gets outside input; the fuzz targets check that none panics and
// that what it reports adds up, whatever the input.

// checkStats checks what must hold for any input: counts add up, and every
// problem points at a line that exists.
func checkStats(t *testing.T, s *Stats, in []byte, detection bool) {
	t.Helper()
	if s.NumberOfProblems < int64(len(s.Problems)) || (s.NumberOfProblems <= MaxProblems && int(s.NumberOfProblems) != len(s.Problems)) {
		t.Fatalf("NumberOfProblems %d, listed %d", s.NumberOfProblems, len(s.Problems))
	}
	lines := bytes.Count(in, []byte("\n")) + 1
	for _, p := range s.Problems {
		if p.Line < 0 || p.Line > lines || p.Message == "" {
			t.Fatalf("problem %s: line outside 0..%d or no message", p, lines)
		}
	}
	var sum int64
	for class, n := range s.Classes {
		if n < 0 {
			t.Fatalf("class %q counted %d times", class, n)
		}
		sum += n
	}
	sum += s.OtherClasses
	if s.NumberOfSamples < 0 || s.Unlabeled < 0 || s.Unlabeled > s.NumberOfSamples {
		t.Fatalf("samples %d, unlabeled %d", s.NumberOfSamples, s.Unlabeled)
	}
	if detection && sum != s.NumberOfObjects {
		t.Fatalf("classes add up to %d, objects %d", sum, s.NumberOfObjects)
	}
	if !detection && s.NumberOfObjects != 0 {
		t.Fatalf("objects %d in a classification format", s.NumberOfObjects)
	}
}

func FuzzCSV(f *testing.F) {
	for _, seed := range []string{
		"id,text,label\n1,\"a, b\",cat\n2,\"line\nbreak\",dog\n",
		"\xEF\xBB\xBFa,label\r\n1,x\r\n\r\n2,y\r\n",
		"a,b\n",
		"",
		"a,label\n1,x\"y\n2,\"unterminated\n",
		"a,b,label\n1,2\n1,2,3,4\n  \n,,\n",
		"label\n\"\"\"\"\n\"a\"\"b\"\n",
		"a;b;label\n1;2;3\n",
		"\"a\nb\",label\n1,2\n",
	} {
		f.Add([]byte(seed), "")
	}
	f.Add([]byte("x,y\n1,2\n"), "y")
	f.Fuzz(func(t *testing.T, in []byte, labelColumn string) {
		acc := newAccumulator(CSV)
		if err := parseCSV(context.Background(), bytes.NewReader(in), "f.csv", "", labelColumn, acc); err != nil {
			t.Fatal(err)
		}
		s := acc.finish()
		checkStats(t, s, in, false)
		var sum int64
		for _, n := range s.Classes {
			sum += n
		}
		if s.LabelColumn != "" && sum+s.Unlabeled != s.NumberOfSamples {
			t.Fatalf("labels %d + unlabeled %d != samples %d", sum, s.Unlabeled, s.NumberOfSamples)
		}
	})
}

func FuzzImageList(f *testing.F) {
	for _, seed := range []string{
		"# comment\n\na.jpg cat\nb.jpg\tdog\n",
		"\xEF\xBB\xBFdir with space/c.jpg 1\r\n",
		"lonely.jpg\n",
		"   \n\t\n#\n",
		"a.jpg  \n b.jpg c \n",
		"missing.jpg cat\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		acc := newAccumulator(ImageList)
		exists := func(ref string) bool { return len(ref)%2 == 0 }
		if err := parseImageList(context.Background(), bytes.NewReader(in), "l.txt", "", exists, acc); err != nil {
			t.Fatal(err)
		}
		s := acc.finish()
		checkStats(t, s, in, false)
		var sum int64
		for _, n := range s.Classes {
			sum += n
		}
		if sum != s.NumberOfSamples {
			t.Fatalf("labels %d != samples %d: every listed sample has a label", sum, s.NumberOfSamples)
		}
	})
}

func FuzzVOC(f *testing.F) {
	for _, seed := range []string{
		vocXML("dog", "dog!", "cat"),
		vocXML(),
		`<?xml version="1.0" encoding="ISO-8859-1"?><annotation><object><name>caf` + "\xe9" + `</name></object></annotation>`,
		"<annotation><object><name>p</name><part><name>head</name></part></object></annotation>",
		"<annotation>\n<object>\n</objekt>",
		"<annotation><object><name>a</name></object></annotation><annotation/>",
		"<svg/>",
		"<annotation><![CDATA[x]]><!-- c --><object><name>a<!--x-->b</name><difficult>true</difficult></object></annotation>",
		`<?xml version="1.0" encoding="koi8-r"?><annotation/>`,
		"<a:annotation xmlns:a='x'><a:object><a:name>n</a:name></a:object></a:annotation>",
		"<annotation>&nbsp;</annotation>",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		acc := newAccumulator(VOC)
		if err := parseVOC(context.Background(), bytes.NewReader(in), "a.xml", "", acc); err != nil {
			t.Fatal(err)
		}
		s := acc.finish()
		checkStats(t, s, in, true)
		if s.NumberOfSamples > 1 {
			t.Fatalf("%d samples from one annotation file", s.NumberOfSamples)
		}
		if s.NumberOfSamples == 0 && s.NumberOfProblems == 0 {
			t.Fatal("annotation neither counted nor reported")
		}
	})
}

func FuzzCOCO(f *testing.F) {
	for _, seed := range []string{
		`{"info": {"a": [1, {"b": null}]}, "images": [{"id": 1}, {"id": 2}], "annotations": [{"id": 1, "image_id": 1, "category_id": 1}], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}`,
		`{"annotations": [{"id": 1, "image_id": 9, "category_id": 5}], "images": [{"id": 9}], "categories": []}`,
		"{\"images\": [\n{\"id\": 1},\n{\"id\": 2,,}\n]}",
		`{"images": [{"id": "x"}, {}, {"id": 1}, {"id": 1}], "annotations": [{"image_id": 1}, {"image_id": 1, "category_id": 1.5}], "categories": [{"id": 1}, {"name": "x"}]}`,
		`{"images": {"id": 1}, "annotations": 3, "categories": "x"}`,
		`[]`,
		`{"images": []} trailing`,
		`{"images": [`,
		``,
		`{"images": [{"id": 9223372036854775807}], "annotations": [{"id": 1, "image_id": 9223372036854775807, "category_id": -1}], "categories": [{"id": -1, "name": "neg"}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		acc := newAccumulator(COCO)
		if err := parseCOCO(context.Background(), bytes.NewReader(in), "i.json", "", acc); err != nil {
			t.Fatal(err)
		}
		checkStats(t, acc.finish(), in, true)
	})
}

func FuzzYOLO(f *testing.F) {
	for _, seed := range []struct{ labels, yaml string }{
		{"0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.05 0.05\r\n", "names: [a, b]\n"},
		{"0 0.1 0.1 0.2 0.1 0.2 0.2\n", "names:\n  0: a\n  3: d\n"},
		{"0 0.5 0.5 0.2\n2 0.5 0.5 0.2 0.2\nx 1 1 1 1\n0 NaN 0 0 0\n0 1e400 0 0 0\n", "names: [a]\n"},
		{"0 0.5 0.5 0.2 0.2 0.4 0.4 2\n", "names: [p]\nkpt_shape: [1, 3]\n"},
		{"", ""},
		{"0 0.5 0.5 0.2 0.2\n", "names: {x: a}\n"},
		{"0 0.5 0.5 0.2 0.2\n", "a: &a [*a]\nnames: *a\n"},
		{"0 0.5 0.5 0.2 0.2\n", "names: [a, b\n"},
		{"0 0.5 0.5 0.2 0.2\n", "kpt_shape: [100000000, 3]\nnames: [a]\n"},
	} {
		f.Add([]byte(seed.labels), []byte(seed.yaml))
	}
	f.Fuzz(func(t *testing.T, labels, yamlData []byte) {
		names, err := parseYOLOYAML(bytes.NewReader(yamlData), "data.yaml")
		if err != nil {
			names = nil
		}
		acc := newAccumulator(YOLO)
		if err := parseYOLO(context.Background(), bytes.NewReader(labels), "labels/a.txt", "", names, acc); err != nil {
			t.Fatal(err)
		}
		s := acc.finish()
		checkStats(t, s, labels, true)
		if s.NumberOfSamples != 1 {
			t.Fatalf("%d samples from one label file", s.NumberOfSamples)
		}
		// classes.txt is a names file too: it must not panic either.
		parseYOLOClasses(bytes.NewReader(yamlData), "classes.txt", newAccumulator(YOLO))
	})
}

func FuzzJSONL(f *testing.F) {
	for _, seed := range []string{
		"{\"label\": \"a\"}\n\n{\"class\": 3}\r\n",
		"{\"label\": [\"a\", 1, true, null, {}]}\n",
		"{bad}\n{\"label\": \"a\"} {}\n",
		"\xEF\xBB\xBF\"string\"\n[1,2]\nnull\n",
		"{\"label\": \"\\ud800\"}\n",
		"{\"label\": \"a\", \"label\": \"b\"}\n",
		"   \n\t\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		acc := newAccumulator(JSONL)
		if err := parseJSONL(context.Background(), bytes.NewReader(in), "d.jsonl", "", acc); err != nil {
			t.Fatal(err)
		}
		checkStats(t, acc.finish(), in, false)
	})
}
