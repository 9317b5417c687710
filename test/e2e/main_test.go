// Package e2e runs the real barge binary and the real oras CLI against the
// embedded registry.
package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var (
	bargeBin string
	orasBin  string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "barge-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bargeBin = filepath.Join(tmp, "barge")
	build := exec.Command("go", "build", "-o", bargeBin, "github.com/bargeml/barge/cmd/barge")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build barge:", err)
		return 1
	}
	orasBin = os.Getenv("BARGE_ORAS")
	if orasBin == "" {
		_, file, _, _ := runtime.Caller(0)
		orasBin = filepath.Join(filepath.Dir(file), "..", "..", "bin", "oras")
	}
	if _, err := os.Stat(orasBin); err != nil {
		fmt.Fprintf(os.Stderr, "the oras CLI is needed for the interop tests and is not at %s: run `make tools` (or `make test`)\n", orasBin)
		return 1
	}
	// Credentials and oras state stay inside the test.
	os.Setenv("DOCKER_CONFIG", filepath.Join(tmp, "docker"))
	os.Setenv("HOME", tmp)
	os.Setenv("BARGE_CACHE", filepath.Join(tmp, "cache"))
	return m.Run()
}

type result struct {
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("err=%v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
}

// command runs a binary in dir with stdin and extra environment.
type command struct {
	dir   string
	stdin string
	env   []string
}

func (c command) run(t *testing.T, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(c.stdin)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), c.env...)
	err := cmd.Run()
	return result{out.String(), errb.String(), err}
}

func runCmd(t *testing.T, stdin string, bin string, args ...string) result {
	t.Helper()
	return command{stdin: stdin}.run(t, bin, args...)
}

func barge(t *testing.T, args ...string) result { t.Helper(); return runCmd(t, "", bargeBin, args...) }
func oras(t *testing.T, args ...string) result  { t.Helper(); return runCmd(t, "", orasBin, args...) }

func must(t *testing.T, r result) result {
	t.Helper()
	if r.err != nil {
		t.Fatalf("command failed: %s", r)
	}
	return r
}

// tree reads every regular file under dir (path → content), skipping names
// in skip.
func tree(t *testing.T, dir string, skip ...string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, s := range skip {
			if d.Name() == s {
				return nil
			}
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			files[filepath.ToSlash(rel)] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func sameTree(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing %s", k)
		} else if g != v {
			t.Errorf("%s: %d bytes differ from the %d pushed", k, len(g), len(v))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s", k)
		}
	}
}

func runCmdIn(t *testing.T, dir, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return result{out.String(), errb.String(), err}
}
