package dataset

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree writes files (slash paths → contents) under a new temporary directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// run feeds a fresh accumulator to parse and returns the finished stats.
func run(t *testing.T, f Format, parse func(ctx context.Context, acc *accumulator) error) *Stats {
	t.Helper()
	acc := newAccumulator(f)
	if err := parse(context.Background(), acc); err != nil {
		t.Fatalf("parse: %v", err)
	}
	return acc.finish()
}

func analyze(t *testing.T, dir string, opts Options) *Stats {
	t.Helper()
	s, err := Analyze(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	return s
}

// prob is an expected problem: path and line exactly, and a piece of the
// message.
type prob struct {
	path string
	line int
	msg  string
}

func checkProblems(t *testing.T, s *Stats, want []prob) {
	t.Helper()
	if int(s.NumberOfProblems) != len(s.Problems) {
		t.Errorf("NumberOfProblems = %d, listed %d", s.NumberOfProblems, len(s.Problems))
	}
	if len(s.Problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(s.Problems), len(want), problemList(s.Problems))
		return
	}
	for i, w := range want {
		g := s.Problems[i]
		if g.Path != w.path || g.Line != w.line || !strings.Contains(g.Message, w.msg) {
			t.Errorf("problem %d = %s, want %s:%d: …%s…", i, g, w.path, w.line, w.msg)
		}
	}
}

func problemList(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.String() + "\n")
	}
	return b.String()
}

// counts is the part of Counts a test states; nil maps mean "empty".
func checkCounts(t *testing.T, what string, got *Counts, want Counts) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no counts", what)
		return
	}
	if got.NumberOfSamples != want.NumberOfSamples || got.NumberOfObjects != want.NumberOfObjects || got.Unlabeled != want.Unlabeled {
		t.Errorf("%s: samples/objects/unlabeled = %d/%d/%d, want %d/%d/%d", what,
			got.NumberOfSamples, got.NumberOfObjects, got.Unlabeled,
			want.NumberOfSamples, want.NumberOfObjects, want.Unlabeled)
	}
	checkMap(t, what+" classes", got.Classes, want.Classes)
	checkMap(t, what+" difficult", got.Difficult, want.Difficult)
}

func checkMap(t *testing.T, what string, got, want map[string]int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
		return
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v, want %v", what, got, want)
			return
		}
	}
}

type m = map[string]int64
