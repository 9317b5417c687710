package dataset

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestWriteTable(t *testing.T) {
	acc := newAccumulator(VOC)
	acc.s.Files, acc.s.Bytes = 12, 3<<20
	for i := 0; i < 3; i++ {
		acc.sample("train")
	}
	acc.sample("val")
	acc.sample("extra")
	acc.objects("train", "dog", 5, false)
	acc.objects("train", "dog", 1, true)
	acc.objects("val", "cat", 2, false)
	acc.objects("train", "bird", 2, false)
	for i := 1; i <= 13; i++ {
		acc.problem("Annotations/x.xml", i, "bad %d", i)
	}
	var b strings.Builder
	if err := acc.finish().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{
		"Format:   voc\n",
		"Samples:  5\n",
		"Objects:  10\n",
		"Files:    12 (3.0 MiB)\n",
		"Annotations/x.xml:1: bad 1\n",
		"Annotations/x.xml:10: bad 10\n",
		"… and 3 more\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if strings.Contains(out, "bad 11") {
		t.Error("table lists more than 10 problems")
	}
	// Splits train, val, test order, then others; classes by count, ties by name.
	wantOrder := []string{`SPLIT\s+SAMPLES`, `train\s+3\s+8\s+2`, `val\s+1\s+2\s+1`, `extra\s+1\s+0\s+0`,
		`CLASS\s+COUNT\s+TRAIN\s+VAL\s+EXTRA\s+DIFFICULT`, `dog\s+6\s+6\s+0\s+0\s+1`, `bird\s+2\s+2\s+0`, `cat\s+2\s+0\s+2`, `Problems: 13`}
	rest := out
	for _, w := range wantOrder {
		loc := regexp.MustCompile(w).FindStringIndex(rest)
		if loc == nil {
			t.Fatalf("table lacks %q after what came before", w)
		}
		rest = rest[loc[1]:]
	}
}

func TestWriteTableManyClasses(t *testing.T) {
	acc := newAccumulator(CSV)
	for i := 0; i < 60; i++ {
		acc.sample("", fmt.Sprintf("c%02d", i))
	}
	var b strings.Builder
	acc.finish().WriteTable(&b)
	if !strings.Contains(b.String(), "… and 10 more classes\n") {
		t.Errorf("table of 60 classes lacks the \"and 10 more classes\" line:\n%s", b.String())
	}
}

func TestStatsJSON(t *testing.T) {
	acc := newAccumulator(CSV)
	acc.sample("train", "a")
	acc.csvHeader("train.csv", []string{"x", "label"}, 1)
	acc.problem("train.csv", 3, "bad")
	data, err := json.Marshal(acc.finish())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	json.Unmarshal(data, &got)
	for _, key := range []string{"format", "numberOfSamples", "classes", "splits", "files", "bytes", "problems", "numberOfProblems", "columns", "labelColumn"} {
		if _, ok := got[key]; !ok {
			t.Errorf("JSON lacks %q: %s", key, data)
		}
	}
	split := got["splits"].(map[string]any)["train"].(map[string]any)
	if split["numberOfSamples"] != 1.0 || split["classes"].(map[string]any)["a"] != 1.0 {
		t.Errorf("splits.train = %v", split)
	}
	p := got["problems"].([]any)[0].(map[string]any)
	if p["path"] != "train.csv" || p["line"] != 3.0 || p["message"] != "bad" {
		t.Errorf("problem = %v", p)
	}

	// An empty dataset still has a classes object and a problems list.
	data, _ = json.Marshal(newAccumulator(CSV).finish())
	if !strings.Contains(string(data), `"classes":{}`) || !strings.Contains(string(data), `"problems":[]`) {
		t.Errorf("empty stats JSON = %s", data)
	}
}

func TestProblemsAreCapped(t *testing.T) {
	acc := newAccumulator(JSONL)
	for i := 0; i < MaxProblems+5; i++ {
		acc.problem("x", i, "p")
	}
	s := acc.finish()
	if len(s.Problems) != MaxProblems || s.NumberOfProblems != MaxProblems+5 {
		t.Errorf("listed %d of %d problems, want %d of %d", len(s.Problems), s.NumberOfProblems, MaxProblems, MaxProblems+5)
	}
}

func TestClassesAreCapped(t *testing.T) {
	acc := newAccumulator(CSV)
	for i := 0; i < MaxClasses+3; i++ {
		acc.sample("", fmt.Sprint(i))
	}
	s := acc.finish()
	if len(s.Classes) != MaxClasses || s.OtherClasses != 3 || s.NumberOfProblems != 1 {
		t.Errorf("classes listed %d, other %d, problems %d; want %d, 3, 1", len(s.Classes), s.OtherClasses, s.NumberOfProblems, MaxClasses)
	}
}
