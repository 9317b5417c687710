package controllers

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
)

// Staged rollout and rollback of an edge model.
//
// status.rollout follows one model digest (status.resolved.digest) from the
// digest the nodes held before it (previous). Every pass, decideRollout
// reads that status, the spec, the resume annotation, the clock and what
// the nodes report, and says which digest the nodes move to (s.target),
// which of them may move, and what status, history and events follow;
// placement then moves them, at most maxConcurrentNodes at a time. The
// status is the rollout's only memory, so a restarted controller goes on
// where the last one stopped.

// Rollout event and condition reasons.
const (
	ReasonRolloutPaused   = "RolloutPaused"
	ReasonRolloutResumed  = "RolloutResumed"
	ReasonRolloutComplete = "RolloutComplete"
	ReasonRolloutHalted   = "RolloutHalted"
	ReasonRollingBack     = "RollingBack"
	ReasonRolledBack      = "RolledBack"
)

// History actions.
const (
	actionRolledOut  = "RolledOut"
	actionRolledBack = "RolledBack"
	actionHalted     = "Halted"
)

// maxHistory is the schema's bound of status.history.
const maxHistory = 10

// rolloutInput is what one pass knows when it decides.
type rolloutInput struct {
	// prior is status.rollout at the start of the pass; nil before the
	// first rollout.
	prior *v1alpha1.RolloutStatus
	// lastResolved is status.resolved.digest before this pass: what the
	// nodes held, for a model whose status predates status.rollout.
	lastResolved string
	// digest, version and reason are status.resolved now.
	digest, version, reason string
	generation              int64
	history                 []v1alpha1.HistoryEntry
	// rejected are the digests rolled back at this generation.
	rejected map[string]string
	spec     v1alpha1.RolloutSpec
	// resume is the value of the resume annotation.
	resume string
	now    time.Time
	// nodes are the matching nodes by name, as they stand on digest.
	nodes []nodeState
	// resumeHint says how a person resumes this model's rollout.
	resumeHint string
}

// nodeState is one matching node as it stands on the rollout's digest.
type nodeState struct {
	name   string
	labels map[string]string
	// healthy: the node holds the digest's files and, when the model has
	// a server, its serving pod is Ready on them.
	healthy bool
	// failed says why the node failed the digest; empty while it has not.
	failed string
}

// rolloutDecision is what a pass does about the rollout.
type rolloutDecision struct {
	status v1alpha1.RolloutStatus
	// target is the model digest the nodes move to; targetVersion its
	// version, when known.
	target, targetVersion string
	// moveOnly limits which nodes move (placement.moveOnly).
	moveOnly map[string]bool
	// record is a history entry to add, or nil.
	record *v1alpha1.HistoryEntry
	events []rolloutEvent
	// requeue is when to look again: the end of canary.pause.
	requeue time.Duration
}

type rolloutEvent struct{ eventType, reason, note string }

// decideRollout is the rollout's state machine:
//
//	new digest ─▶ Progressing ─(canary healthy)─▶ Paused ─(pause over, or resumed)─▶ Progressing ─▶ Complete
//	Progressing/Paused ─(more than maxFailedNodes failed)─▶ Halted | RolledBack
//
// A first rollout (nothing before it) has no canary and no failure policy:
// there is nothing to keep serving or to go back to.
func decideRollout(in rolloutInput) rolloutDecision {
	d := in.decide()
	d.targetVersion = in.versionOf(d.target)
	return d
}

func (in rolloutInput) decide() rolloutDecision {
	st := in.current()
	d := rolloutDecision{status: st, target: st.Digest}
	switch st.Phase {
	case v1alpha1.RolloutRolledBack:
		d.target = st.Previous
		return d
	case v1alpha1.RolloutHalted:
		d.moveOnly = map[string]bool{}
		return d
	case v1alpha1.RolloutComplete:
		return d
	}
	if failed := in.failures(); st.Previous != "" && len(failed) > int(in.spec.MaxFailedNodes) {
		return in.fail(d, failed)
	}
	if countHealthy(in.nodes, nil) == len(in.nodes) {
		return in.complete(d)
	}
	if in.spec.Canary == nil || st.Previous == "" || st.ResumedAt != nil {
		d.status.Phase = v1alpha1.RolloutProgressing
		d.status.Message = fmt.Sprintf("%s on %d of %d nodes", in.text(st.Digest), countHealthy(in.nodes, nil), len(in.nodes))
		return d
	}
	return in.canary(d)
}

// current is the rollout this pass continues, or a new one when the
// resolved digest changed.
func (in rolloutInput) current() v1alpha1.RolloutStatus {
	if p := in.prior; p != nil {
		_, rejected := in.rejected[p.Digest]
		switch {
		case p.Phase == v1alpha1.RolloutRolledBack && rejected && (in.digest == p.Digest || in.digest == p.Previous):
			// Resolution may still name the rolled back digest, or the one
			// the nodes went back to: either way the rollback stands.
			return *p.DeepCopy()
		case p.Phase == v1alpha1.RolloutRolledBack:
		case in.digest != p.Digest:
		case p.Phase == v1alpha1.RolloutHalted && in.generationOf(actionHalted, p.Digest) != in.generation:
			// The spec changed (maxFailedNodes, failurePolicy): judge the
			// nodes again.
			st := *p.DeepCopy()
			st.Phase, st.Message = v1alpha1.RolloutProgressing, ""
			return st
		default:
			return *p.DeepCopy()
		}
	}
	return v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutProgressing, Digest: in.digest, Version: in.version, Previous: in.previous()}
}

// previous is what the nodes held before a new rollout: the last digest
// that reached every node, else the one an unfinished rollout came from.
func (in rolloutInput) previous() string {
	p := in.prior
	var prev string
	switch {
	case p == nil:
		prev = in.lastResolved
	case p.Phase == v1alpha1.RolloutComplete:
		prev = p.Digest
	case p.Previous != "":
		prev = p.Previous
	default:
		prev = p.Digest
	}
	if prev == in.digest {
		// Back to where an unfinished rollout came from: the nodes are
		// partly on the digest it was rolling out.
		prev = ""
		if p != nil && p.Digest != in.digest {
			prev = p.Digest
		}
	}
	return prev
}

// generationOf is the generation of the newest history entry of action on
// digest, or -1.
func (in rolloutInput) generationOf(action, digest string) int64 {
	for _, h := range in.history {
		if h.Action == action && h.Digest == digest {
			return h.Generation
		}
	}
	return -1
}

// failures are the nodes that failed the digest, by name.
func (in rolloutInput) failures() []nodeState {
	var out []nodeState
	for _, n := range in.nodes {
		if n.failed != "" {
			out = append(out, n)
		}
	}
	return out
}

// fail applies the failure policy.
func (in rolloutInput) fail(d rolloutDecision, failed []nodeState) rolloutDecision {
	st := &d.status
	why := failureSummary(failed, len(in.nodes), in.spec.MaxFailedNodes)
	if in.spec.FailurePolicy == v1alpha1.FailurePolicyHalt {
		st.Phase = v1alpha1.RolloutHalted
		st.Message = clip(fmt.Sprintf("halted %s: %s; the nodes stay where they are: push a fixed version or change the spec", in.text(st.Digest), why))
		d.moveOnly = map[string]bool{}
		d.record = in.entry(st.Digest, actionHalted, why)
		// The Ready condition's Stalled event tells it (ReasonRolloutHalted).
		return d
	}
	st.Phase = v1alpha1.RolloutRolledBack
	st.Message = clip(fmt.Sprintf("rolled back %s to %s: %s; not tried again until a new version or a spec change", in.text(st.Digest), in.text(st.Previous), why))
	d.target = st.Previous
	d.record = in.entry(st.Digest, actionRolledBack, why)
	d.events = append(d.events, rolloutEvent{corev1.EventTypeWarning, ReasonRolledBack, clip(fmt.Sprintf("rolling back %s to %s: %s", in.text(st.Digest), in.text(st.Previous), why))})
	return d
}

// complete ends a rollout every node has taken.
func (in rolloutInput) complete(d rolloutDecision) rolloutDecision {
	st := &d.status
	st.Phase = v1alpha1.RolloutComplete
	st.Message = fmt.Sprintf("%s on %d of %d nodes", in.text(st.Digest), len(in.nodes), len(in.nodes))
	if len(in.nodes) == 0 {
		// Nothing rolled out: a node that comes later gets the digest at once.
		return d
	}
	reason := fmt.Sprintf("on %d node(s)", len(in.nodes))
	if in.reason != "" {
		reason = clip(in.reason + "; " + reason)
	}
	d.record = in.entry(st.Digest, actionRolledOut, reason)
	d.events = append(d.events, rolloutEvent{corev1.EventTypeNormal, ReasonRolloutComplete, st.Message})
	return d
}

// canary moves only the canary nodes until they have been healthy for
// canary.pause, or the rollout is resumed.
func (in rolloutInput) canary(d rolloutDecision) rolloutDecision {
	st := &d.status
	canary := in.canaryNodes(st.CanaryNodes)
	st.CanaryNodes = canary
	d.moveOnly = setOf(canary)
	healthy := countHealthy(in.nodes, d.moveOnly)
	switch {
	case in.resume == st.Digest:
		return in.resumed(d, "resumed with "+v1alpha1.ResumeRolloutAnnotation)
	case healthy < len(canary):
		// Not yet, or no longer: the pause counts from when all of them
		// are healthy.
		st.Phase, st.CanaryReadyAt = v1alpha1.RolloutProgressing, nil
		st.Message = clip(fmt.Sprintf("canary %s: %d of %d hold %s", listNodes(canary), healthy, len(canary), in.text(st.Digest)))
		return d
	}
	if st.Phase != v1alpha1.RolloutPaused || st.CanaryReadyAt == nil {
		t := metav1.NewTime(in.now.Truncate(time.Second))
		st.Phase, st.CanaryReadyAt = v1alpha1.RolloutPaused, &t
		d.events = append(d.events, rolloutEvent{corev1.EventTypeNormal, ReasonRolloutPaused, in.pausedMessage(st)})
	}
	if p := in.spec.Canary.Pause; p != nil {
		end := st.CanaryReadyAt.Add(p.Duration)
		if !in.now.Before(end) {
			return in.resumed(d, fmt.Sprintf("canary.pause of %s has passed", p.Duration))
		}
		d.requeue = end.Sub(in.now)
	}
	st.Message = in.pausedMessage(st)
	return d
}

// pausedMessage says what a paused rollout waits for.
func (in rolloutInput) pausedMessage(st *v1alpha1.RolloutStatus) string {
	if len(st.CanaryNodes) == 0 {
		return clip(fmt.Sprintf("paused before %s: canary.nodeSelector matches none of the %d nodes; %s", in.text(st.Digest), len(in.nodes), in.whenRest(st)))
	}
	return clip(fmt.Sprintf("canary %s holds %s; %s", listNodes(st.CanaryNodes), in.text(st.Digest), in.whenRest(st)))
}

// whenRest says when the remaining nodes follow a paused canary.
func (in rolloutInput) whenRest(st *v1alpha1.RolloutStatus) string {
	if p := in.spec.Canary.Pause; p != nil && st.CanaryReadyAt != nil {
		return fmt.Sprintf("the rest follow at %s (canary.pause %s) or on %s", st.CanaryReadyAt.Add(p.Duration).UTC().Format(time.RFC3339), p.Duration, in.resumeHint)
	}
	return "the rest follow on " + in.resumeHint
}

// resumed lets the remaining nodes move.
func (in rolloutInput) resumed(d rolloutDecision, why string) rolloutDecision {
	st := &d.status
	t := metav1.NewTime(in.now.Truncate(time.Second))
	st.Phase, st.ResumedAt = v1alpha1.RolloutProgressing, &t
	st.Message = fmt.Sprintf("%s on %d of %d nodes", in.text(st.Digest), countHealthy(in.nodes, nil), len(in.nodes))
	d.moveOnly = nil
	d.events = append(d.events, rolloutEvent{corev1.EventTypeNormal, ReasonRolloutResumed, clip(fmt.Sprintf("rolling out %s to the remaining %d node(s): %s", in.text(st.Digest), len(in.nodes)-len(st.CanaryNodes), why))})
	return d
}

// canaryNodes are the canary of a rollout: those it chose before that still
// match, else the first canary.nodes of the matching nodes by name, or
// those canary.nodeSelector matches.
func (in rolloutInput) canaryNodes(chosen []string) []string {
	var out []string
	for _, n := range in.nodes {
		if slices.Contains(chosen, n.name) {
			out = append(out, n.name)
		}
	}
	if len(out) > 0 {
		return out
	}
	c := in.spec.Canary
	sel := labels.SelectorFromSet(c.NodeSelector)
	for _, n := range in.nodes {
		switch {
		case c.Nodes != nil && len(out) >= int(*c.Nodes):
		case c.Nodes != nil || sel.Matches(labels.Set(n.labels)):
			out = append(out, n.name)
		}
	}
	return out
}

// text names a digest of this rollout for people: with its version when the
// resolution or the history knows it.
func (in rolloutInput) text(digest string) string {
	return versionText(&v1alpha1.ResolvedArtifact{Digest: digest, Version: in.versionOf(digest)})
}

// versionOf is the version (tag) of a digest of this rollout, if known.
func (in rolloutInput) versionOf(digest string) string {
	if digest == in.digest {
		return in.version
	}
	if p := in.prior; p != nil && p.Digest == digest {
		return p.Version
	}
	for _, h := range in.history {
		if h.Digest == digest && h.Version != "" {
			return h.Version
		}
	}
	return ""
}

func (in rolloutInput) entry(digest, action, reason string) *v1alpha1.HistoryEntry {
	return &v1alpha1.HistoryEntry{Version: in.versionOf(digest), Digest: digest, Action: action, Reason: reason,
		Time: metav1.NewTime(in.now.Truncate(time.Second)), Generation: in.generation}
}

// addHistory puts e first and keeps the newest maxHistory entries. A pass
// that started from a stale status must not record the same step twice.
func addHistory(h []v1alpha1.HistoryEntry, e v1alpha1.HistoryEntry) []v1alpha1.HistoryEntry {
	if len(h) > 0 && h[0].Digest == e.Digest && h[0].Action == e.Action && h[0].Generation == e.Generation {
		return h
	}
	h = append([]v1alpha1.HistoryEntry{e}, h...)
	if len(h) > maxHistory {
		h = h[:maxHistory]
	}
	return h
}

// rejectedDigests are the digests rolled back at generation, which
// resolution must not choose again until the spec changes.
func rejectedDigests(h []v1alpha1.HistoryEntry, generation int64) map[string]string {
	var out map[string]string
	for _, e := range h {
		if e.Action == actionRolledBack && e.Generation == generation {
			if out == nil {
				out = map[string]string{}
			}
			if _, ok := out[e.Digest]; !ok {
				out[e.Digest] = e.Reason
			}
		}
	}
	return out
}

// failureSummary says how many nodes failed and why, naming at most five
// and quoting two, in at most quoteBudget characters together, so that the
// rollout's message still ends with what happens next.
func failureSummary(failed []nodeState, total int, allowed int32) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d nodes failed (maxFailedNodes %d)", len(failed), total, allowed)
	quote := quoteBudget / min(len(failed), 2)
	for i, n := range failed {
		switch {
		case i < 2:
			fmt.Fprintf(&b, "; %s: %s", n.name, clipTo(n.failed, quote))
		case i == 2:
			names := make([]string, 0, len(failed)-2)
			for _, m := range failed[2:] {
				names = append(names, m.name)
			}
			if len(names) > 3 {
				names = append(names[:3:3], fmt.Sprintf("%d more", len(failed)-5))
			}
			fmt.Fprintf(&b, "; also %s", strings.Join(names, ", "))
		}
	}
	return b.String()
}

// quoteBudget is how much of the failed nodes' messages a failure summary
// quotes.
const quoteBudget = 110

var (
	longDigest    = regexp.MustCompile(`sha256:[a-f0-9]{64}`)
	attemptSuffix = regexp.MustCompile(` \(attempt [0-9]+; next in [^)]*\)$`)
)

// failureCause is why a node's puller failed, without what the rollout's
// message says already. The puller writes "pull REPO@DIGEST: CAUSE
// (attempt N; next in D)", often naming the repository and full digests
// again inside CAUSE: quoted as it is, the first hundred characters would
// show the reference and never the cause.
func failureCause(na *v1alpha1.NodeArtifact) string {
	msg := strings.TrimPrefix(na.Status.Message, "pull "+na.Spec.Reference+": ")
	if repo, _, ok := strings.Cut(na.Spec.Reference, "@"); ok {
		msg = strings.ReplaceAll(msg, " from "+repo, "")
	}
	msg = attemptSuffix.ReplaceAllString(msg, "")
	msg = longDigest.ReplaceAllStringFunc(msg, func(d string) string { return d[:len("sha256:")+12] })
	if msg == "" {
		return "the puller reported Failed"
	}
	return msg
}

// countHealthy counts the healthy nodes among only; among all when only
// is nil.
func countHealthy(nodes []nodeState, only map[string]bool) int {
	c := 0
	for _, n := range nodes {
		if n.healthy && (only == nil || only[n.name]) {
			c++
		}
	}
	return c
}

func setOf(names []string) map[string]bool {
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out
}

// maxMessage bounds status and event messages, as conditions are read in a
// terminal line or two.
const maxMessage = 300

func clip(s string) string { return clipTo(s, maxMessage) }

// clipTo cuts s to at most n bytes, on a character boundary.
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len("...")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

// rolloutEdge decides the rollout, moves the nodes' files and runs the edge
// server: the edge half of a model, which deployEdge (and a joint model's
// edge part) runs. It leaves s.target, s.placed, s.serving and s.rollout.
//
// The serving pods are seen only once serveEdge has run, after placement.
// So the pass decides twice: first from the NodeArtifacts alone, taking no
// node for healthy (it might not serve), then with the serving pods. When
// the second decision lets nodes move that the first did not (a rollback,
// a canary whose pause is zero), placement runs again. A move the first
// placement made is never undone by the second decision except by a
// rollback, which moves every node back anyway.
func (r *InferenceModelReconciler) rolloutEdge(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	m := s.model
	newFiles, err := r.filesDigest(ctx, s, m.Status.Resolved.Digest)
	if err != nil {
		return ctrl.Result{}, err
	}
	view, err := r.placer.observe(ctx, m, kindInferenceModel, m.Spec.NodeSelector)
	if err != nil {
		return ctrl.Result{}, err
	}
	files := filesStates(view, newFiles)
	in := s.rolloutInput(time.Now())
	in.nodes = nodeStates(view, files, newFiles, nil, false)
	first := decideRollout(in)
	placed, err := r.filesDigest(ctx, s, first.target)
	if err != nil {
		return ctrl.Result{}, err
	}
	p := s.edgePlacement(first.target, placed, first.moveOnly)
	p.maxCreates = r.opts.MaxCreatesPerPass
	res, err := r.placer.apply(ctx, p, view)
	if err != nil {
		return ctrl.Result{}, err
	}
	s.placed = &res
	if err := r.serveEdge(ctx, s, placed); err != nil {
		return ctrl.Result{}, err
	}
	in.nodes = nodeStates(view, files, newFiles, s.serving, true)
	d := decideRollout(in)
	if d.target != first.target || widens(first.moveOnly, d.moveOnly) {
		again, err := r.filesDigest(ctx, s, d.target)
		if err != nil {
			return ctrl.Result{}, err
		}
		p := s.edgePlacement(d.target, again, d.moveOnly)
		p.maxCreates = r.opts.MaxCreatesPerPass
		res, err := r.placer.place(ctx, p)
		if err != nil {
			return ctrl.Result{}, err
		}
		s.placed = &res
		if again != placed {
			if err := r.serveEdge(ctx, s, again); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	if d.status.Phase == v1alpha1.RolloutRolledBack {
		// Moving back is not a rollout of its own; the RolledBack event
		// tells it.
		s.placed.rolloutStarted = false
	}
	s.target, s.rollout = d.target, &d
	m.Status.Rollout = d.status.DeepCopy()
	if d.record != nil {
		m.Status.History = addHistory(m.Status.History, *d.record)
	}
	result := ctrl.Result{RequeueAfter: d.requeue}
	if s.placed.more {
		result = soonest(result, ctrl.Result{RequeueAfter: morePasses})
	}
	return result, nil
}

// rolloutInput is what this pass knows of the rollout, but for the nodes.
func (s *modelScope) rolloutInput(now time.Time) rolloutInput {
	m := s.model
	in := rolloutInput{
		prior:      m.Status.Rollout,
		digest:     m.Status.Resolved.Digest,
		version:    m.Status.Resolved.Version,
		reason:     m.Status.Resolved.Reason,
		generation: m.Generation,
		history:    m.Status.History,
		rejected:   s.rejected,
		spec:       m.Spec.Rollout,
		resume:     m.Annotations[v1alpha1.ResumeRolloutAnnotation],
		now:        now,
		resumeHint: fmt.Sprintf("`barge rollout resume %s -n %s`", m.Name, m.Namespace),
	}
	if r := s.before.Status.Resolved; r != nil {
		in.lastResolved = r.Digest
	}
	return in
}

// edgePlacement is the files of the model digest target on its nodes.
func (s *modelScope) edgePlacement(target, files string, moveOnly map[string]bool) placement {
	m := s.model
	return placement{
		owner:         m,
		kind:          kindInferenceModel,
		repository:    s.src.Repository,
		digest:        files,
		insecure:      m.Spec.Insecure,
		selector:      m.Spec.NodeSelector,
		maxConcurrent: m.Spec.Rollout.MaxConcurrentNodes,
		verify:        edgeVerify(m.Spec.Verify, target, files),
		moveOnly:      moveOnly,
		failedSettled: true,
	}
}

// morePasses is how soon a model whose pass left NodeArtifacts to create
// is taken again: at once, behind the models already queued.
const morePasses = time.Millisecond

// widens: after may move a node that before held back.
func widens(before, after map[string]bool) bool {
	if after == nil {
		return before != nil
	}
	for n := range after {
		if before != nil && !before[n] {
			return true
		}
	}
	return false
}

// filesStates is how each node's NodeArtifact stands on files, read before
// the pass moves any: a node moved in this pass has not failed yet.
func filesStates(v nodeView, files string) map[string]nodeState {
	out := map[string]nodeState{}
	for _, na := range v.existing {
		if na.DeletionTimestamp != nil || na.Spec.Digest != files {
			continue
		}
		st := nodeState{name: na.Spec.NodeName, healthy: holds(na, files)}
		if failedNow(na) {
			st.failed = failureCause(na)
		}
		out[na.Spec.NodeName] = st
	}
	return out
}

// nodeStates are the matching nodes as they stand on files. Until the
// serving pods have been seen, no node counts as healthy; once they have,
// a node of a model with a server is healthy only while its pod is Ready
// on files, and a pod that cannot serve files fails the node.
func nodeStates(v nodeView, byNode map[string]nodeState, files string, serving map[string]nodeServing, seen bool) []nodeState {
	out := make([]nodeState, 0, len(v.desired))
	for _, name := range v.desired {
		f := byNode[name]
		n := nodeState{name: name, labels: v.labels[name], failed: f.failed}
		pod, ok := serving[name]
		onFiles := ok && pod.digest == files
		if onFiles && pod.failed != "" && n.failed == "" {
			n.failed = "serving: " + pod.failed
		}
		n.healthy = seen && f.healthy && (serving == nil || (onFiles && pod.ready))
		out = append(out, n)
	}
	return out
}

// targetResolved is the version the nodes move to in this pass, for
// messages: status.resolved, or the previous version during a rollback.
func (s *modelScope) targetResolved() *v1alpha1.ResolvedArtifact {
	r := s.model.Status.Resolved
	if s.rollout == nil || r == nil || s.target == r.Digest {
		return r
	}
	return &v1alpha1.ResolvedArtifact{Digest: s.target, Version: s.rollout.targetVersion}
}

// rolloutOutcome says where the rollout stands, in the terms of conditions.
// A halted rollout, and a rollback once every node is back, need a person:
// they are Stalled.
func rolloutOutcome(d *rolloutDecision, target *v1alpha1.ResolvedArtifact, res placeResult) outcome {
	st := d.status
	switch st.Phase {
	case v1alpha1.RolloutHalted:
		return outcome{failure: stalledf(ReasonRolloutHalted, "%s", st.Message)}
	case v1alpha1.RolloutRolledBack:
		if len(res.pending) > 0 {
			c := res.counts
			return outcome{progressReason: ReasonRollingBack, progressMessage: clip(fmt.Sprintf("rolling back to %s: %d of %d nodes back; waiting for %s", versionText(target), c.Ready, c.Desired, listNodes(res.pending)))}
		}
		return outcome{failure: stalledf(ReasonRolledBack, "%s", st.Message)}
	case v1alpha1.RolloutPaused:
		return outcome{progressReason: ReasonRolloutPaused, progressMessage: st.Message}
	case v1alpha1.RolloutProgressing:
		if d.moveOnly != nil && len(res.failed) == 0 {
			return outcome{progressReason: ReasonRollingOut, progressMessage: st.Message}
		}
	}
	return edgeOutcome(target, res)
}

// catchUp reads model again from the API server when the cache holds an
// older version than this controller last wrote or read. The rollout keeps
// its memory in status: a pass that began from a status its predecessor
// had already changed (the NodeArtifact events of a pass wake the next one
// before the cache has its status patch) would undo that pass's moves, and
// its merge patch, computed from the stale status, would mix the two.
func (r *InferenceModelReconciler) catchUp(ctx context.Context, model *v1alpha1.InferenceModel) error {
	key := client.ObjectKeyFromObject(model)
	if v, ok := r.seen.Load(key); !ok || v.(seenVersion).uid != model.UID || v.(seenVersion).resourceVersion == model.ResourceVersion {
		r.saw(model)
		return nil
	}
	if err := r.reader.Get(ctx, key, model); err != nil {
		return fmt.Errorf("get InferenceModel %s: %w", key, err)
	}
	r.saw(model)
	return nil
}

type seenVersion struct {
	uid             types.UID
	resourceVersion string
}

// saw records the newest version of model this controller knows.
func (r *InferenceModelReconciler) saw(model *v1alpha1.InferenceModel) {
	r.seen.Store(client.ObjectKeyFromObject(model), seenVersion{uid: model.UID, resourceVersion: model.ResourceVersion})
}
