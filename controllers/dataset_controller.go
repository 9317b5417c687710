package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/bargeml/barge/api/v1alpha1"
)

// DatasetReconciler resolves a Dataset's version to a digest, checks that
// the artifact is a dataset of the format asked for, copies its statistics
// into status, and puts it on every matching node through NodeArtifacts.
type DatasetReconciler struct {
	client.Client
	recorder recorder.EventRecorder
	resolver *Resolver
	placer   *placer
	opts     Options
}

// datasetScope is one reconcile pass of one Dataset.
type datasetScope struct {
	dataset *v1alpha1.Dataset
	before  *v1alpha1.Dataset

	resolveFacts
	placed  *placeResult
	outcome outcome
}

// Reconcile runs one pass; the deferred patchStatus writes its outcome.
func (r *DatasetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, r.opts.ReconcileTimeout)
	defer cancel()
	ds := &v1alpha1.Dataset{}
	if err := r.Get(ctx, req.NamespacedName, ds); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ds.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, ds)
	}
	if err := addFinalizer(ctx, r.Client, ds); err != nil {
		return ctrl.Result{}, err
	}

	s := &datasetScope{dataset: ds, before: ds.DeepCopy()}
	s.interval = intervalOf(ds.Spec.Interval)
	s.verify = ds.Spec.Verify
	s.src = source{
		Namespace:  ds.Namespace,
		Repository: ds.Spec.Artifact,
		Version:    ds.Spec.TargetVersion,
		Insecure:   ds.Spec.Insecure,
		PullSecret: ds.Spec.PullSecretRef,
	}
	return runPass(parent, ctx, s, []phase[*datasetScope]{r.resolve, r.inspect, r.place}, r.patchStatus, s.interval, r.opts.RetryInterval)
}

func (s *datasetScope) result() *outcome { return &s.outcome }

// reconcileDelete removes the dataset from every node and lets the object
// go once every puller has removed its files.
func (r *DatasetReconciler) reconcileDelete(ctx context.Context, ds *v1alpha1.Dataset) (ctrl.Result, error) {
	grace := r.opts.DeletionGracePeriod
	return finishDeletion(ctx, r.Client, r.placer, ds, kindDataset, grace, nil, func(st deletionState) {
		ds.Status.Nodes.Desired = 0
		deletionConditions(&ds.Status.Conditions, ds.Generation, kindDataset, ds.Name, st, grace)
	})
}

// SetupWithManager watches Datasets, the NodeArtifacts they own, and Node
// labels.
func (r *DatasetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("dataset").
		For(&v1alpha1.Dataset{}, builder.WithPredicates(forObjectChanges())).
		Watches(&v1alpha1.NodeArtifact{}, ownerAfter(mgr, &v1alpha1.Dataset{}, r.opts.NodeReportDelay), builder.WithPredicates(nodeArtifactChanges())).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.forNode), nodeWatch(r.opts)...).
		WithOptions(controllerOptions(r.opts)).
		Complete(r)
}

// forNode maps a Node event to the Datasets it concerns.
func (r *DatasetReconciler) forNode(ctx context.Context, node client.Object) []reconcile.Request {
	var list v1alpha1.DatasetList
	if err := r.List(ctx, &list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list Datasets for node", "node", node.GetName())
		return nil
	}
	var matching []types.NamespacedName
	for _, d := range list.Items {
		if selects(d.Spec.NodeSelector, node) {
			matching = append(matching, client.ObjectKeyFromObject(&d))
		}
	}
	return requestsForNode(ctx, r, kindDataset, node, matching)
}
