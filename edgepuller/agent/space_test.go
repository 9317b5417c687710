package agent_test

import (
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bargeml/barge/edgepuller/agent"
)

// TestNoSpaceKeepsPreviousVersion: on a node whose disk cannot hold the
// new version's layers, the pull fails at once with the numbers and the
// version in place keeps serving.
func TestNoSpaceKeepsPreviousVersion(t *testing.T) {
	e := newEnv(t)
	if err := syscall.Mount("tmpfs", e.root, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v; the free-space check needs a small real filesystem", err)
	}
	t.Cleanup(func() { syscall.Unmount(e.root, syscall.MNT_DETACH) })

	v1 := e.push("models/m", "stable", map[string]string{"weights.bin": "version one"})
	r := e.start(func(o *agent.Options) { o.ResolveInterval = 100 * time.Millisecond })
	r.set(agent.Desired{Name: "m", Reference: e.ref("models/m:stable"), Insecure: true})
	r.waitReady(t, "m", v1)

	big := make([]byte, 10<<20) // incompressible: tmpfs stores it whole
	rand.NewChaCha8([32]byte{1}).Read(big)
	e.push("models/m", "stable", map[string]string{"weights.bin": string(big)})
	waitFor(t, "the pull of the version that does not fit to fail", func() bool {
		s, _ := r.rec.get("m")
		return s.Phase == agent.Failed
	})
	s, _ := r.rec.get("m")
	if !strings.Contains(s.Message, "not enough free space: need 10.0 MiB") || !strings.Contains(s.Message, "free on "+e.root) {
		t.Errorf("status message %q does not give the numbers", s.Message)
	}
	if s.Digest != v1 {
		t.Errorf("status digest %s, want the version still in place %s", s.Digest, v1)
	}
	if got := e.mustRead("m", "weights.bin"); got != "version one" {
		t.Errorf("current/weights.bin = %q, want version one still in place", got)
	}
}
