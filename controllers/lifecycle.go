package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// intervalOf is spec.interval, 5 minutes when unset (the CRD defaults it).
func intervalOf(d *metav1.Duration) time.Duration {
	if d == nil || d.Duration <= 0 {
		return 5 * time.Minute
	}
	return d.Duration
}

// resolveDue says whether this pass asks the registry again, and otherwise
// how long until it must. Between intervals, passes that NodeArtifacts or
// Nodes trigger work from status.resolved and cost the registry nothing.
func resolveDue(generation, observed int64, resolved *v1alpha1.ResolvedArtifact, conds []metav1.Condition, interval time.Duration, now time.Time) (bool, time.Duration) {
	if resolved == nil || resolved.Digest == "" || resolved.ResolvedAt == nil || observed != generation {
		return true, 0
	}
	if apimeta.IsStatusConditionTrue(conds, v1alpha1.StalledCondition) {
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

// versionText names a resolution for people: "1.0.0 (sha256:abcdef123456)".
func versionText(r *v1alpha1.ResolvedArtifact) string {
	if r == nil {
		return ""
	}
	if r.Version == "" {
		return "sha256:" + shortDigest(r.Digest)
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

// nodeChanges lets a Node event through when placement may change: a node
// added, deleted, or relabelled. Heartbeats and status do not.
func nodeChanges() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !labels.Equals(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
				e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
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
}

// resolveStep turns the object's target version into a digest when the
// interval has passed or the spec changed; otherwise it keeps the digest in
// status and costs the registry nothing.
func (f *resolveFacts) resolveStep(ctx context.Context, rs *Resolver, generation, observed int64, resolved *v1alpha1.ResolvedArtifact, conds []metav1.Condition) (ctrl.Result, error) {
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
	res, err := rs.resolve(ctx, repo, f.src)
	if err != nil {
		f.failedIn = ReasonResolveFailed
		return ctrl.Result{}, err
	}
	if f.verify != nil {
		if err := rs.verify(ctx, repo, f.src, f.verify, res.Descriptor); err != nil {
			f.failedIn = ReasonVerificationFailed
			return ctrl.Result{}, err
		}
	}
	f.res = res
	f.newDigest = resolved == nil || resolved.Digest != res.Descriptor.Digest.String()
	return ctrl.Result{RequeueAfter: f.interval}, nil
}
