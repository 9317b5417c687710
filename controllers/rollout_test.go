package controllers

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bargeml/barge/api/v1alpha1"
)

func TestDecideRollout(t *testing.T) {
	const d1, d2, d3 = "sha256:1111", "sha256:2222", "sha256:3333"
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(d)); return &t }
	one := int32(1)
	canary1 := &v1alpha1.CanarySpec{Nodes: &one}
	pause := func(c v1alpha1.CanarySpec, d time.Duration) *v1alpha1.CanarySpec {
		c.Pause = &metav1.Duration{Duration: d}
		return &c
	}
	// nodes a, b, c; healthy and failed name the nodes in those states.
	nodes := func(healthy, failed string) []nodeState {
		var out []nodeState
		for _, n := range []string{"a", "b", "c"} {
			s := nodeState{name: n, labels: map[string]string{"zone": "z-" + n}, healthy: strings.Contains(healthy, n)}
			if strings.Contains(failed, n) {
				s.failed = "pull " + n + ": disk full"
			}
			out = append(out, s)
		}
		return out
	}
	complete1 := &v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutComplete, Digest: d1, Version: "1.0"}
	rolling := func(phase v1alpha1.RolloutPhase, mod func(*v1alpha1.RolloutStatus)) *v1alpha1.RolloutStatus {
		st := &v1alpha1.RolloutStatus{Phase: phase, Digest: d2, Version: "2.0", Previous: d1, CanaryNodes: []string{"a"}}
		if mod != nil {
			mod(st)
		}
		return st
	}
	rolledBack := rolling(v1alpha1.RolloutRolledBack, nil)
	halted := rolling(v1alpha1.RolloutHalted, func(s *v1alpha1.RolloutStatus) { s.Message = "halted 2.0" })
	history := []v1alpha1.HistoryEntry{
		{Digest: d2, Version: "2.0", Action: actionRolledBack, Generation: 3},
		{Digest: d2, Version: "2.0", Action: actionHalted, Generation: 3},
		{Digest: d1, Version: "1.0", Action: actionRolledOut, Generation: 2},
	}

	tests := []struct {
		name string
		in   rolloutInput
		// want: the phase, the target, the nodes that may move ("*" for
		// any), the history action recorded, the events' reasons, requeue.
		phase    v1alpha1.RolloutPhase
		target   string
		previous string
		moveOnly string
		record   string
		events   []string
		requeue  time.Duration
		message  string
	}{
		{name: "a first rollout moves every node",
			in:    rolloutInput{digest: d1, nodes: nodes("a", ""), spec: v1alpha1.RolloutSpec{Canary: canary1}},
			phase: v1alpha1.RolloutProgressing, target: d1, moveOnly: "*", message: "on 1 of 3 nodes"},
		{name: "a first rollout has no failure policy: nothing to go back to",
			in:    rolloutInput{digest: d1, nodes: nodes("", "ab")},
			phase: v1alpha1.RolloutProgressing, target: d1, moveOnly: "*"},
		{name: "a first rollout completes",
			in:    rolloutInput{digest: d1, version: "1.0", reason: "accuracy 0.93, best of 2", nodes: nodes("abc", "")},
			phase: v1alpha1.RolloutComplete, target: d1, moveOnly: "*", record: actionRolledOut, events: []string{ReasonRolloutComplete}},
		{name: "a model from before status.rollout rolls out from what it resolved",
			in:    rolloutInput{digest: d2, lastResolved: d1, nodes: nodes("", ""), spec: v1alpha1.RolloutSpec{Canary: canary1}},
			phase: v1alpha1.RolloutProgressing, target: d2, previous: d1, moveOnly: "a"},
		{name: "a new digest without a canary moves every node",
			in:    rolloutInput{prior: complete1, digest: d2, nodes: nodes("", "")},
			phase: v1alpha1.RolloutProgressing, target: d2, previous: d1, moveOnly: "*"},
		{name: "a new digest moves the canary alone",
			in:    rolloutInput{prior: complete1, digest: d2, nodes: nodes("", ""), spec: v1alpha1.RolloutSpec{Canary: canary1}},
			phase: v1alpha1.RolloutProgressing, target: d2, previous: d1, moveOnly: "a", message: "canary a: 0 of 1 hold"},
		{name: "a canary by node selector",
			in:    rolloutInput{prior: complete1, digest: d2, nodes: nodes("", ""), spec: v1alpha1.RolloutSpec{Canary: &v1alpha1.CanarySpec{NodeSelector: map[string]string{"zone": "z-b"}}}},
			phase: v1alpha1.RolloutProgressing, target: d2, moveOnly: "b"},
		{name: "a canary selector that matches no node pauses before any node moves",
			in:    rolloutInput{prior: complete1, digest: d2, nodes: nodes("", ""), spec: v1alpha1.RolloutSpec{Canary: &v1alpha1.CanarySpec{NodeSelector: map[string]string{"zone": "none"}}}, resumeHint: "resume"},
			phase: v1alpha1.RolloutPaused, target: d2, moveOnly: "", events: []string{ReasonRolloutPaused}, message: "matches none of the 3 nodes; the rest follow on resume"},
		{name: "a healthy canary pauses the rollout for canary.pause",
			in:    rolloutInput{prior: rolling(v1alpha1.RolloutProgressing, nil), digest: d2, version: "2.0", nodes: nodes("a", ""), spec: v1alpha1.RolloutSpec{Canary: pause(*canary1, 10*time.Minute)}, now: now},
			phase: v1alpha1.RolloutPaused, target: d2, moveOnly: "a", events: []string{ReasonRolloutPaused}, requeue: 10 * time.Minute,
			message: "canary a holds 2.0 (sha256:2222); the rest follow at 2026-05-01T12:10:00Z"},
		{name: "a paused rollout waits out its pause",
			in: rolloutInput{prior: rolling(v1alpha1.RolloutPaused, func(s *v1alpha1.RolloutStatus) { s.CanaryReadyAt = at(-4 * time.Minute) }),
				digest: d2, nodes: nodes("a", ""), spec: v1alpha1.RolloutSpec{Canary: pause(*canary1, 10*time.Minute)}, now: now},
			phase: v1alpha1.RolloutPaused, target: d2, moveOnly: "a", requeue: 6 * time.Minute},
		{name: "after canary.pause the rest follow",
			in: rolloutInput{prior: rolling(v1alpha1.RolloutPaused, func(s *v1alpha1.RolloutStatus) { s.CanaryReadyAt = at(-10 * time.Minute) }),
				digest: d2, nodes: nodes("a", ""), spec: v1alpha1.RolloutSpec{Canary: pause(*canary1, 10*time.Minute)}, now: now},
			phase: v1alpha1.RolloutProgressing, target: d2, moveOnly: "*", events: []string{ReasonRolloutResumed}},
		{name: "without canary.pause a paused rollout waits for a person",
			in: rolloutInput{prior: rolling(v1alpha1.RolloutPaused, func(s *v1alpha1.RolloutStatus) { s.CanaryReadyAt = at(-time.Hour) }),
				digest: d2, nodes: nodes("a", ""), spec: v1alpha1.RolloutSpec{Canary: canary1}, resume: d1, now: now},
			phase: v1alpha1.RolloutPaused, target: d2, moveOnly: "a"},
		{name: "the resume annotation on the digest lets the rest follow",
			in: rolloutInput{prior: rolling(v1alpha1.RolloutPaused, func(s *v1alpha1.RolloutStatus) { s.CanaryReadyAt = at(-time.Hour) }),
				digest: d2, nodes: nodes("a", ""), spec: v1alpha1.RolloutSpec{Canary: canary1}, resume: d2, now: now},
			phase: v1alpha1.RolloutProgressing, target: d2, moveOnly: "*", events: []string{ReasonRolloutResumed}},
		{name: "once resumed, the rollout does not pause again",
			in: rolloutInput{prior: rolling(v1alpha1.RolloutProgressing, func(s *v1alpha1.RolloutStatus) { s.ResumedAt = at(-time.Minute) }),
				digest: d2, nodes: nodes("a", ""), spec: v1alpha1.RolloutSpec{Canary: canary1}, now: now},
			phase: v1alpha1.RolloutProgressing, target: d2, moveOnly: "*"},
		{name: "a canary that stops being healthy restarts its pause",
			in: rolloutInput{prior: rolling(v1alpha1.RolloutPaused, func(s *v1alpha1.RolloutStatus) { s.CanaryReadyAt = at(-time.Minute) }),
				digest: d2, nodes: nodes("", ""), spec: v1alpha1.RolloutSpec{Canary: pause(*canary1, 10*time.Minute)}, now: now},
			phase: v1alpha1.RolloutProgressing, target: d2, moveOnly: "a"},
		{name: "a canary of every node completes without a pause",
			in:    rolloutInput{prior: rolling(v1alpha1.RolloutProgressing, nil), digest: d2, nodes: nodes("abc", ""), spec: v1alpha1.RolloutSpec{Canary: &v1alpha1.CanarySpec{Nodes: ptr(int32(5))}}},
			phase: v1alpha1.RolloutComplete, target: d2, moveOnly: "*", record: actionRolledOut, events: []string{ReasonRolloutComplete}},
		{name: "failures within maxFailedNodes go on",
			in:    rolloutInput{prior: rolling(v1alpha1.RolloutProgressing, func(s *v1alpha1.RolloutStatus) { s.ResumedAt = at(0) }), digest: d2, nodes: nodes("a", "b"), spec: v1alpha1.RolloutSpec{MaxFailedNodes: 1, Canary: canary1}},
			phase: v1alpha1.RolloutProgressing, target: d2, moveOnly: "*"},
		{name: "too many failures roll back to the previous digest",
			in:    rolloutInput{prior: rolling(v1alpha1.RolloutProgressing, nil), digest: d2, version: "2.0", generation: 4, nodes: nodes("a", "bc"), spec: v1alpha1.RolloutSpec{MaxFailedNodes: 1, FailurePolicy: v1alpha1.FailurePolicyRollback}},
			phase: v1alpha1.RolloutRolledBack, target: d1, moveOnly: "*", record: actionRolledBack, events: []string{ReasonRolledBack},
			message: "rolled back 2.0 (sha256:2222) to sha256:1111: 2 of 3 nodes failed (maxFailedNodes 1); b: pull b: disk full; c: pull c: disk full"},
		{name: "too many failures halt a rollout that should halt",
			in:    rolloutInput{prior: rolling(v1alpha1.RolloutPaused, nil), digest: d2, nodes: nodes("", "a"), spec: v1alpha1.RolloutSpec{FailurePolicy: v1alpha1.FailurePolicyHalt, Canary: canary1}},
			phase: v1alpha1.RolloutHalted, target: d2, moveOnly: "", record: actionHalted, message: "push a fixed version or change the spec"},
		{name: "a halted rollout stays halted at its generation",
			in:    rolloutInput{prior: halted, digest: d2, generation: 3, history: history, nodes: nodes("abc", ""), spec: v1alpha1.RolloutSpec{FailurePolicy: v1alpha1.FailurePolicyHalt}},
			phase: v1alpha1.RolloutHalted, target: d2, moveOnly: "", message: "halted 2.0"},
		{name: "a changed spec judges a halted rollout again",
			in:    rolloutInput{prior: halted, digest: d2, generation: 4, history: history, nodes: nodes("a", "b"), spec: v1alpha1.RolloutSpec{MaxFailedNodes: 1}},
			phase: v1alpha1.RolloutProgressing, target: d2, previous: d1, moveOnly: "*"},
		{name: "a rollback stands while resolution names the digest rolled back",
			in:    rolloutInput{prior: rolledBack, digest: d2, generation: 3, history: history, rejected: rejectedDigests(history, 3), nodes: nodes("abc", "")},
			phase: v1alpha1.RolloutRolledBack, target: d1, moveOnly: "*"},
		{name: "a rollback stands when resolution goes back to the previous digest",
			in:    rolloutInput{prior: rolledBack, digest: d1, generation: 3, history: history, rejected: rejectedDigests(history, 3), nodes: nodes("", "")},
			phase: v1alpha1.RolloutRolledBack, target: d1, moveOnly: "*"},
		{name: "after a spec change the digest rolled back is tried again",
			in:    rolloutInput{prior: rolledBack, digest: d2, generation: 4, history: history, rejected: rejectedDigests(history, 4), nodes: nodes("", "")},
			phase: v1alpha1.RolloutProgressing, target: d2, previous: d1, moveOnly: "*"},
		{name: "a new version after a rollback rolls out from where the nodes went back to",
			in:    rolloutInput{prior: rolledBack, digest: d3, generation: 3, history: history, rejected: rejectedDigests(history, 3), nodes: nodes("", "")},
			phase: v1alpha1.RolloutProgressing, target: d3, previous: d1, moveOnly: "*"},
		{name: "a new version during a rollout rolls out from the last complete one",
			in:    rolloutInput{prior: rolling(v1alpha1.RolloutProgressing, nil), digest: d3, nodes: nodes("", "")},
			phase: v1alpha1.RolloutProgressing, target: d3, previous: d1, moveOnly: "*"},
		{name: "going back to the digest an unfinished rollout came from",
			in:    rolloutInput{prior: rolling(v1alpha1.RolloutProgressing, nil), digest: d1, nodes: nodes("", "")},
			phase: v1alpha1.RolloutProgressing, target: d1, previous: d2, moveOnly: "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.in.now.IsZero() {
				tt.in.now = now
			}
			d := decideRollout(tt.in)
			if d.status.Phase != tt.phase || d.target != tt.target {
				t.Errorf("phase %s target %s, want %s %s (%s)", d.status.Phase, d.target, tt.phase, tt.target, d.status.Message)
			}
			if tt.previous != "" && d.status.Previous != tt.previous {
				t.Errorf("previous %s, want %s", d.status.Previous, tt.previous)
			}
			if got := moves(d.moveOnly); got != tt.moveOnly {
				t.Errorf("moveOnly %q, want %q", got, tt.moveOnly)
			}
			switch {
			case tt.record == "" && d.record != nil:
				t.Errorf("recorded %+v, want nothing", *d.record)
			case tt.record != "" && (d.record == nil || d.record.Action != tt.record || d.record.Digest != d.status.Digest || d.record.Generation != tt.in.generation):
				t.Errorf("recorded %+v, want %s of %s at generation %d", d.record, tt.record, d.status.Digest, tt.in.generation)
			}
			var reasons []string
			for _, e := range d.events {
				reasons = append(reasons, e.reason)
				if len(e.note) > maxMessage {
					t.Errorf("event %s is %d characters long", e.reason, len(e.note))
				}
			}
			if !slices.Equal(reasons, tt.events) {
				t.Errorf("events %v, want %v", reasons, tt.events)
			}
			if d.requeue != tt.requeue {
				t.Errorf("requeue %s, want %s", d.requeue, tt.requeue)
			}
			if !strings.Contains(d.status.Message, tt.message) || len(d.status.Message) > maxMessage {
				t.Errorf("message %q, want it to contain %q", d.status.Message, tt.message)
			}
		})
	}
}

// moves shows a moveOnly set: "*" for any node, else the names.
func moves(m map[string]bool) string {
	if m == nil {
		return "*"
	}
	var out []string
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func TestRolloutHistory(t *testing.T) {
	var h []v1alpha1.HistoryEntry
	for i := range 12 {
		h = addHistory(h, v1alpha1.HistoryEntry{Digest: fmt.Sprintf("sha256:%d", i), Action: actionRolledOut, Generation: 1})
	}
	if len(h) != maxHistory || h[0].Digest != "sha256:11" || h[maxHistory-1].Digest != "sha256:2" {
		t.Fatalf("history of 12: %d entries, first %s, last %s; want the newest 10, newest first", len(h), h[0].Digest, h[len(h)-1].Digest)
	}
	if again := addHistory(h, h[0]); len(again) != len(h) || again[1].Digest != h[1].Digest {
		t.Error("the same step recorded twice (a pass that started from a stale status)")
	}
	h = addHistory(h, v1alpha1.HistoryEntry{Digest: "sha256:bad", Action: actionRolledBack, Reason: "2 of 3 nodes failed", Generation: 2})
	h = addHistory(h, v1alpha1.HistoryEntry{Digest: "sha256:old", Action: actionRolledBack, Reason: "before", Generation: 1})
	if got := rejectedDigests(h, 2); len(got) != 1 || got["sha256:bad"] != "2 of 3 nodes failed" {
		t.Errorf("rejected at generation 2: %v", got)
	}
	if got := rejectedDigests(h, 3); got != nil {
		t.Errorf("rejected at generation 3: %v, want none: the spec changed since", got)
	}
}

func TestFailureSummary(t *testing.T) {
	var failed []nodeState
	for i := range 9 {
		failed = append(failed, nodeState{name: fmt.Sprintf("edge-%d", i), failed: strings.Repeat("no space left on device ", 20)})
	}
	got := failureSummary(failed, 12, 1)
	if !strings.HasPrefix(got, "9 of 12 nodes failed (maxFailedNodes 1); edge-0: no space") || !strings.HasSuffix(got, "also edge-2, edge-3, edge-4, 4 more") {
		t.Errorf("summary %q", got)
	}
	if strings.Contains(got, "edge-5") || len(got) > maxMessage {
		t.Errorf("summary names more than 5 nodes or is longer than %d: %q", maxMessage, got)
	}
	if got := clipTo("ééé", 5); got != "..." && got != "é..." {
		t.Errorf("clipTo cut a character: %q", got)
	}
}

// TestFailureCause: a failure summary quotes why a node failed, not the
// reference and digests the puller's message repeats (what the pullers of
// test/cluster write for a pull timeout and for a corrupt layer).
func TestFailureCause(t *testing.T) {
	const repo = "127.0.0.1:42983/models/detector"
	ref := repo + "@sha256:71373142a8005e0ca6c8246e2d426df3b9a806e3aa7577bf9682f991825cea66"
	blob := "sha256:95d3476e31da93238edf3d9865dec4ef26a63a9d208661e88f8e1bf261567742"
	for _, c := range []struct{ message, want string }{
		{"pull " + ref + ": did not finish within the pull timeout of 2s (partial downloads are kept and the next pull resumes them): layer weights.bin: fetch blob " + blob + " from " + repo + ": interrupted at offset 69232 of 4194304, the partial is kept: context deadline exceeded (attempt 1; next in 600ms)",
			"did not finish within the pull timeout of 2s (partial downloads are kept and the next pull resumes them): layer weights.bin: fetch blob sha256:95d3476e31da: interrupted at offset 69232 of 4194304, the partial is kept: context deadline exceeded"},
		{"pull " + ref + ": layer backbone.onnx: fetch blob " + blob + " from " + repo + ": downloaded twice from byte 0 and both copies were corrupt (attempt 3; next in 4.1s)",
			"layer backbone.onnx: fetch blob sha256:95d3476e31da: downloaded twice from byte 0 and both copies were corrupt"},
		{"verify: no signature of the index (attempt 1; next in 1s)", "verify: no signature of the index"},
		{"", "the puller reported Failed"},
	} {
		na := &v1alpha1.NodeArtifact{Spec: v1alpha1.NodeArtifactSpec{Reference: ref}, Status: v1alpha1.NodeArtifactStatus{Message: c.message}}
		if got := failureCause(na); got != c.want {
			t.Errorf("failureCause(%q)\n = %q\nwant %q", c.message, got, c.want)
		}
	}
	got := failureSummary([]nodeState{{name: "edge-2", failed: strings.Repeat("x", 200)}, {name: "edge-3", failed: "short"}}, 3, 1)
	if want := "2 of 3 nodes failed (maxFailedNodes 1); edge-2: " + strings.Repeat("x", quoteBudget/2-3) + "...; edge-3: short"; got != want {
		t.Errorf("failureSummary = %q\nwant %q", got, want)
	}
}

// TestNodeStates: a node is healthy on the new files when its puller holds
// them and, for a model with a server, its pod is Ready on them; a puller's
// failure or a pod that cannot serve them fails it.
func TestNodeStates(t *testing.T) {
	const files, old = "sha256:new", "sha256:old"
	ready, failed := v1alpha1.NodeArtifactReady, v1alpha1.NodeArtifactFailed
	v := nodeView{desired: []string{"a", "b", "c", "d", "e"}, existing: []*v1alpha1.NodeArtifact{
		na("a", files, ready, files),
		na("b", files, ready, files),
		na("c", files, failed, ""),
		na("d", old, ready, old),
		na("e", files, ready, files),
	}}
	byNode := filesStates(v, files)
	show := func(states []nodeState) string {
		var out []string
		for _, n := range states {
			s := n.name
			if n.healthy {
				s += "+"
			}
			if n.failed != "" {
				s += "!" + n.failed
			}
			out = append(out, s)
		}
		return strings.Join(out, " ")
	}
	for _, tt := range []struct {
		name    string
		serving map[string]nodeServing
		seen    bool
		want    string
	}{
		{"before the serving pods are seen, no node is healthy", nil, false, "a b c!the puller reported Failed d e"},
		{"a model without a server: the files decide", nil, true, "a+ b+ c!the puller reported Failed d e+"},
		{"with a server, the pod must be Ready on the new files", map[string]nodeServing{
			"a": {digest: files, ready: true},
			"b": {digest: old, ready: true},
			"e": {digest: files, failed: "CrashLoopBackOff"},
		}, true, "a+ b c!the puller reported Failed d e!serving: CrashLoopBackOff"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := show(nodeStates(v, byNode, files, tt.serving, tt.seen)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
