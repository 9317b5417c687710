package controllers

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"oras.land/oras-go/v2/registry/remote"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/bargeml/barge/api/v1alpha1"
)

// TrainingModelReconciler runs federated training: each round it puts the
// global model on the participants (NodeArtifacts that also ask their
// pullers to upload the update), runs a trainer Job on each, counts the
// uploaded updates and runs the aggregation Job that pushes the next
// global model.
type TrainingModelReconciler struct {
	client.Client
	// reader reads the TrainingModel uncached: its status is the history
	// of the rounds, which a pass must never rebuild from a stale copy.
	reader   client.Reader
	recorder recorder.EventRecorder
	resolver *Resolver
	placer   *placer
	opts     Options
}

// trainingScope is one reconcile pass of one TrainingModel.
type trainingScope struct {
	tm     *v1alpha1.TrainingModel
	before *v1alpha1.TrainingModel

	// src is spec.artifact at spec.targetVersion; out is spec.output.
	src, out        source
	repo, outRepo   *remote.Repository
	trainer         TrainerRuntime
	dataset         *v1alpha1.Dataset
	minParticipants int32
	roundTimeout    time.Duration
	events          []trainingEvent
	outcome         outcome
	failedIn        string
}

// trainingEvent is an event the pass decided on; patchStatus emits it.
type trainingEvent struct {
	eventType, reason, note string
}

func (s *trainingScope) event(eventType, reason, format string, args ...any) {
	s.events = append(s.events, trainingEvent{eventType, reason, fmt.Sprintf(format, args...)})
}

// trainingRecheck is how soon a stalled TrainingModel is looked at again
// without a change that wakes it.
const trainingRecheck = 5 * time.Minute

// Reconcile runs one pass; the deferred patchStatus writes its outcome.
func (r *TrainingModelReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, r.opts.ReconcileTimeout)
	defer cancel()
	tm := &v1alpha1.TrainingModel{}
	if err := r.reader.Get(ctx, req.NamespacedName, tm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tm.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, tm)
	}
	if err := addFinalizer(ctx, r.Client, tm); err != nil {
		return ctrl.Result{}, err
	}

	s := &trainingScope{tm: tm, before: tm.DeepCopy()}
	return runPass(parent, ctx, s, []phase[*trainingScope]{r.checkSpec, r.resolveInitial, r.train}, r.patchStatus, trainingRecheck, r.opts.RetryInterval)
}

func (s *trainingScope) result() *outcome { return &s.outcome }

// reconcileDelete deletes the TrainingModel's Jobs and NodeArtifacts, and
// lets the object go once every puller has removed its files.
func (r *TrainingModelReconciler) reconcileDelete(ctx context.Context, tm *v1alpha1.TrainingModel) (ctrl.Result, error) {
	grace := r.opts.DeletionGracePeriod
	also := func(ctx context.Context) error { return r.deleteJobs(ctx, tm, func(*batchv1.Job) bool { return true }) }
	return finishDeletion(ctx, r.Client, r.placer, tm, kindTrainingModel, grace, also, func(st deletionState) {
		deletionConditions(&tm.Status.Conditions, tm.Generation, kindTrainingModel, tm.Name, st, grace)
	})
}

// jobs lists the Jobs tm controls.
func (r *TrainingModelReconciler) jobs(ctx context.Context, tm *v1alpha1.TrainingModel) (map[string]*batchv1.Job, error) {
	var list batchv1.JobList
	if err := r.List(ctx, &list, client.InNamespace(tm.Namespace), client.MatchingLabels{trainingModelLabel: labelValue(tm.Name)}); err != nil {
		return nil, fmt.Errorf("list Jobs of TrainingModel %s/%s: %w", tm.Namespace, tm.Name, err)
	}
	out := map[string]*batchv1.Job{}
	for i := range list.Items {
		j := &list.Items[i]
		if metav1.IsControlledBy(j, tm) {
			out[j.Name] = j
		}
	}
	return out, nil
}

// deleteJobs deletes the Jobs of tm that which chooses, with their pods.
func (r *TrainingModelReconciler) deleteJobs(ctx context.Context, tm *v1alpha1.TrainingModel, which func(*batchv1.Job) bool) error {
	jobs, err := r.jobs(ctx, tm)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if j.DeletionTimestamp != nil || !which(j) {
			continue
		}
		if err := r.Delete(ctx, j, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete Job %s: %w", j.Name, err)
		}
	}
	return nil
}

// SetupWithManager watches TrainingModels, the NodeArtifacts and Jobs they
// own, the Datasets they train on, and Node labels.
func (r *TrainingModelReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("trainingmodel").
		For(&v1alpha1.TrainingModel{}, builder.WithPredicates(forObjectChanges())).
		Watches(&v1alpha1.NodeArtifact{}, ownerAfter(mgr, &v1alpha1.TrainingModel{}, r.opts.NodeReportDelay), builder.WithPredicates(predicate.Or(nodeArtifactChanges(), uploadChanges()))).
		Owns(&batchv1.Job{}).
		Watches(&v1alpha1.Dataset{}, handler.EnqueueRequestsFromMapFunc(r.forDataset)).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.forNode), nodeWatch(r.opts)...).
		WithOptions(controllerOptions(r.opts)).
		Complete(r)
}

// uploadChanges lets a NodeArtifact event through when its puller reports
// a new state of its upload: the moment a round may have all its updates.
func uploadChanges() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*v1alpha1.NodeArtifact)
		n, ok2 := e.ObjectNew.(*v1alpha1.NodeArtifact)
		if !ok1 || !ok2 {
			return true
		}
		a, b := o.Status.Upload, n.Status.Upload
		if a == nil || b == nil {
			return a != b
		}
		return a.Round != b.Round || a.Phase != b.Phase || a.Digest != b.Digest
	}}
}

// forDataset maps a Dataset event (its nodes becoming Ready) to the
// TrainingModels that train on it.
func (r *TrainingModelReconciler) forDataset(ctx context.Context, ds client.Object) []reconcile.Request {
	var list v1alpha1.TrainingModelList
	if err := r.List(ctx, &list, client.InNamespace(ds.GetNamespace())); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list TrainingModels for Dataset", "dataset", ds.GetName())
		return nil
	}
	var out []reconcile.Request
	for _, tm := range list.Items {
		if tm.Spec.Dataset != nil && tm.Spec.Dataset.Name == ds.GetName() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&tm)})
		}
	}
	return out
}

// forNode maps a Node event to the TrainingModels it concerns.
func (r *TrainingModelReconciler) forNode(ctx context.Context, node client.Object) []reconcile.Request {
	var list v1alpha1.TrainingModelList
	if err := r.List(ctx, &list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list TrainingModels for node", "node", node.GetName())
		return nil
	}
	var matching []types.NamespacedName
	for _, tm := range list.Items {
		if selects(tm.Spec.NodeSelector, node) {
			matching = append(matching, client.ObjectKeyFromObject(&tm))
		}
	}
	return requestsForNode(ctx, r, kindTrainingModel, node, matching)
}
