package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The tests run the built barge binary and the real oras CLI (bin/oras).
var (
	bargeBin string
	orasBin  string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "barge-cmd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bargeBin = filepath.Join(tmp, "barge")
	build := exec.Command("go", "build", "-o", bargeBin, ".")
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
		fmt.Fprintf(os.Stderr, "the oras CLI is needed and is not at %s: run `make tools`\n", orasBin)
		return 1
	}
	// Credentials, caches and oras state stay inside the test.
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

// command runs bin in dir with stdin and extra environment.
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

func must(t *testing.T, r result) result {
	t.Helper()
	if r.err != nil {
		t.Fatalf("command failed: %s", r)
	}
	return r
}
