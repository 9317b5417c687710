package controllers

import (
	"context"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/bargeml/barge/api/v1alpha1"
)

// InferenceModelReconciler resolves an InferenceModel's version to a digest,
// checks that the artifact is a model, and runs it: as NodeArtifacts on the
// matching edge nodes, or as a Deployment and a Service in the cloud.
type InferenceModelReconciler struct {
	client.Client
	// reader reads uncached: objects that must not be taken over by name.
	reader   client.Reader
	recorder recorder.EventRecorder
	resolver *Resolver
	placer   *placer
	opts     Options
	// seen is the newest resourceVersion of each model (by UID) this
	// controller has written or read from the API server (rollout.go).
	seen sync.Map
}

// modelScope is one reconcile pass of one InferenceModel: the object, the
// status it started from, and the facts the phases record.
type modelScope struct {
	model  *v1alpha1.InferenceModel
	before *v1alpha1.InferenceModel

	resolveFacts
	// target is the model digest the nodes move to in this pass:
	// status.resolved.digest, or the previous digest while a rollout rolls
	// back (rollout.go).
	target string
	placed *placeResult
	// serving is each matching node's serving pod, by node name; nil when
	// the model has no edge server (serving.go).
	serving map[string]nodeServing
	// rollout is what this pass decided about the rollout (rollout.go).
	rollout    *rolloutDecision
	metricsErr error
	outcome    outcome
}

// nodeServing is what one node's serving pod reports.
type nodeServing struct {
	// digest is the files digest the pod mounts.
	digest string
	// ready: the pod is Ready on digest.
	ready bool
	// failed says why the pod cannot serve (CrashLoopBackOff, an image
	// that cannot be pulled); empty while it can.
	failed string
}

// Reconcile runs one pass; the deferred patchStatus writes its outcome.
func (r *InferenceModelReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, r.opts.ReconcileTimeout)
	defer cancel()
	model := &v1alpha1.InferenceModel{}
	if err := r.Get(ctx, req.NamespacedName, model); err != nil {
		r.seen.Delete(req.NamespacedName)
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if err := r.catchUp(ctx, model); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !model.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, model)
	}
	if err := addFinalizer(ctx, r.Client, model); err != nil {
		return ctrl.Result{}, err
	}

	s := &modelScope{model: model, before: model.DeepCopy()}
	s.interval = intervalOf(model.Spec.Interval)
	s.verify = model.Spec.Verify
	s.selection = model.Spec.Selection
	s.rejected = rejectedDigests(model.Status.History, model.Generation)
	return runPass(parent, ctx, s, []phase[*modelScope]{r.checkSpec, r.resolve, r.inspect, r.deploy}, r.patchStatus, s.interval, r.opts.RetryInterval)
}

func (s *modelScope) result() *outcome { return &s.outcome }

// reconcileDelete removes everything the model put on nodes and in the
// cloud, and lets the object go once every puller has removed its files.
func (r *InferenceModelReconciler) reconcileDelete(ctx context.Context, model *v1alpha1.InferenceModel) (ctrl.Result, error) {
	grace := r.opts.DeletionGracePeriod
	also := func(ctx context.Context) error {
		if err := r.deleteCloud(ctx, model); err != nil {
			return err
		}
		return r.deleteServing(ctx, model)
	}
	return finishDeletion(ctx, r.Client, r.placer, model, kindInferenceModel, grace, also, func(st deletionState) {
		model.Status.Nodes.Desired = 0
		deletionConditions(&model.Status.Conditions, model.Generation, kindInferenceModel, model.Name, st, grace)
	})
}

// deleteCloud deletes the model's Deployment and Service, and the ConfigMap
// of a joint model, if it has them.
func (r *InferenceModelReconciler) deleteCloud(ctx context.Context, model *v1alpha1.InferenceModel) error {
	for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}} {
		if err := r.deleteOwned(ctx, model, obj, model.Name); err != nil {
			return err
		}
	}
	return r.deleteJointConfig(ctx, model)
}

// deleteOwned deletes the object of obj's kind named name if the model
// controls it.
func (r *InferenceModelReconciler) deleteOwned(ctx context.Context, model *v1alpha1.InferenceModel, obj client.Object, name string) error {
	err := r.Get(ctx, client.ObjectKey{Namespace: model.Namespace, Name: name}, obj)
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(obj, model) {
		return nil
	}
	return client.IgnoreNotFound(r.Delete(ctx, obj))
}

// SetupWithManager watches InferenceModels, the NodeArtifacts, Deployments,
// Services, ConfigMaps and DaemonSets they own, the DaemonSets' pods, and
// Node labels.
func (r *InferenceModelReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("inferencemodel").
		For(&v1alpha1.InferenceModel{}, builder.WithPredicates(forObjectChanges())).
		Watches(&v1alpha1.NodeArtifact{}, ownerAfter(mgr, &v1alpha1.InferenceModel{}, r.opts.NodeReportDelay), builder.WithPredicates(nodeArtifactChanges())).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&appsv1.DaemonSet{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.forServingPod), builder.OnlyMetadata).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.forNode), nodeWatch(r.opts)...).
		WithOptions(controllerOptions(r.opts)).
		Complete(r)
}

// forNode maps a Node event to the edge models it concerns.
func (r *InferenceModelReconciler) forNode(ctx context.Context, node client.Object) []reconcile.Request {
	var list v1alpha1.InferenceModelList
	if err := r.List(ctx, &list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list InferenceModels for node", "node", node.GetName())
		return nil
	}
	var matching []types.NamespacedName
	for _, m := range list.Items {
		if m.Spec.DeployToLayer != v1alpha1.LayerCloud && selects(m.Spec.NodeSelector, node) {
			matching = append(matching, client.ObjectKeyFromObject(&m))
		}
	}
	return requestsForNode(ctx, r, kindInferenceModel, node, matching)
}
