package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/edgepuller/agent"
)

// entry is one NodeArtifact's status on its way to the API server: only the
// latest is kept, so a link that was down sends one patch per object, not
// the history.
type entry struct {
	s       agent.Status // the latest reported
	pending bool         // s is not sent yet
	sent    transition   // what the last patch said
	sentAt  time.Time
	// since is when the artifact last entered an unfinished phase (Pending
	// or Pulling) from a finished one or from nothing; zero while finished.
	// An unfinished status waits ProgressEvery from then, so a quick pull
	// sends only its Ready.
	since time.Time
}

// unfinished phases are passing states: worth a patch only when they last.
func unfinished(p agent.Phase) bool { return p == agent.Pending || p == agent.Pulling }

// transition is what makes a status worth sending at once; a change of the
// byte counts alone waits for ProgressEvery.
type transition struct {
	reference, path, message string
	phase                    agent.Phase
	digest                   digest.Digest
	upload                   uploadTransition
}

type uploadTransition struct {
	round   int
	phase   agent.UploadPhase
	digest  digest.Digest
	message string
}

func transitionOf(s agent.Status) transition {
	u := s.Upload
	return transition{reference: s.Reference, path: s.Path, message: s.Message, phase: s.Phase, digest: s.Digest,
		upload: uploadTransition{round: u.Round, phase: u.Phase, digest: u.Digest, message: u.Message}}
}

// Report queues s for its NodeArtifact's status. It never blocks on the
// network.
func (n *Node) Report(s agent.Status) {
	if !strings.Contains(s.Name, "/") {
		return // not a NodeArtifact's name
	}
	n.mu.Lock()
	e := n.queue[s.Name]
	if e == nil {
		e = &entry{}
		n.queue[s.Name] = e
	}
	switch {
	case !unfinished(s.Phase):
		e.since = time.Time{}
	case e.since.IsZero():
		e.since = time.Now()
	}
	e.s, e.pending = s, true
	n.mu.Unlock()
	n.signal(n.kick)
}

// send patches what is due until ctx ends, backing off while the API server
// cannot be reached.
func (n *Node) send(ctx context.Context) {
	failures := 0
	for {
		next, err := n.flush(ctx)
		if ctx.Err() != nil {
			return
		}
		kick := n.kick
		if err != nil {
			failures++
			next = n.opts.Backoff(failures)
			kick = nil // new reports only replace queued ones until the link is back
			if failures == 1 || failures%20 == 0 {
				n.log.Warn("cannot send NodeArtifact status; keeping the latest of each until the API server answers", "err", err)
			} else {
				n.log.Debug("cannot send NodeArtifact status", "err", err, "attempt", failures)
			}
		} else if failures > 0 {
			n.log.Info("NodeArtifact status sent again", "failures", failures)
			failures = 0
		}
		var timer <-chan time.Time
		var t *time.Timer
		if next >= 0 {
			t = time.NewTimer(next)
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-kick:
		case <-n.up:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
	}
}

// job is one request flush makes.
type job struct {
	name    string
	na      *v1alpha1.NodeArtifact // a copy
	release bool                   // remove the finalizer; else patch s
	s       agent.Status
	// shadow: na is not the owner of name's directory (Node.own); it has
	// no files and no queue entry.
	shadow bool
}

// flush sends what is due: finalizers to release, then statuses. It returns
// when something next falls due (< 0: nothing), or the error that stopped it
// when the API server could not be reached.
func (n *Node) flush(ctx context.Context) (time.Duration, error) {
	now := time.Now()
	next := time.Duration(-1)
	due := func(d time.Duration) {
		if next < 0 || d < next {
			next = d
		}
	}
	var jobs []job
	n.mu.Lock()
	if n.listed.IsZero() {
		n.mu.Unlock()
		return -1, nil // nothing is known of the objects yet
	}
	for name, na := range n.objects {
		if na.DeletionTimestamp == nil || n.delivered[name] || n.released[string(na.UID)] || !slices.Contains(na.Finalizers, v1alpha1.FilesFinalizer) {
			continue
		}
		switch {
		case n.removed[name]:
		case n.ever[name]:
			continue // the agent has it: wait for Removed
		default:
			// Deleted before this process listed it: the agent may still be
			// pulling it from its persisted list, and says Removed when it
			// drops it. If it never had it, there is nothing to wait for.
			if wait := n.opts.UnknownGrace - now.Sub(n.listed); wait > 0 {
				due(wait)
				continue
			}
		}
		jobs = append(jobs, job{name: name, na: na.DeepCopy(), release: true})
	}
	for name, e := range n.queue {
		if !e.pending {
			continue
		}
		na := n.objects[name]
		switch {
		case na == nil:
			delete(n.queue, name) // the object is gone
			continue
		case e.s.Reference != na.Spec.Reference || (e.s.Upload.Round != 0 && e.s.Upload.Round != uploadRound(na)):
			e.pending = false // from a worker for a spec that has changed since
			continue
		}
		if wait := n.wait(e, now); wait > 0 {
			due(wait)
			continue
		}
		jobs = append(jobs, job{name: name, na: na.DeepCopy(), s: e.s})
	}
	for uid, na := range n.shadowed {
		name := Name(na)
		if na.DeletionTimestamp != nil {
			if !n.released[string(uid)] && slices.Contains(na.Finalizers, v1alpha1.FilesFinalizer) {
				jobs = append(jobs, job{name: name, na: na.DeepCopy(), release: true, shadow: true})
			}
			continue
		}
		msg := fmt.Sprintf("directory %s belongs to NodeArtifact %s, which names the same spec.artifactName; "+
			"this one is not pulled: delete it, or give it an artifactName of its own", name, n.objects[name].Name)
		if na.Status.Phase != v1alpha1.NodeArtifactFailed || na.Status.Message != msg {
			jobs = append(jobs, job{name: name, na: na.DeepCopy(), shadow: true,
				s: agent.Status{Name: name, Reference: na.Spec.Reference, Phase: agent.Failed, Message: msg}})
		}
	}
	n.mu.Unlock()

	slices.SortFunc(jobs, func(a, b job) int { return strings.Compare(a.name, b.name) })
	for _, j := range jobs {
		var err error
		if j.release {
			err = n.release(ctx, j.name, j.na, j.shadow)
		} else {
			j = n.latest(j)
			err = n.patchStatus(ctx, j.name, j.na, j.s, j.shadow)
		}
		if err != nil {
			return 0, err
		}
	}
	return next, nil
}

// wait is how long e's status waits before it is sent. A finished phase
// (Ready, Failed) goes at once; an unfinished one waits ProgressEvery from
// when the artifact entered it, and then from the last patch; a change of
// the byte counts alone waits ProgressEvery from the last patch.
func (n *Node) wait(e *entry, now time.Time) time.Duration {
	at := time.Time{}
	switch {
	case unfinished(e.s.Phase):
		at = e.since.Add(n.opts.ProgressEvery)
		if t := e.sentAt.Add(n.opts.ProgressEvery); t.After(at) {
			at = t
		}
	case transitionOf(e.s) == e.sent:
		at = e.sentAt.Add(n.opts.ProgressEvery)
	}
	return at.Sub(now)
}

// latest is j with the newest finished status of its NodeArtifact, if one
// was reported since flush took j: while a long queue of patches drains at
// the client's rate, a Ready supersedes the Pending or Pulling queued
// before it instead of following it.
func (n *Node) latest(j job) job {
	if j.shadow {
		return j
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e, na := n.queue[j.name], n.objects[j.name]
	if e == nil || !e.pending || na == nil || na.UID != j.na.UID || unfinished(e.s.Phase) || e.s.Equal(j.s) {
		return j
	}
	if e.s.Reference != na.Spec.Reference || (e.s.Upload.Round != 0 && e.s.Upload.Round != uploadRound(na)) {
		return j
	}
	j.na, j.s = na.DeepCopy(), e.s
	return j
}

// patchStatus sends s as na's status, unless na already says it.
func (n *Node) patchStatus(ctx context.Context, name string, na *v1alpha1.NodeArtifact, s agent.Status, shadow bool) error {
	st := statusOf(na, s)
	done := func(updated *v1alpha1.NodeArtifact) {
		n.mu.Lock()
		defer n.mu.Unlock()
		// The answer is the object as the patch left it, unless the watch
		// has brought a newer one meanwhile (a new spec): going back to
		// the older would drop the reports for the newer spec as stale.
		if cur := n.all[na.UID]; updated != nil && cur != nil && cur.ResourceVersion == na.ResourceVersion {
			n.all[updated.UID] = updated
			if cur := n.objects[name]; cur != nil && cur.UID == updated.UID {
				n.objects[name] = updated
			}
			if n.shadowed[updated.UID] != nil {
				n.shadowed[updated.UID] = updated
			}
		}
		if shadow {
			return
		}
		if e := n.queue[name]; e != nil {
			e.sent, e.sentAt = transitionOf(s), time.Now()
			if e.s.Equal(s) {
				e.pending = false
			}
		}
	}
	if equality.Semantic.DeepEqual(na.Status, st) {
		done(nil) // a restart re-reports what the server has
		return nil
	}
	body, err := json.Marshal(map[string]any{"status": statusPatch(st)})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	updated := &v1alpha1.NodeArtifact{}
	err = n.rc.Patch(types.MergePatchType).Namespace(na.Namespace).Resource("nodeartifacts").Name(na.Name).
		SubResource("status").Body(body).Do(pctx).Into(updated)
	switch {
	case err == nil:
		done(updated)
		return nil
	case apierrors.IsNotFound(err):
		if !shadow {
			n.mu.Lock()
			delete(n.queue, name)
			n.mu.Unlock()
		}
		return nil
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err):
		// Sending it again would be refused again, and would hold the
		// statuses queued behind it. Forbidden is the chart's policy or
		// RBAC: the operator must see it.
		n.log.Error("the API server refused a NodeArtifact status", "nodeartifact", name, "err", err)
		done(nil)
		return nil
	}
	return fmt.Errorf("patch status of NodeArtifact %s: %w", name, err)
}

// maxMessage keeps a message within what the CRD accepts for a condition.
const maxMessage = 32768

// maxUploadMessage is what the CRD accepts for status.upload.message.
const maxUploadMessage = 1024

func truncate(s string) string { return truncateTo(s, maxMessage) }

func truncateTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// uploadRound is the round whose upload na asks for, 0 for none.
func uploadRound(na *v1alpha1.NodeArtifact) int {
	if na.Spec.Upload == nil {
		return 0
	}
	return int(na.Spec.Upload.Round)
}

// statusOf is na's status as s describes it.
func statusOf(na *v1alpha1.NodeArtifact, s agent.Status) v1alpha1.NodeArtifactStatus {
	st := v1alpha1.NodeArtifactStatus{
		ObservedGeneration: na.Generation,
		Phase:              v1alpha1.NodeArtifactPhase(s.Phase),
		Digest:             s.Digest.String(),
		Path:               s.Path,
		BytesDone:          s.BytesDone,
		BytesTotal:         s.BytesTotal,
		Message:            truncate(s.Message),
	}
	for _, c := range na.Status.Conditions {
		st.Conditions = append(st.Conditions, *c.DeepCopy())
	}
	ready := metav1.Condition{Type: v1alpha1.ReadyCondition, Status: metav1.ConditionFalse, Reason: string(s.Phase), ObservedGeneration: na.Generation}
	switch s.Phase {
	case agent.Ready:
		ready.Status = metav1.ConditionTrue
		ready.Message = fmt.Sprintf("%s is in %s", s.Digest, s.Path)
		if s.Message != "" {
			ready.Message += "; " + s.Message
		}
	case agent.Pulling:
		ready.Message = "pulling " + na.Spec.Digest
	default:
		ready.Message = s.Message
	}
	ready.Message = truncate(ready.Message)
	st.Sources, st.DroppedPeers = sourcesOf(na, s)
	if u := s.Upload; u.Round > 0 {
		st.Upload = &v1alpha1.UploadStatus{Round: int32(u.Round), Phase: v1alpha1.UploadPhase(u.Phase), Digest: u.Digest.String(),
			Samples: u.Samples, BytesDone: u.BytesDone, BytesTotal: u.BytesTotal, Message: truncateTo(u.Message, maxUploadMessage)}
	}
	meta.SetStatusCondition(&st.Conditions, ready)
	// Reconciling and Stalled are there only while true, for kstatus.
	setOnly := func(typ string, on bool, reason, msg string) {
		if !on {
			meta.RemoveStatusCondition(&st.Conditions, typ)
			return
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: metav1.ConditionTrue,
			Reason: reason, Message: truncate(msg), ObservedGeneration: na.Generation})
	}
	setOnly(v1alpha1.ReconcilingCondition, s.Phase == agent.Pending || s.Phase == agent.Pulling, string(s.Phase), ready.Message)
	setOnly(v1alpha1.StalledCondition, s.Phase == agent.Failed, "PullFailed", s.Message)
	if len(st.Conditions) == 0 {
		st.Conditions = nil
	}
	return st
}

// maxDroppedMessage is what the CRD accepts for a dropped peer's message.
const maxDroppedMessage = 512

// sourcesOf is what status.sources and status.droppedPeers say: the
// agent's last pull. A puller that restarted has pulled nothing yet and
// says nothing: while the version the last pull brought is still the one
// Ready, its record stays; anything else clears it.
func sourcesOf(na *v1alpha1.NodeArtifact, s agent.Status) (*v1alpha1.ByteSources, []v1alpha1.DroppedPeer) {
	if s.Sources == nil {
		if s.Phase == agent.Ready && na.Status.Phase == v1alpha1.NodeArtifactReady && na.Status.Digest == s.Digest.String() {
			return na.Status.Sources.DeepCopy(), slices.Clone(na.Status.DroppedPeers)
		}
		return nil, nil
	}
	src := &v1alpha1.ByteSources{Origin: s.Sources.Origin, Peers: s.Sources.Peers, Mirrors: s.Sources.Mirrors}
	var dropped []v1alpha1.DroppedPeer
	for _, d := range s.DroppedPeers[:min(len(s.DroppedPeers), v1alpha1.MaxPeers)] {
		dropped = append(dropped, v1alpha1.DroppedPeer{Node: d.Node, Reason: d.Reason, Message: truncateTo(d.Message, maxDroppedMessage)})
	}
	return src, dropped
}

// statusPatch is st as a JSON merge patch: empty fields are null, so that
// they are cleared rather than left as they were.
func statusPatch(st v1alpha1.NodeArtifactStatus) map[string]any {
	orNull := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	conds := st.Conditions
	if conds == nil {
		conds = []metav1.Condition{}
	}
	return map[string]any{
		"observedGeneration": st.ObservedGeneration,
		"phase":              orNull(string(st.Phase)),
		"digest":             orNull(st.Digest),
		"path":               orNull(st.Path),
		"bytesDone":          st.BytesDone,
		"bytesTotal":         st.BytesTotal,
		"message":            orNull(st.Message),
		"upload":             uploadPatch(st.Upload),
		"sources":            sourcesPatch(st.Sources),
		"droppedPeers":       droppedPatch(st.DroppedPeers),
		"conditions":         conds,
	}
}

// release removes the files finalizer from na, whose files are gone (or,
// shadowed, never were its own). The patch carries na's resourceVersion, so
// a concurrent change of the finalizers makes it fail with a conflict
// instead of undoing that change; then it reads the object again and retries.
func (n *Node) release(ctx context.Context, name string, na *v1alpha1.NodeArtifact, shadow bool) error {
	if _, err := os.Lstat(n.opts.ArtifactDir(name)); !shadow && !errors.Is(err, fs.ErrNotExist) {
		n.log.Debug("NodeArtifact being deleted still has a directory; keeping its finalizer", "nodeartifact", name, "err", err)
		return nil
	}
	uid := na.UID
	for attempt := 1; ; attempt++ {
		kept := slices.DeleteFunc(slices.Clone(na.Finalizers), func(f string) bool { return f == v1alpha1.FilesFinalizer })
		if len(kept) == len(na.Finalizers) {
			break
		}
		if kept == nil {
			kept = []string{}
		}
		body, err := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": na.ResourceVersion, "finalizers": kept}})
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, requestTimeout)
		err = n.rc.Patch(types.MergePatchType).Namespace(na.Namespace).Resource("nodeartifacts").Name(na.Name).Body(body).Do(pctx).Error()
		cancel()
		if err == nil {
			n.log.Info("files removed; finalizer released", "nodeartifact", name, "finalizer", v1alpha1.FilesFinalizer)
			break
		}
		if apierrors.IsNotFound(err) {
			break
		}
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return fmt.Errorf("remove finalizer %s from NodeArtifact %s: %w", v1alpha1.FilesFinalizer, name, err)
		}
		gctx, cancel := context.WithTimeout(ctx, requestTimeout)
		fresh := &v1alpha1.NodeArtifact{}
		err = n.rc.Get().Namespace(na.Namespace).Resource("nodeartifacts").Name(na.Name).Do(gctx).Into(fresh)
		cancel()
		if apierrors.IsNotFound(err) || (err == nil && fresh.UID != uid) {
			break
		}
		if err != nil {
			return fmt.Errorf("read NodeArtifact %s to remove finalizer %s: %w", name, v1alpha1.FilesFinalizer, err)
		}
		na = fresh
	}
	n.mu.Lock()
	n.released[string(uid)] = true
	n.mu.Unlock()
	return nil
}

// sourcesPatch replaces status.sources whole, or clears it.
func sourcesPatch(s *v1alpha1.ByteSources) any {
	if s == nil {
		return nil
	}
	return map[string]any{"origin": s.Origin, "peers": s.Peers, "mirrors": s.Mirrors}
}

// droppedPatch replaces status.droppedPeers (a list is replaced whole by a
// merge patch), or clears it.
func droppedPatch(d []v1alpha1.DroppedPeer) any {
	if len(d) == 0 {
		return nil
	}
	return d
}

// uploadPatch replaces status.upload whole: a field the new status does
// not set, such as a digest from an earlier round, must not stay.
func uploadPatch(u *v1alpha1.UploadStatus) any {
	if u == nil {
		return nil
	}
	orNull := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	return map[string]any{
		"round":      u.Round,
		"phase":      orNull(string(u.Phase)),
		"digest":     orNull(u.Digest),
		"samples":    u.Samples,
		"bytesDone":  u.BytesDone,
		"bytesTotal": u.BytesTotal,
		"message":    orNull(u.Message),
	}
}
