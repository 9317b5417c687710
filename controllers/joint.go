package controllers

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// A joint model (barge push --joint) is one OCI index over two models: the
// edge part goes to the matching nodes as files, the cloud part runs as the
// Deployment and Service. Everything keys on the index digest, so one
// version moves both parts, and a rollback too.

// jointInspected is a joint model's two parts as the controller reads them.
type jointInspected struct {
	edgeDesc, cloudDesc ocispec.Descriptor
	edge, cloud         *inspected
}

// contentSize is what both parts hold: their manifests, configs and layers.
func (j *jointInspected) contentSize() int64 {
	return j.edgeDesc.Size + j.edge.contentSize + j.cloudDesc.Size + j.cloud.contentSize
}

// inspectJoint reads both parts of the joint model a. Each part is cached
// by its own digest, as the index is by its.
func (r *Resolver) inspectJoint(ctx context.Context, repo **remote.Repository, src source, a *artifact.Artifact) (*jointInspected, error) {
	parts, err := artifact.JointPartsOf(a)
	if err != nil {
		return nil, stalledf(ReasonInvalidArtifact, "%s: %v", src.Repository, err)
	}
	j := &jointInspected{edgeDesc: parts.Edge, cloudDesc: parts.Cloud}
	if j.edge, err = r.inspect(ctx, repo, src, parts.Edge); err != nil {
		return nil, err
	}
	if j.cloud, err = r.inspect(ctx, repo, src, parts.Cloud); err != nil {
		return nil, err
	}
	return j, nil
}

// jointOf reads the model digest d and returns its parts when it is a
// joint model, nil when it is not. Inspections are cached by digest, so
// passes after the first ask the registry nothing.
func (r *InferenceModelReconciler) jointOf(ctx context.Context, s *modelScope, d string) (*jointInspected, error) {
	if d == "" || s.model.Spec.Image != "" {
		return nil, nil
	}
	in, err := r.resolver.inspect(ctx, &s.repo, s.src, ocispec.Descriptor{Digest: digest.Digest(d)})
	if err != nil {
		return nil, err
	}
	return in.joint, nil
}

// filesDigest is the digest whose files an edge node holds for the model
// digest d: d itself, or the edge member of a joint index.
func (r *InferenceModelReconciler) filesDigest(ctx context.Context, s *modelScope, d string) (string, error) {
	j, err := r.jointOf(ctx, s, d)
	if err != nil || j == nil {
		return d, err
	}
	return j.edgeDesc.Digest.String(), nil
}

// edgeVerify is the verify policy of the NodeArtifacts that hold files
// for the model digest target. A joint model is signed as one index, and
// its edge part is not signed on its own: the node is told the index, whose
// signature it verifies and which must list files as its edge part.
func edgeVerify(v *v1alpha1.VerifySpec, target, files string) *v1alpha1.VerifySpec {
	if v == nil || target == files {
		return v
	}
	out := v.DeepCopy()
	out.SignedIndex = target
	return out
}

// checkLayer refuses a model whose artifact does not fit deployToLayer:
// joint needs a joint model, and each part of a joint model must be a
// model. A joint model with deployToLayer edge or cloud runs that part only.
func checkLayer(m *v1alpha1.InferenceModel, src source, in *inspected) error {
	a := in.Artifact
	if in.joint == nil {
		if m.Spec.DeployToLayer == v1alpha1.LayerJoint {
			return stalledf(ReasonWrongKind, "deployToLayer: joint needs a joint model; %s@%s is %s with one part: push both with `barge push --joint edge=DIR --joint cloud=DIR REF`, or deploy it to edge or cloud",
				src.Repository, a.Digest, kindPhrase(a.Kind))
		}
		return nil
	}
	for _, p := range []struct {
		layer string
		part  *inspected
	}{{artifact.LayerEdge, in.joint.edge}, {artifact.LayerCloud, in.joint.cloud}} {
		switch p.part.Artifact.Kind {
		case artifact.KindModel, artifact.KindGeneric:
		default:
			return stalledf(ReasonWrongKind, "joint model %s@%s: its %s part (sha256:%s) is %s, not a model; push model directories with barge push --joint",
				src.Repository, a.Digest, p.layer, shortDigest(p.part.Artifact.Digest.String()), kindPhrase(p.part.Artifact.Kind))
		}
	}
	return nil
}

// withParts adds a joint model's parts' metadata to status.metadata, as
// edge.<key> and cloud.<key> (edge.framework, cloud.name), beside the
// index's own.
func withParts(meta map[string]string, in *inspected) map[string]string {
	if in.joint == nil {
		return meta
	}
	for layer, part := range map[string]*inspected{artifact.LayerEdge: in.joint.edge, artifact.LayerCloud: in.joint.cloud} {
		for k, v := range part.Artifact.Described() {
			if meta == nil {
				meta = map[string]string{}
			}
			meta[layer+"."+k] = v
		}
	}
	return meta
}

// deployJoint runs a joint model: its edge part on the matching nodes, its
// cloud part as the Deployment and Service, both from one digest. The edge
// step decides s.target (the index the nodes move to, or the previous one
// during a rollback); the cloud part follows it, so both parts move
// together.
func (r *InferenceModelReconciler) deployJoint(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	// Before anything runs: the edge pods would read another's address.
	if err := r.claimNamed(ctx, &corev1.ConfigMap{}, s.model, jointConfigName(s.model)); err != nil {
		return ctrl.Result{}, err
	}
	result, err := r.edgeStep(ctx, s)
	if err != nil {
		return result, err
	}
	j, err := r.jointOf(ctx, s, s.target)
	if err != nil {
		return result, err
	}
	if j == nil {
		return result, stalledf(ReasonWrongKind, "deployToLayer: joint needs a joint model; %s@%s has one part: push both with `barge push --joint edge=DIR --joint cloud=DIR REF`", s.src.Repository, s.target)
	}
	edge := s.outcome
	if err := r.cloudStep(ctx, s, s.target); err != nil {
		return result, err
	}
	if err := r.applyJointConfig(ctx, s.model); err != nil {
		return result, err
	}
	s.outcome = jointOutcome(edge, s.outcome, s.model.Status.URL)
	return result, nil
}

// jointOutcome is one outcome from the edge part's and the cloud part's:
// what the edge part still waits for first, then the cloud part's.
func jointOutcome(edge, cloud outcome, url string) outcome {
	switch {
	case edge.failure != nil:
		return edge
	case cloud.failure != nil:
		return cloud
	case edge.progressReason != "" && cloud.progressReason != "":
		return outcome{progressReason: edge.progressReason, progressMessage: edge.progressMessage + "; cloud part: " + cloud.progressMessage}
	case edge.progressReason != "":
		return edge
	case cloud.progressReason != "":
		return outcome{progressReason: cloud.progressReason, progressMessage: "cloud part: " + cloud.progressMessage}
	}
	return outcome{readyMessage: fmt.Sprintf("%s; cloud part serving at %s", edge.readyMessage, url)}
}

// The edge workload of a joint model finds its cloud part through the
// ConfigMap <model>-joint, key cloud-url: as BARGE_CLOUD_URL and as the
// file /etc/barge/joint/cloud-url.
const (
	JointCloudURLKey = "cloud-url"
	JointCloudURLEnv = "BARGE_CLOUD_URL"
	JointConfigDir   = "/etc/barge/joint"
	jointVolume      = "barge-joint"
)

// jointConfigName is the ConfigMap that tells a joint model's edge
// workload where its cloud part answers.
func jointConfigName(m *v1alpha1.InferenceModel) string { return m.Name + "-joint" }

// jointEdgeExtras is what the serving pods of a joint model's edge part
// add to find the cloud part: BARGE_CLOUD_URL, and the ConfigMap mounted
// read-only at /etc/barge/joint (the file cloud-url). Both read the
// ConfigMap, so a pod starts only once the controller has written it. For
// any other model it returns nothing.
func jointEdgeExtras(m *v1alpha1.InferenceModel) ([]corev1.EnvVar, []corev1.Volume, []corev1.VolumeMount) {
	if m.Spec.DeployToLayer != v1alpha1.LayerJoint {
		return nil, nil, nil
	}
	ref := corev1.LocalObjectReference{Name: jointConfigName(m)}
	env := []corev1.EnvVar{{Name: JointCloudURLEnv, ValueFrom: &corev1.EnvVarSource{
		ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: ref, Key: JointCloudURLKey},
	}}}
	volumes := []corev1.Volume{{Name: jointVolume, VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: ref},
	}}}
	mounts := []corev1.VolumeMount{{Name: jointVolume, MountPath: JointConfigDir, ReadOnly: true}}
	return env, volumes, mounts
}

// applyJointConfig writes the ConfigMap <model>-joint with the cloud
// part's address, status.url, on every pass: whoever changed it, the edge
// pods read the controller's address again. deployJoint has claimed the
// name.
func (r *InferenceModelReconciler) applyJointConfig(ctx context.Context, m *v1alpha1.InferenceModel) error {
	name := jointConfigName(m)
	w := cloudWorkload{model: m}
	cm := corev1ac.ConfigMap(name, m.Namespace).
		WithLabels(w.labels()).
		WithOwnerReferences(w.ownerReference()).
		WithData(map[string]string{JointCloudURLKey: m.Status.URL})
	if err := r.Apply(ctx, cm, client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply ConfigMap %s: %w", name, err)
	}
	return nil
}

// deleteJointConfig deletes the ConfigMap <model>-joint, if the model has
// it: a model that is no longer joint has no cloud part to point at.
func (r *InferenceModelReconciler) deleteJointConfig(ctx context.Context, m *v1alpha1.InferenceModel) error {
	return r.deleteOwned(ctx, m, &corev1.ConfigMap{}, jointConfigName(m))
}
