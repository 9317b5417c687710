package controllers

import (
	"context"
	"fmt"
	"maps"
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
	if cloud || m.Spec.DeployToLayer == v1alpha1.LayerJoint {
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
	case artifact.KindModel, artifact.KindGeneric, artifact.KindJoint:
	default:
		s.failedIn = ReasonWrongKind
		return ctrl.Result{}, stalledf(ReasonWrongKind, "%s@%s is %s, not a model: %s", s.src.Repository, a.Digest, kindPhrase(a.Kind), modelKindHint(a.Kind))
	}
	if err := checkLayer(s.model, s.src, in); err != nil {
		s.failedIn = ReasonWrongKind
		return ctrl.Result{}, err
	}
	if !s.due {
		return ctrl.Result{}, nil
	}
	st := &s.model.Status
	st.Resolved = resolvedStatus(s.res, in, time.Now())
	st.Resolved.Reason = s.choiceReason
	st.Metadata = withParts(a.Described(), in)
	metrics, err := r.resolver.metrics(ctx, s.repo, s.src, s.res.Descriptor)
	if err != nil {
		// Metrics describe a model; failing to read them must not stop it
		// from being deployed. The event says why they are stale.
		s.metricsErr = err
		return ctrl.Result{}, nil
	}
	st.Metrics = maps.Clone(metrics)
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

// deployEdge runs the model on the edge only: it removes what the cloud
// layer ran, and takes the edge step.
func (r *InferenceModelReconciler) deployEdge(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	m := s.model
	if m.Spec.Image != "" {
		return r.deployEdgeImage(ctx, s)
	}
	if err := r.deleteCloud(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	return r.edgeStep(ctx, s)
}

// edgeStep moves the matching nodes to s.target's files, as the rollout
// decides (rollout.go), and runs the edge server on them. A joint model
// takes it too, for its edge part.
func (r *InferenceModelReconciler) edgeStep(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	m := s.model
	result, err := r.rolloutEdge(ctx, s)
	if err != nil {
		return result, err
	}
	files, err := r.filesDigest(ctx, s, s.target)
	if err != nil {
		return result, err
	}
	m.Status.Nodes = s.placed.counts
	m.Status.Nodes.Serving = servingOn(s.serving, files)
	m.Status.URL = ""
	s.outcome = servingOutcome(rolloutOutcome(s.rollout, s.targetResolved(), *s.placed), s, files)
	return result, conflictFailure(*s.placed)
}

// deployCloud runs the model in the cloud only: it removes what the edge
// layer placed, and takes the cloud step on the resolved digest.
func (r *InferenceModelReconciler) deployCloud(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	m := s.model
	if _, err := r.placer.remove(ctx, m, kindInferenceModel); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.deleteServing(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	// A Deployment rolls itself out: an edge rollout's status would be
	// stale.
	m.Status.Nodes, m.Status.Rollout = v1alpha1.NodeCounts{}, nil
	if err := r.deleteJointConfig(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.cloudStep(ctx, s, m.Status.Resolved.Digest)
}

// cloudStep runs the model digest d as the Deployment and Service: the
// image pinned to d, the model files of d, or the cloud part of the joint
// model d.
func (r *InferenceModelReconciler) cloudStep(ctx context.Context, s *modelScope, d string) error {
	m := s.model
	w := cloudWorkload{model: m, modelName: modelName(m), bargeImage: r.opts.BargeImage, mount: modelMount(m)}
	if m.Spec.Image != "" {
		w.image = s.src.Repository + "@" + d
		w.port = r.opts.ServingImages.servingPort(m.Spec.FrameworkType)
	} else {
		files, framework, what := d, m.Spec.FrameworkType, "frameworkType"
		j, err := r.jointOf(ctx, s, d)
		if err != nil {
			return err
		}
		switch {
		case j != nil:
			files, what = j.cloudDesc.Digest.String(), "the cloud part's frameworkType"
			if framework == "" {
				framework = j.cloud.Artifact.Metadata["framework"]
			}
		case framework == "":
			framework = m.Status.Metadata["framework"]
		}
		rt, ok := r.opts.ServingImages[strings.ToLower(framework)]
		if !ok {
			return stalledf(ReasonNoServingImage, "no serving image for %s %q: set spec.frameworkType to one of %s, or add it to the controller's --serving-images file", what, framework, r.opts.ServingImages.names())
		}
		w.runtime, w.port = rt, rt.Port
		w.reference = s.src.Repository + "@" + files
	}
	if err := r.claim(ctx, &appsv1.Deployment{}, m); err != nil {
		return err
	}
	if err := r.claim(ctx, &corev1.Service{}, m); err != nil {
		return err
	}
	dep := w.deployment()
	if err := r.Apply(ctx, dep, client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply Deployment %s: %w", m.Name, err)
	}
	if err := r.Apply(ctx, w.service(), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply Service %s: %w", m.Name, err)
	}
	m.Status.URL = w.url()
	if ok, msg := deploymentProgress(dep); !ok {
		s.outcome = outcome{progressReason: ReasonDeploymentWait, progressMessage: fmt.Sprintf("%s: %s", versionText(m.Status.Resolved), msg)}
		return nil
	}
	s.outcome = outcome{readyMessage: fmt.Sprintf("%s serving at %s", versionText(m.Status.Resolved), m.Status.URL)}
	return nil
}

// claim refuses to take over a Deployment or Service of the model's name
// that something else made.
func (r *InferenceModelReconciler) claim(ctx context.Context, obj client.Object, m *v1alpha1.InferenceModel) error {
	return r.claimNamed(ctx, obj, m, m.Name)
}

// claimNamed refuses to take over the object of obj's kind named name that
// something else made.
func (r *InferenceModelReconciler) claimNamed(ctx context.Context, obj client.Object, m *v1alpha1.InferenceModel, name string) error {
	key := client.ObjectKey{Namespace: m.Namespace, Name: name}
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
		return stalledf(ReasonObjectConflict, "a %s named %s already exists in %s and does not belong to this InferenceModel: delete it or rename the model", kind, name, m.Namespace)
	}
	return nil
}
