package unpack

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestReplaceDir covers what `barge pull REF DIR` may and may not replace.
func TestReplaceDir(t *testing.T) {
	v2 := []testLayer{raw("weights.bin", "v2 weights"), tarLayer("code", file("src/main.py", "v2"))}
	for _, tc := range []struct {
		name      string
		setup     func(t *testing.T, s *dirStore, dest string)
		overwrite bool
		want      error // nil: dest holds v2 afterwards
	}{
		{"dest missing", func(*testing.T, *dirStore, string) {}, false, nil},
		{"dest empty", func(t *testing.T, _ *dirStore, dest string) { mkdir(t, dest) }, false, nil},
		{"dest from a previous pull", func(t *testing.T, s *dirStore, dest string) {
			v1 := []testLayer{raw("weights.bin", "v1 weights"), raw("dropped-in-v2.txt", "old")}
			if err := ReplaceDir(context.Background(), s, s.descs(t, v1...), dest, Options{}); err != nil {
				t.Fatal(err)
			}
		}, false, nil},
		{"dest holds the user's files", userFiles, false, ErrNotOwned},
		{"dest holds the user's files, Overwrite", userFiles, true, nil},
		{"dest is a file", func(t *testing.T, _ *dirStore, dest string) {
			if err := os.WriteFile(dest, []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, true, errAny},
		{"dest is a symlink to a directory", func(t *testing.T, _ *dirStore, dest string) {
			mkdir(t, dest+"-target")
			if err := os.Symlink(filepath.Base(dest)+"-target", dest); err != nil {
				t.Fatal(err)
			}
		}, true, errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			parent := t.TempDir()
			dest := filepath.Join(parent, "model")
			tc.setup(t, s, dest)
			before := snapshot(t, parent)

			err := ReplaceDir(context.Background(), s, s.descs(t, v2...), dest, Options{Overwrite: tc.overwrite})
			if tc.want != nil {
				if err == nil || (tc.want != errAny && !errors.Is(err, tc.want)) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				t.Log(err)
				if d := diffSnapshots(before, snapshot(t, parent)); d != "" {
					t.Errorf("refused pull changed files:\n%s", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(dest, p)
					names = append(names, rel)
				}
				return err
			})
			if want := []string{PullMarker, "src/main.py", "weights.bin"}; !slices.Equal(names, want) {
				t.Errorf("dest holds %v, want exactly %v", names, want)
			}
			if got := readFile(t, filepath.Join(dest, "weights.bin")); got != "v2 weights" {
				t.Errorf("weights.bin = %q", got)
			}
			entries, _ := os.ReadDir(parent)
			if len(entries) != 1 {
				t.Errorf("parent holds %d entries, want only dest (no staging or old tree left)", len(entries))
			}
		})
	}
}

func TestReplaceDirCreatesParents(t *testing.T) {
	s := newStore(t)
	dest := filepath.Join(t.TempDir(), "models", "resnet", "v1")
	if err := ReplaceDir(context.Background(), s, s.descs(t, raw("weights.bin", "w")), dest, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dest, "weights.bin")); got != "w" {
		t.Errorf("weights.bin = %q", got)
	}
}

// errAny marks a case that must fail, whatever the error.
var errAny = errors.New("any error")

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func userFiles(t *testing.T, _ *dirStore, dest string) {
	mkdir(t, dest)
	if err := os.WriteFile(filepath.Join(dest, "thesis.tex"), []byte("years of work"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReplaceDirReservesMarker: an artifact cannot bring its own marker,
// which would make a later pull think it owns a directory it does not.
func TestReplaceDirReservesMarker(t *testing.T) {
	s := newStore(t)
	dest := filepath.Join(t.TempDir(), "model")
	err := ReplaceDir(context.Background(), s, s.descs(t, raw(PullMarker, "x")), dest, Options{})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	if _, err := os.Lstat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dest created: %v", err)
	}
}

// TestSwapAside exercises the fallback for filesystems without
// RENAME_EXCHANGE: the new tree is in, the old one gone, nothing left over.
func TestSwapAside(t *testing.T) {
	parent := t.TempDir()
	dest, staging := filepath.Join(parent, "model"), filepath.Join(parent, "model.barge-staging-1")
	mkdir(t, dest)
	mkdir(t, staging)
	os.WriteFile(filepath.Join(dest, "old"), nil, 0o644)
	os.WriteFile(filepath.Join(staging, "new"), nil, 0o644)
	if err := swapAside(staging, dest); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, parent); len(got) != 3 || got["model/new"] == "" {
		t.Errorf("after swap: %v", got)
	}
}
