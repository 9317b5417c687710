package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/registry"
)

// TestSilentRegistryFreesTheSlot: with one download slot, an artifact whose
// registry accepts connections and never answers must fail within the
// request timeout and give the slot up, so that another artifact's pull
// goes ahead; its status says what happened.
func TestSilentRegistryFreesTheSlot(t *testing.T) {
	e := newEnv(t)
	live := e.push("models/live", "v1", map[string]string{"weights.bin": "live weights"})
	silent := registry.SilentForTest(t).Host()
	r := e.start(func(o *agent.Options) {
		o.Concurrency = 1
		o.Fetch.RequestTimeout = 300 * time.Millisecond
		o.Backoff = func(int) time.Duration { return time.Hour } // one attempt is enough to see
	})
	dead := agent.Desired{Name: "dead", Reference: silent + "/models/dead@sha256:" + strings.Repeat("ab", 32), Insecure: true}
	r.set(dead)
	waitFor(t, "dead to take the only slot", func() bool { return r.rec.sawPhase("dead", agent.Pulling) })
	start := time.Now()
	r.set(dead, agent.Desired{Name: "live", Reference: e.ref("models/live:v1"), Insecure: true})
	r.waitReady(t, "live", live)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("live became Ready %v after a silent registry took the slot, with a 300ms request timeout", took)
	}
	if got := e.mustRead("live", "weights.bin"); got != "live weights" {
		t.Errorf("live weights.bin = %q", got)
	}
	s, _ := r.rec.get("dead")
	if s.Phase != agent.Failed || !strings.Contains(s.Message, "no answer within the request timeout of 300ms") {
		t.Errorf("dead: %s %q; want Failed saying the registry did not answer in time", s.Phase, s.Message)
	}
}
