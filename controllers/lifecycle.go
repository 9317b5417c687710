package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	kptr "k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/api/v1alpha1"
)

// phase is one step of a reconcile pass. It records what it finds in the
// scope; an error stops the pass, and the deferred status patch reports it.
type phase[S any] func(ctx context.Context, s S) (ctrl.Result, error)

// runPhases runs phases in order and returns the soonest requeue any asked
// for, and the error that stopped them.
func runPhases[S any](ctx context.Context, s S, phases []phase[S]) (ctrl.Result, error) {
	var result ctrl.Result
	for _, p := range phases {
		res, err := p(ctx, s)
		result = soonest(result, res)
		if err != nil {
			return result, err
		}
	}
	return result, nil
}

// passScope is the scope of one reconcile pass of any kind: its outcome
// is what the status patch reports.
type passScope interface{ result() *outcome }

// runPass runs the phases of one pass in ctx, then patch, once, in a
// context of its own derived from parent: the pass may have used up its
// deadline, and reporting why must not. A failed phase becomes the
// outcome's failure, retried or rechecked after interval as afterFailure
// says.
func runPass[S passScope](parent, ctx context.Context, s S, phases []phase[S], patch func(context.Context, S) error, interval, retry time.Duration) (result ctrl.Result, retErr error) {
	defer func() {
		ctx, cancel := statusContext(parent)
		defer cancel()
		if err := patch(ctx, s); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	result, err := runPhases(ctx, s, phases)
	if err != nil {
		f := asFailure(err)
		s.result().failure = f
		return afterFailure(f, result, interval, retry)
	}
	return result, nil
}

func soonest(a, b ctrl.Result) ctrl.Result {
	if a.RequeueAfter == 0 || (b.RequeueAfter > 0 && b.RequeueAfter < a.RequeueAfter) {
		a.RequeueAfter = b.RequeueAfter
	}
	return a
}

// afterFailure is what Reconcile returns once a phase failed: a stalled
// object is looked at again after its interval (a tag may be pushed), a
// registry failure after the retry interval, and an API error goes back to
// controller-runtime for its backoff.
func afterFailure(f *failure, result ctrl.Result, interval, retry time.Duration) (ctrl.Result, error) {
	switch {
	case f.stalled:
		return ctrl.Result{RequeueAfter: interval}, nil
	case f.reason == ReasonReconcileFailed:
		return ctrl.Result{}, f.err
	}
	return soonest(result, ctrl.Result{RequeueAfter: min(retry, interval)}), nil
}

// minInterval is the schema's floor of spec.interval, held here too for
// objects stored before the schema had it.
const minInterval = 30 * time.Second

// intervalOf is spec.interval, 5 minutes when unset (the CRD defaults it),
// never below minInterval.
func intervalOf(d *metav1.Duration) time.Duration {
	if d == nil || d.Duration <= 0 {
		return 5 * time.Minute
	}
	return max(d.Duration, minInterval)
}

// resolveDue says whether this pass asks the registry again, and otherwise
// how long until it must. Between intervals, passes that NodeArtifacts or
// Nodes trigger work from status.resolved and cost the registry nothing.
func resolveDue(generation, observed int64, resolved *v1alpha1.ResolvedArtifact, conds []metav1.Condition, interval time.Duration, now time.Time) (bool, time.Duration) {
	if resolved == nil || resolved.Digest == "" || resolved.ResolvedAt == nil || observed != generation {
		return true, 0
	}
	// Stalled needs a fix, so every pass looks again; a held version only
	// changes with new metrics or tags, which the interval picks up.
	if c := apimeta.FindStatusCondition(conds, v1alpha1.StalledCondition); c != nil && c.Status == metav1.ConditionTrue && !heldReason(c.Reason) {
		return true, 0
	}
	if c := apimeta.FindStatusCondition(conds, v1alpha1.ReconcilingCondition); c != nil && c.Reason == ReasonProgressingWithRetry {
		return true, 0
	}
	elapsed := now.Sub(resolved.ResolvedAt.Time)
	if elapsed >= interval || elapsed < 0 {
		return true, 0
	}
	return false, interval - elapsed
}

// shortDigest is the first 12 hex characters of a digest, as kubectl shows it.
func shortDigest(d string) string {
	_, hex, _ := strings.Cut(d, ":")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// shortText names a digest for people: sha256:<12 hex>.
func shortText(d string) string { return "sha256:" + shortDigest(d) }

// versionText names a resolution for people: "1.0.0 (sha256:abcdef123456)".
func versionText(r *v1alpha1.ResolvedArtifact) string {
	if r == nil {
		return ""
	}
	if r.Version == "" {
		return shortText(r.Digest)
	}
	return fmt.Sprintf("%s (sha256:%s)", r.Version, shortDigest(r.Digest))
}

// addFinalizer puts the cleanup finalizer on obj before anything is created
// for it.
func addFinalizer(ctx context.Context, c client.Client, obj client.Object) error {
	if controllerutil.ContainsFinalizer(obj, CleanupFinalizer) {
		return nil
	}
	before := obj.DeepCopyObject().(client.Object)
	controllerutil.AddFinalizer(obj, CleanupFinalizer)
	if err := c.Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("add finalizer %s: %w", CleanupFinalizer, err)
	}
	return nil
}

// removeFinalizer lets the API server delete obj.
func removeFinalizer(ctx context.Context, c client.Client, obj client.Object) error {
	before := obj.DeepCopyObject().(client.Object)
	controllerutil.RemoveFinalizer(obj, CleanupFinalizer)
	if err := c.Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer %s: %w", CleanupFinalizer, err)
	}
	return nil
}

// statusPatchTimeout is what the status patch of a pass gets, after a pass
// that may have used up its --reconcile-timeout.
const statusPatchTimeout = 15 * time.Second

// statusContext is a context for the status patch at the end of a pass: not
// cancelled with the pass, bounded on its own.
func statusContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), statusPatchTimeout)
}

// finishDeletion is the deletion of every owner of NodeArtifacts: it deletes
// them (and, with also, whatever else the owner made), and lets the owner go
// once every puller has removed its files. While it waits, report writes
// what it waits for into the owner's status, which is patched.
func finishDeletion(ctx context.Context, c client.Client, pl *placer, owner client.Object, kind string, grace time.Duration,
	also func(context.Context) error, report func(deletionState)) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(owner, CleanupFinalizer) {
		return ctrl.Result{}, nil
	}
	waiting, err := pl.remove(ctx, owner, kind)
	if err != nil {
		return ctrl.Result{}, err
	}
	if also != nil {
		if err := also(ctx); err != nil {
			return ctrl.Result{}, err
		}
	}
	if len(waiting) == 0 {
		return ctrl.Result{}, removeFinalizer(ctx, c, owner)
	}
	st, err := pl.settleDeletion(ctx, owner, kind, grace, time.Now())
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(st.waiting) == 0 {
		// All released: the NodeArtifacts' deletion wakes the next pass.
		return ctrl.Result{RequeueAfter: deletionWait}, nil
	}
	before := owner.DeepCopyObject().(client.Object)
	report(st)
	if err := c.Status().Patch(ctx, owner, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	wait := deletionWait
	if st.next > 0 {
		wait = min(wait, st.next)
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// deletionWait is how often a deletion looks again for NodeArtifacts that
// pullers have not yet released, besides the watch events that wake it.
const deletionWait = 10 * time.Second

// waitingMessage says which nodes a deletion waits for.
func waitingMessage(waiting []string) string {
	shown := waiting
	if len(shown) > 5 {
		shown = append(shown[:5:5], "...")
	}
	return fmt.Sprintf("deleting: waiting for the pullers of %d node(s) to remove the files: %s", len(waiting), strings.Join(shown, ", "))
}

// forObjectChanges lets a user's object through when its spec changes, it is
// being deleted, or an annotation (such as a requested reconcile) changes;
// the controller's own status patches do not wake it again.
func forObjectChanges() predicate.Predicate {
	deleting := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectNew.GetDeletionTimestamp() != nil
	}}
	return predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, deleting)
}

// nodeArtifactChanges lets a NodeArtifact event through when it matters to
// its owner: a new phase or digest, a failure message, a deletion. Progress
// updates (bytesDone every second) do not.
func nodeArtifactChanges() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*v1alpha1.NodeArtifact)
		n, ok2 := e.ObjectNew.(*v1alpha1.NodeArtifact)
		if !ok1 || !ok2 {
			return true
		}
		// Labels too: a NodeArtifact relabelled by hand is set back at once,
		// before its puller takes it for deleted.
		return o.Generation != n.Generation || !labels.Equals(o.Labels, n.Labels) || o.Status.Phase != n.Status.Phase || o.Status.Digest != n.Status.Digest ||
			(n.Status.Phase == v1alpha1.NodeArtifactFailed && o.Status.Message != n.Status.Message) ||
			o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero() || len(o.Finalizers) != len(n.Finalizers)
	}}
}

// nodeChanges lets a Node event through when placement or peers may
// change: a node added, deleted, relabelled, or (when the cache has it)
// given another InternalIP. Heartbeats and status do not.
func nodeChanges() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !labels.Equals(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
				e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero() ||
				internalIP(e.ObjectOld) != internalIP(e.ObjectNew)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// requestsForNode are the objects of kind that a change of node concerns:
// those whose selector matches it now (matching), and those that have a
// NodeArtifact on it, which may have to go.
func requestsForNode(ctx context.Context, c client.Reader, kind string, node client.Object, matching []types.NamespacedName) []reconcile.Request {
	seen := map[types.NamespacedName]bool{}
	var out []reconcile.Request
	add := func(k types.NamespacedName) {
		if !seen[k] {
			seen[k] = true
			out = append(out, reconcile.Request{NamespacedName: k})
		}
	}
	for _, k := range matching {
		add(k)
	}
	var nas v1alpha1.NodeArtifactList
	if err := c.List(ctx, &nas, client.MatchingLabels{v1alpha1.NodeLabel: labelValue(node.GetName()), OwnerKindLabel: kind}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list NodeArtifacts of node", "node", node.GetName())
		return out
	}
	for i := range nas.Items {
		if ref := metav1.GetControllerOf(&nas.Items[i]); ref != nil && ref.Kind == kind {
			add(types.NamespacedName{Namespace: nas.Items[i].Namespace, Name: ref.Name})
		}
	}
	return out
}

// selects says whether a nodeSelector matches a node's labels.
func selects(selector map[string]string, node client.Object) bool {
	return labels.SelectorFromSet(selector).Matches(labels.Set(node.GetLabels()))
}

// resolveFacts are what the resolve step records, the same for every kind.
type resolveFacts struct {
	src      source
	repo     *remote.Repository
	interval time.Duration
	// due: this pass asked the registry; wait is how long until the next.
	due  bool
	wait time.Duration
	res  resolution
	// newDigest: the resolution differs from the one in status.
	newDigest bool
	// failedIn names the step that failed, for the event's reason.
	failedIn string
	// verify is the object's spec.verify: a resolved digest rolls out only
	// with a signature it trusts.
	verify *v1alpha1.VerifySpec
	// rejected are digests a rollout gave up on (status.history RolledBack
	// entries of the current generation), digest to reason: resolution
	// never chooses them again; a range passes over them, a tag that names
	// one keeps the previous digest.
	rejected map[string]string
	// selection is the object's spec.selection, if it has one (select.go).
	selection *v1alpha1.SelectionSpec
	// choiceReason says why res was chosen, for status.resolved.reason.
	choiceReason string
	// held: the version asked for may not roll out (spec.selection or a
	// rollback refused it); res is the running digest, kept, and held says
	// why.
	held *failure
}

// resolveStep turns the object's target version into a digest when the
// interval has passed or the spec changed; otherwise it keeps the digest in
// status and costs the registry nothing.
func (f *resolveFacts) resolveStep(ctx context.Context, rs *Resolver, generation, observed int64, resolved *v1alpha1.ResolvedArtifact, conds []metav1.Condition) (ctrl.Result, error) {
	// Every pass, not only those that ask the registry: an allow-list set
	// after an object was resolved stops it at once.
	if err := rs.checkAllowed(f.src); err != nil {
		f.failedIn = ReasonResolveFailed
		return ctrl.Result{}, err
	}
	// A hold lasts until the next resolution says otherwise.
	f.held = heldBefore(conds)
	f.due, f.wait = resolveDue(generation, observed, resolved, conds, f.interval, time.Now())
	if !f.due {
		f.res = resolutionOf(resolved)
		return ctrl.Result{RequeueAfter: f.wait}, nil
	}
	repo, err := rs.open(ctx, f.src)
	if err != nil {
		f.failedIn = ReasonResolveFailed
		return ctrl.Result{}, err
	}
	f.repo = repo
	before := f.held
	f.held = nil
	res, err := f.choose(ctx, rs, resolved, generation != observed)
	if err != nil {
		if generation == observed {
			f.held = before // a registry that failed this time changed nothing
		}
		f.failedIn = ReasonResolveFailed
		return ctrl.Result{}, err
	}
	// A held digest is the running one, verified when it was chosen.
	if f.verify != nil && f.held == nil {
		if err := rs.verify(ctx, repo, f.src, f.verify, res.Descriptor); err != nil {
			f.failedIn = ReasonVerificationFailed
			return ctrl.Result{}, err
		}
	}
	f.res = res
	f.newDigest = resolved == nil || resolved.Digest != res.Descriptor.Digest.String()
	return ctrl.Result{RequeueAfter: f.interval}, nil
}

// ForceDeleteAnnotation, set to "true" on an InferenceModel or Dataset being
// deleted, finishes the deletion without the pullers that have not removed
// their files: the controller releases the files finalizer of the remaining
// NodeArtifacts. Their files stay on those nodes.
const ForceDeleteAnnotation = "barge.dev/force-delete"

// forced: the user asked to finish obj's deletion without its pullers.
func forced(obj client.Object) bool {
	return obj.GetAnnotations()[ForceDeleteAnnotation] == "true"
}

// deletionState is what a deletion waits for, after settleDeletion released
// what it need no longer wait for.
type deletionState struct {
	// waiting are the nodes whose pullers still have files to remove.
	waiting []string
	// notReady are waiting nodes whose Node is NotReady; each is released
	// once the grace period has passed.
	notReady []string
	// overdue are Ready nodes whose pullers have not removed the files
	// within the grace period: only the user can decide to go on.
	overdue []string
	// next is how soon something changes by the clock alone.
	next time.Duration
}

// settleDeletion looks at the NodeArtifacts of an owner being deleted: it
// releases all of them when the user forces the deletion, and those of
// NotReady nodes once grace has passed since their deletion; it reports the
// rest. A Node is read uncached, so the controller holds no cache of Node
// status.
func (pl *placer) settleDeletion(ctx context.Context, owner client.Object, kind string, grace time.Duration, now time.Time) (deletionState, error) {
	var st deletionState
	existing, err := pl.owned(ctx, owner, kind)
	if err != nil {
		return st, err
	}
	force := forced(owner)
	for _, na := range existing {
		if na.DeletionTimestamp == nil || !controllerutil.ContainsFinalizer(na, v1alpha1.FilesFinalizer) {
			continue
		}
		node := na.Spec.NodeName
		if force {
			if err := pl.releaseFiles(ctx, na, ForceDeleteAnnotation+" on "+kind+" "+owner.GetName()); err != nil {
				return st, err
			}
			continue
		}
		notReady, err := pl.nodeNotReady(ctx, node)
		if err != nil {
			return st, err
		}
		left := grace - now.Sub(na.DeletionTimestamp.Time)
		if notReady && left <= 0 {
			if err := pl.releaseFiles(ctx, na, fmt.Sprintf("node %s is NotReady past the grace period of %s", node, grace)); err != nil {
				return st, err
			}
			continue
		}
		st.waiting = append(st.waiting, node)
		switch {
		case notReady:
			st.notReady = append(st.notReady, node)
		case left <= 0:
			st.overdue = append(st.overdue, node)
		}
		if left > 0 && (st.next == 0 || left < st.next) {
			st.next = left
		}
	}
	slices.Sort(st.waiting)
	slices.Sort(st.notReady)
	slices.Sort(st.overdue)
	return st, nil
}

// nodeNotReady: the Node's Ready condition is False or Unknown. A node that
// never reported one is not taken for NotReady.
func (pl *placer) nodeNotReady(ctx context.Context, name string) (bool, error) {
	var node corev1.Node
	if err := pl.reader.Get(ctx, client.ObjectKey{Name: name}, &node); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("get node %s: %w", name, err)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status != corev1.ConditionTrue, nil
		}
	}
	return false, nil
}

// releaseFiles removes the files finalizer of a NodeArtifact whose puller
// will not: the API server then deletes it.
func (pl *placer) releaseFiles(ctx context.Context, na *v1alpha1.NodeArtifact, why string) error {
	before := na.DeepCopy()
	controllerutil.RemoveFinalizer(na, v1alpha1.FilesFinalizer)
	if err := pl.client.Patch(ctx, na, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer %s of NodeArtifact %s (%s): %w", v1alpha1.FilesFinalizer, na.Name, why, err)
	}
	ctrl.LoggerFrom(ctx).Info("released NodeArtifact without its puller", "nodeArtifact", na.Name, "node", na.Spec.NodeName, "why", why)
	return nil
}

// deletionConditions says what a deletion waits for: Ready=False Deleting
// always, and Stalled while a Ready node's puller is overdue, since only the
// user can decide to go on without it.
func deletionConditions(conds *[]metav1.Condition, generation int64, kind, name string, st deletionState, grace time.Duration) {
	msg := waitingMessage(st.waiting)
	if len(st.notReady) > 0 {
		msg += fmt.Sprintf("; NotReady: %s, released once they have been waited for %s (--deletion-grace-period)", listNodes(st.notReady), grace)
	}
	hint := fmt.Sprintf("if those nodes will not come back, finish without them with `kubectl annotate %s %s %s=true` (their files stay on the nodes)", strings.ToLower(kind), name, ForceDeleteAnnotation)
	set := func(t string, s metav1.ConditionStatus, reason, m string) {
		apimeta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: s, Reason: reason, Message: m, ObservedGeneration: generation})
	}
	if len(st.overdue) > 0 {
		msg += fmt.Sprintf("; blocked for more than %s by %s, whose Node is Ready but whose puller has not removed the files; %s", grace, listNodes(st.overdue), hint)
		set(v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonDeleting, msg)
		set(v1alpha1.StalledCondition, metav1.ConditionTrue, ReasonDeletionBlocked, msg)
		apimeta.RemoveStatusCondition(conds, v1alpha1.ReconcilingCondition)
		return
	}
	if len(st.notReady) > 0 {
		msg += "; " + hint
	}
	set(v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonDeleting, msg)
	set(v1alpha1.ReconcilingCondition, metav1.ConditionTrue, ReasonDeleting, msg)
	apimeta.RemoveStatusCondition(conds, v1alpha1.StalledCondition)
}

// controllerOptions are the work queue and workers of each controller.
//
// The queue is first in, first out, not controller-runtime's priority
// queue: that one gives every object of the informer's initial list a low
// priority, kept by its requeues, and serves it only when no
// normal-priority item is ready. During a 1,000-model rollout the
// NodeArtifact events and interval requeues of the models seen later never
// stop, so the models created before the controller's cache had synced (or
// all of them after a restart) waited for minutes with no pass, no status
// and nothing logged: the stuck-unresolved run of issue 12 (170 of 1,000
// models in a rollout of this branch before the change, every one with an
// empty status and queued at priority -100).
func controllerOptions(o Options) controller.Options {
	return controller.Options{
		MaxConcurrentReconciles: o.MaxConcurrentReconciles,
		RateLimiter:             retryLimiter(),
		UsePriorityQueue:        kptr.To(false),
	}
}

// retryLimiter paces the retries of passes that failed on an API error:
// per object, 100 ms doubling up to a minute. controller-runtime's default
// adds a bucket of 10 retries a second shared by every object, whose
// reservations pile up when many objects fail at once (an API server that
// answers 429 or times out under a 1,000-model rollout): each failure then
// waits behind all the others, and a model could sit minutes unresolved,
// with no pass to say why. The client's --kube-api-qps already bounds what
// the controller sends.
func retryLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](100*time.Millisecond, maxRetryDelay)
}

// maxRetryDelay is the longest an object waits to be retried after an API
// error.
const maxRetryDelay = time.Minute
