package cli

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bargeml/barge/registry"
)

// runBarge runs the barge command tree in this process.
func runBarge(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := NewCommand(streams{in: strings.NewReader(""), out: &out, err: &errb})
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// pushDir pushes files as a model with `barge push`'s packing and returns
// its reference.
func pushDir(t *testing.T, reg *registry.Registry, repo, tag string, files map[string]string) string {
	t.Helper()
	reg.PushForTest(t, repo, tag, files)
	return reg.Host() + "/" + repo + ":" + tag
}

// TestPullSucceedsWhenOnlyCleanupFails: once the new version is swapped
// into DIR, a failure to remove the old tree must not make `barge pull`
// fail (a script would take DIR for the old version and retry): it
// succeeds with a warning. The old tree here holds a mount point, which
// nobody can remove.
func TestPullSucceedsWhenOnlyCleanupFails(t *testing.T) {
	reg := registry.StartForTest(t)
	v1 := pushDir(t, reg, "models/m", "1", map[string]string{"weights.bin": "version one"})
	v2 := pushDir(t, reg, "models/m", "2", map[string]string{"weights.bin": "version two"})
	parent := t.TempDir()
	dest := filepath.Join(parent, "m")
	cache := filepath.Join(t.TempDir(), "cache")
	if _, stderr, err := runBarge(t, "pull", "--cache", cache, v1, dest); err != nil {
		t.Fatalf("pull %s: %v\n%s", v1, err, stderr)
	}
	busy := filepath.Join(dest, "busy")
	if err := os.Mkdir(busy, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", busy, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs to make the old tree unremovable (needs root): %v", err)
	}
	t.Cleanup(func() {
		// The mount moved with the old tree, wherever it is now.
		mounts, _ := filepath.Glob(filepath.Join(parent, "*", "busy"))
		for _, m := range mounts {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
	})

	stdout, stderr, err := runBarge(t, "pull", "--cache", cache, "-o", "json", v2, dest)
	if err != nil {
		t.Fatalf("pull %s failed although the new version is in place: %v\n%s", v2, err, stderr)
	}
	if got, err := os.ReadFile(filepath.Join(dest, "weights.bin")); err != nil || string(got) != "version two" {
		t.Fatalf("%s holds %q (%v), want version two", dest, got, err)
	}
	if !strings.Contains(stderr, "Warning: the new version is in place, but a step after the swap failed") {
		t.Errorf("stderr does not warn about the failed cleanup:\n%s", stderr)
	}
	if !strings.Contains(stdout, `"warnings"`) {
		t.Errorf("JSON output does not carry the warning:\n%s", stdout)
	}
}

// TestPullRefusedWithoutSpace: `barge pull` of a version whose layers do not
// fit in the cache's filesystem fails at once with the numbers, and DIR
// keeps the version it had.
func TestPullRefusedWithoutSpace(t *testing.T) {
	reg := registry.StartForTest(t)
	cache := t.TempDir()
	if err := syscall.Mount("tmpfs", cache, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v; the free-space check needs a small real filesystem", err)
	}
	t.Cleanup(func() { syscall.Unmount(cache, syscall.MNT_DETACH) })
	big := make([]byte, 10<<20)
	rand.NewChaCha8([32]byte{3}).Read(big)
	v1 := pushDir(t, reg, "models/m", "1", map[string]string{"weights.bin": "version one"})
	v2 := pushDir(t, reg, "models/m", "2", map[string]string{"weights.bin": string(big)})
	dest := filepath.Join(t.TempDir(), "m")
	if _, stderr, err := runBarge(t, "pull", "--cache", cache, v1, dest); err != nil {
		t.Fatalf("pull %s: %v\n%s", v1, err, stderr)
	}
	_, _, err := runBarge(t, "pull", "--cache", cache, v2, dest)
	if err == nil || !strings.Contains(err.Error(), "not enough free space: need 10.0 MiB") || !strings.Contains(err.Error(), "free on "+cache) {
		t.Fatalf("pull of 10 MiB into an 8 MiB cache: err = %v; want it to refuse with the numbers", err)
	}
	if got, err := os.ReadFile(filepath.Join(dest, "weights.bin")); err != nil || string(got) != "version one" {
		t.Errorf("%s holds %q (%v) after the refused pull; want version one", dest, got, err)
	}
}
