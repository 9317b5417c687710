package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// checkSpec refuses what the schema cannot, and says where the model comes
// from.
func (r *InferenceModelReconciler) checkSpec(_ context.Context, s *modelScope) (ctrl.Result, error) {
	m := s.model
	cloud := m.Spec.DeployToLayer == v1alpha1.LayerCloud
	if err := checkServer(m); err != nil {
		return ctrl.Result{}, err
	}
	if name := modelName(m); name == "." || name == ".." || strings.ContainsAny(name, "/\\") {
		return ctrl.Result{}, stalledf(ReasonInvalidSpec, "spec.modelName %q must be a plain name: it names the model's directory", name)
	}
	if cloud {
		if errs := validation.IsDNS1035Label(m.Name); len(errs) > 0 {
			return ctrl.Result{}, stalledf(ReasonInvalidSpec, "the cloud layer names a Service after the model, so the name %q must be a DNS-1035 label (lower case letters, digits and '-', starting with a letter, at most 63 characters)", m.Name)
		}
	}
	if m.Spec.Image != "" {
		src, err := imageSource(m.Namespace, m.Spec.Image, m.Spec.Insecure, m.Spec.PullSecretRef)
		if err != nil {
			return ctrl.Result{}, err
		}
		s.src = src
		return ctrl.Result{}, nil
	}
	s.src = source{
		Namespace:  m.Namespace,
		Repository: m.Spec.Artifact,
		Version:    m.Spec.TargetVersion,
		Insecure:   m.Spec.Insecure,
		PullSecret: m.Spec.PullSecretRef,
	}
	return ctrl.Result{}, nil
}

func modelName(m *v1alpha1.InferenceModel) string {
	if m.Spec.ModelName != "" {
		return m.Spec.ModelName
	}
	return m.Name
}

// resolve turns spec.targetVersion (or the image's tag) into a digest, when
// the interval has passed or the spec changed; otherwise it keeps the
// digest in status and costs the registry nothing.
func (r *InferenceModelReconciler) resolve(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	st := &s.model.Status
	result, err := s.resolveStep(ctx, r.resolver, s.model.Generation, st.ObservedGeneration, st.Resolved, st.Conditions)
	if err == nil && s.due && s.model.Spec.Image != "" {
		st.Resolved = resolvedStatus(s.res, nil, time.Now())
		st.Metadata, st.Metrics = nil, nil
	}
	return result, err
}

// inspect reads the model's manifest, refuses an artifact that is not a
// model, and copies its metadata and metrics into status.
func (r *InferenceModelReconciler) inspect(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	if s.model.Spec.Image != "" {
		return ctrl.Result{}, nil
	}
	in, err := r.resolver.inspect(ctx, &s.repo, s.src, s.res.Descriptor)
	if err != nil {
		return ctrl.Result{}, err
	}
	a := in.Artifact
	switch a.Kind {
	case artifact.KindModel, artifact.KindGeneric:
	default:
		s.failedIn = ReasonWrongKind
		return ctrl.Result{}, stalledf(ReasonWrongKind, "%s@%s is %s, not a model: %s", s.src.Repository, a.Digest, kindPhrase(a.Kind), modelKindHint(a.Kind))
	}
	if !s.due {
		return ctrl.Result{}, nil
	}
	st := &s.model.Status
	st.Resolved = resolvedStatus(s.res, in, time.Now())
	st.Metadata = modelMetadata(a)
	metrics, err := r.resolver.metrics(ctx, s.repo, s.src, s.res.Descriptor)
	if err != nil {
		// Metrics describe a model; failing to read them must not stop it
		// from being deployed. The event says why they are stale.
		s.metricsErr = err
		return ctrl.Result{}, nil
	}
	st.Metrics = metrics
	return ctrl.Result{}, nil
}

// kindPhrase names a kind with its article, for messages.
func kindPhrase(k artifact.Kind) string {
	switch k {
	case artifact.KindImage:
		return "a container image"
	case artifact.KindCode:
		return "a code artifact"
	case artifact.KindDataset:
		return "a dataset"
	case artifact.KindModel:
		return "a model"
	}
	return fmt.Sprintf("a %s artifact", k)
}

func modelKindHint(k artifact.Kind) string {
	switch k {
	case artifact.KindDataset:
		return "distribute it with a Dataset, or point spec.artifact at a model (barge push DIR REF)"
	case artifact.KindImage:
		return "run it with spec.image and deployToLayer: cloud, or point spec.artifact at model files"
	case artifact.KindCode:
		return "point spec.artifact at a model; code travels inside the model's artifact (preprocess/, postprocess/)"
	}
	return "point spec.artifact at a model (barge push DIR REF)"
}

// modelMetadata is what status shows of a model: its dev.barge.*
// annotations (task, framework, labels) and the ModelPack name and version.
func modelMetadata(a *artifact.Artifact) map[string]string {
	out := map[string]string{}
	for k, v := range a.Metadata {
		out[k] = v
	}
	if a.Name != "" {
		out["name"] = a.Name
	}
	if a.Version != "" {
		out["version"] = a.Version
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// deploy runs the model where spec.deployToLayer says, and removes it from
// the other layer.
func (r *InferenceModelReconciler) deploy(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	switch s.model.Spec.DeployToLayer {
	case v1alpha1.LayerCloud:
		return r.deployCloud(ctx, s)
	case v1alpha1.LayerJoint:
		return r.deployJoint(ctx, s)
	}
	return r.deployEdge(ctx, s)
}

// deployEdge moves the matching nodes to s.target's files and runs the
// edge server on them.
func (r *InferenceModelReconciler) deployEdge(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	m := s.model
	if m.Spec.Image != "" {
		return r.deployEdgeImage(ctx, s)
	}
	if err := r.deleteCloud(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	s.target = m.Status.Resolved.Digest
	files, err := r.filesDigest(ctx, s, s.target)
	if err != nil {
		return ctrl.Result{}, err
	}
	res, err := r.placer.place(ctx, placement{
		owner:         m,
		kind:          kindInferenceModel,
		repository:    s.src.Repository,
		digest:        files,
		insecure:      m.Spec.Insecure,
		selector:      m.Spec.NodeSelector,
		maxConcurrent: m.Spec.Rollout.MaxConcurrentNodes,
		verify:        m.Spec.Verify,
	})
	if err != nil {
		return ctrl.Result{}, err
	}
	s.placed = &res
	m.Status.Nodes = res.counts
	m.Status.URL = ""
	if err := r.serveEdge(ctx, s, files); err != nil {
		return ctrl.Result{}, err
	}
	s.outcome = servingOutcome(edgeOutcome(m.Status.Resolved, res), s, files)
	return ctrl.Result{}, conflictFailure(res)
}

func (r *InferenceModelReconciler) deployCloud(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	m := s.model
	if _, err := r.placer.remove(ctx, m, kindInferenceModel); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.deleteServing(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	m.Status.Nodes = v1alpha1.NodeCounts{}
	w := cloudWorkload{model: m, modelName: modelName(m), bargeImage: r.opts.BargeImage}
	if m.Spec.Image != "" {
		w.image = s.src.Repository + "@" + m.Status.Resolved.Digest
		w.port = r.opts.ServingImages.servingPort(m.Spec.FrameworkType)
	} else {
		framework := m.Spec.FrameworkType
		if framework == "" {
			framework = m.Status.Metadata["framework"]
		}
		rt, ok := r.opts.ServingImages[strings.ToLower(framework)]
		if !ok {
			return ctrl.Result{}, stalledf(ReasonNoServingImage, "no serving image for frameworkType %q: set spec.frameworkType to one of %s, or add it to the controller's --serving-images file", framework, r.opts.ServingImages.names())
		}
		w.runtime, w.port = rt, rt.Port
		w.reference = s.src.Repository + "@" + m.Status.Resolved.Digest
	}
	if err := r.claim(ctx, &appsv1.Deployment{}, m); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.claim(ctx, &corev1.Service{}, m); err != nil {
		return ctrl.Result{}, err
	}
	dep := w.deployment()
	if err := r.Apply(ctx, dep, client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return ctrl.Result{}, fmt.Errorf("apply Deployment %s: %w", m.Name, err)
	}
	if err := r.Apply(ctx, w.service(), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return ctrl.Result{}, fmt.Errorf("apply Service %s: %w", m.Name, err)
	}
	m.Status.URL = w.url()
	if ok, msg := deploymentProgress(dep); !ok {
		s.outcome = outcome{progressReason: ReasonDeploymentWait, progressMessage: fmt.Sprintf("%s: %s", versionText(m.Status.Resolved), msg)}
		return ctrl.Result{}, nil
	}
	s.outcome = outcome{readyMessage: fmt.Sprintf("%s serving at %s", versionText(m.Status.Resolved), m.Status.URL)}
	return ctrl.Result{}, nil
}

// claim refuses to take over a Deployment or Service of the model's name
// that something else made.
func (r *InferenceModelReconciler) claim(ctx context.Context, obj client.Object, m *v1alpha1.InferenceModel) error {
	key := client.ObjectKeyFromObject(m)
	kind := fmt.Sprintf("%T", obj)[len("*v1."):]
	err := r.Get(ctx, key, obj)
	if client.IgnoreNotFound(err) != nil {
		return err
	}
	if err != nil {
		// Not among the objects Barge manages (the cache holds only
		// those): make sure no other object has the name.
		err = r.reader.Get(ctx, key, obj)
		if client.IgnoreNotFound(err) != nil {
			return err
		}
		if err != nil {
			return nil
		}
	}
	if !metav1.IsControlledBy(obj, m) {
		return stalledf(ReasonObjectConflict, "a %s named %s already exists in %s and does not belong to this InferenceModel: delete it or rename the model", kind, m.Name, m.Namespace)
	}
	return nil
}
