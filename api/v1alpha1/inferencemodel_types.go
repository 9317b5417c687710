package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Layer is where a model runs: on edge nodes as files (and, with spec.server
// or spec.image, a serving DaemonSet), in the cloud as a Deployment and
// Service, or both for a joint model.
// +kubebuilder:validation:Enum=edge;cloud;joint
type Layer string

const (
	// LayerEdge puts the model's files on every node that matches nodeSelector.
	LayerEdge Layer = "edge"
	// LayerCloud runs the model as a Deployment with a Service.
	LayerCloud Layer = "cloud"
	// LayerJoint runs a joint model (barge push --joint): its edge part on
	// the matching nodes and its cloud part as a Deployment and Service,
	// both from one digest.
	LayerJoint Layer = "joint"
)

// InferenceModelSpec says which model should run where.
//
// +kubebuilder:validation:XValidation:rule="has(self.image) != has(self.artifact)",message="set exactly one of spec.image (a container image) or spec.artifact (an OCI repository of model files)"
// +kubebuilder:validation:XValidation:rule="!has(self.artifact) || has(self.targetVersion)",message="spec.targetVersion is required with spec.artifact: a tag (1.0.0), a semver range (>=1.2 <2) or a digest (sha256:...)",fieldPath=".targetVersion",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.targetVersion) || has(self.artifact)",message="spec.targetVersion applies to spec.artifact only; put the tag or digest in spec.image",fieldPath=".targetVersion"
// +kubebuilder:validation:XValidation:rule="!has(self.replicas) || (has(self.deployToLayer) && self.deployToLayer != 'edge')",message="spec.replicas applies only to deployToLayer: cloud or joint; on the edge the model goes to every node that matches spec.nodeSelector",fieldPath=".replicas"
// +kubebuilder:validation:XValidation:rule="!has(self.selection) || has(self.artifact)",message="spec.selection chooses among versions of spec.artifact by their metrics; it does not apply to spec.image",fieldPath=".selection"
// +kubebuilder:validation:XValidation:rule="!has(self.server) || !has(self.deployToLayer) || self.deployToLayer != 'cloud'",message="spec.server is the edge serving container; in the cloud layer the runtime table for spec.frameworkType (or spec.image) serves the model",fieldPath=".server"
// +kubebuilder:validation:XValidation:rule="!has(self.cloud) || (has(self.deployToLayer) && self.deployToLayer != 'edge')",message="spec.cloud configures the cloud layer; set deployToLayer: cloud or joint",fieldPath=".cloud"
// +kubebuilder:validation:XValidation:rule="!has(self.deployToLayer) || self.deployToLayer != 'joint' || has(self.artifact)",message="deployToLayer: joint needs spec.artifact naming a joint model (barge push --joint edge=DIR --joint cloud=DIR REF)",fieldPath=".deployToLayer"
type InferenceModelSpec struct {
	// ModelName is the name the serving runtime knows the model by; the
	// object's name when empty.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ModelName string `json:"modelName,omitempty"`

	// DeployToLayer is edge (files on matching nodes) or cloud (a Deployment
	// and a Service).
	// +kubebuilder:default=edge
	// +optional
	DeployToLayer Layer `json:"deployToLayer,omitempty"`

	// FrameworkType names the serving framework (onnx, tensorflow, pytorch, ...).
	// In the cloud layer with spec.artifact, it chooses the serving image.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	FrameworkType string `json:"frameworkType,omitempty"`

	// NodeSelector chooses the nodes by label, as a Pod's nodeSelector does.
	// An empty selector matches every node.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Replicas of the cloud Deployment; 1 when unset.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Image is a container image reference (registry.example.com/serving/resnet:1.0
	// or ...@sha256:...) to run as the model: a Deployment in the cloud layer, a
	// DaemonSet on the matching nodes at the edge. Exclusive with Artifact.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// Artifact is an OCI repository of model files, without tag or digest, such
	// as registry.example.com/models/resnet50. Exclusive with Image.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="!self.contains('@') && !self.substring(self.lastIndexOf('/') + 1).contains(':')",message="spec.artifact is a repository without tag or digest (registry.example.com/models/resnet50); put the version in spec.targetVersion"
	// +optional
	Artifact string `json:"artifact,omitempty"`

	// TargetVersion of Artifact: a tag (1.0.0, latest), a semver range over the
	// repository's tags (>=1.2 <2), or a manifest digest (sha256:...).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('sha256:') || self.matches('^sha256:[a-f0-9]{64}$')",message="spec.targetVersion: a digest is sha256: followed by 64 lowercase hex characters"
	// +optional
	TargetVersion string `json:"targetVersion,omitempty"`

	// Insecure reaches the registry over plain HTTP.
	// +optional
	Insecure bool `json:"insecure,omitempty"`

	// PullSecretRef names a kubernetes.io/dockerconfigjson Secret in the same
	// namespace that the controller uses to resolve versions. Pullers on the
	// nodes use their own mounted credentials.
	// +optional
	PullSecretRef *LocalObjectReference `json:"pullSecretRef,omitempty"`

	// Verify requires a signature on the digest before it rolls out; the
	// previous digest keeps running while a new one fails verification.
	// +kubebuilder:validation:XValidation:rule="!has(self.signedIndex)",message="spec.verify.signedIndex is written by the controller on NodeArtifacts; leave it out"
	// +optional
	Verify *VerifySpec `json:"verify,omitempty"`

	// Interval between two resolutions of a tag or range; a moved tag rolls out
	// within one interval. At least 30s.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s')",message="spec.interval must be at least 30s: each resolution asks the registry again; for a faster rollout name a new targetVersion"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// Rollout limits how a new digest reaches the nodes.
	// +kubebuilder:default={}
	// +optional
	Rollout RolloutSpec `json:"rollout,omitempty"`

	// Selection chooses among versions by their metrics and metadata: with
	// a semver range the best candidate that passes every require wins;
	// with a tag or digest, require is a gate the version must pass
	// before it rolls out.
	// +optional
	Selection *SelectionSpec `json:"selection,omitempty"`

	// Server runs the model on each matching edge node as a DaemonSet that
	// mounts the node's model files read-only. Without it an edge model is
	// files only. An empty server ({}) takes the serving runtime of
	// spec.frameworkType from the controller's table.
	// +optional
	Server *ServerSpec `json:"server,omitempty"`

	// Cloud configures the cloud layer's Deployment.
	// +optional
	Cloud *CloudSpec `json:"cloud,omitempty"`
}

// SelectionSpec chooses a version by CEL expressions over its metrics
// (metrics.accuracy, a double), metadata (metadata["framework"], a string)
// and version (the tag, a string).
type SelectionSpec struct {
	// Require lists expressions that must all be true of a version, such as
	// "metrics.accuracy >= 0.9". A metric a version lacks fails the
	// expression that reads it.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=1024
	// +listType=atomic
	// +optional
	Require []string `json:"require,omitempty"`

	// Order ranks the versions that pass, first key first: a numeric
	// expression, highest first, or lowest first with " asc" after it
	// ("metrics.latency_ms asc"). Ties, and versions without the metric,
	// go to the newest semantic version.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=1024
	// +listType=atomic
	// +optional
	Order []string `json:"order,omitempty"`
}

// ServerSpec is the serving container of an edge model. It finds the
// model through environment variables (see the README's serving contract):
// BARGE_MODEL_DIR, BARGE_MODEL_NAME, and BARGE_PREPROCESS_DIR,
// BARGE_POSTPROCESS_DIR and BARGE_LABELS_FILE when the artifact has them.
type ServerSpec struct {
	// Image of the serving container; the runtime table's image for
	// spec.frameworkType when empty.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// Command replaces the image's entrypoint.
	// +listType=atomic
	// +optional
	Command []string `json:"command,omitempty"`

	// Args of the serving container; Kubernetes expands $(BARGE_MODEL_DIR).
	// +listType=atomic
	// +optional
	Args []string `json:"args,omitempty"`

	// Port the server answers HTTP on; the runtime table's port, else 8080.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`

	// Env adds environment variables to the serving container.
	// +listType=map
	// +listMapKey=name
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`

	// Resources of the serving container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// Tolerations of the serving pods, for tainted edge nodes.
	// +listType=atomic
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
}

// ModelMount is how the cloud Deployment gets the model files.
// +kubebuilder:validation:Enum=initContainer;imageVolume
type ModelMount string

const (
	// ModelMountInitContainer pulls the files with barge in an init
	// container into an emptyDir.
	ModelMountInitContainer ModelMount = "initContainer"
	// ModelMountImageVolume mounts the artifact as a Kubernetes image
	// volume (GA in 1.36): the container runtime pulls it. CRI-O mounts
	// OCI artifacts and ModelPack models; containerd only runnable images.
	ModelMountImageVolume ModelMount = "imageVolume"
)

// CloudSpec configures the cloud layer.
type CloudSpec struct {
	// ModelMount is initContainer (the default) or imageVolume.
	// +kubebuilder:default=initContainer
	// +optional
	ModelMount ModelMount `json:"modelMount,omitempty"`
}

// RolloutSpec limits how a new digest reaches the nodes. A node keeps serving its
// old version until the new one is Ready.
type RolloutSpec struct {
	// MaxConcurrentNodes is how many nodes may pull a new digest at once,
	// and how many serving pods restart onto it at once.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxConcurrentNodes int32 `json:"maxConcurrentNodes,omitempty"`

	// Canary moves the first nodes to a new digest alone; the rest follow
	// after the canary nodes are Ready (and serving) for canary.pause, or
	// when the rollout is resumed (barge rollout resume, or the annotation
	// barge.dev/resume-rollout set to the new digest).
	// +optional
	Canary *CanarySpec `json:"canary,omitempty"`

	// FailurePolicy is what happens when more than maxFailedNodes nodes
	// fail the new digest: Rollback moves every moved node back to the
	// previous digest (which GC keeps on each node); Halt stops the
	// rollout where it is.
	// +kubebuilder:validation:Enum=Rollback;Halt
	// +kubebuilder:default=Rollback
	// +optional
	FailurePolicy FailurePolicy `json:"failurePolicy,omitempty"`

	// MaxFailedNodes is how many nodes may fail the new digest before the
	// failure policy applies.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxFailedNodes int32 `json:"maxFailedNodes,omitempty"`
}

// FailurePolicy says what a failed rollout does.
type FailurePolicy string

const (
	// FailurePolicyRollback returns the moved nodes to the previous digest.
	FailurePolicyRollback FailurePolicy = "Rollback"
	// FailurePolicyHalt stops the rollout and leaves each node where it is.
	FailurePolicyHalt FailurePolicy = "Halt"
)

// ResumeRolloutAnnotation, set on an InferenceModel to the digest of a
// paused canary, lets the rollout go on to the remaining nodes.
const ResumeRolloutAnnotation = "barge.dev/resume-rollout"

// CanarySpec picks the canary nodes: the first Nodes of the matching nodes
// by name, or those NodeSelector matches.
// +kubebuilder:validation:XValidation:rule="has(self.nodes) != has(self.nodeSelector)",message="spec.rollout.canary: choose the canary nodes with exactly one of nodes (a count) or nodeSelector"
type CanarySpec struct {
	// Nodes is how many nodes take a new digest first.
	// +kubebuilder:validation:Minimum=1
	// +optional
	Nodes *int32 `json:"nodes,omitempty"`

	// NodeSelector chooses the canary nodes among the matching ones.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Pause is how long the canary nodes must be Ready (and serving)
	// before the rest follow. Unset: wait to be resumed.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:MaxLength=32
	// +optional
	Pause *metav1.Duration `json:"pause,omitempty"`
}

// InferenceModelStatus is what the controller observed. Per-node state lives in
// NodeArtifacts; this object carries counts.
type InferenceModelStatus struct {
	// ObservedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Resolved is the version and digest spec.artifact or spec.image resolved to.
	// +optional
	Resolved *ResolvedArtifact `json:"resolved,omitempty"`

	// Metadata read from the artifact: task, framework, labels, ModelPack
	// descriptor fields.
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`

	// Metrics from the artifact's metrics referrers, metric name to a decimal
	// number as text ("0.913", "1200"). Text because CRD schemas have no safe
	// float (allowDangerousTypes=false), resource.Quantity rewrites 0.913 as
	// "913m", and integers cannot hold an accuracy; text keeps the value as it
	// was measured and shows it as written.
	// +optional
	Metrics map[string]string `json:"metrics,omitempty"`

	// Nodes counts the NodeArtifacts of this model by state.
	// +optional
	Nodes NodeCounts `json:"nodes,omitempty"`

	// URL of the cloud layer's Service.
	// +optional
	URL string `json:"url,omitempty"`

	// Rollout is where the rollout of the resolved digest stands.
	// +optional
	Rollout *RolloutStatus `json:"rollout,omitempty"`

	// History lists the last digests rolled out or back, newest first.
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	// +optional
	History []HistoryEntry `json:"history,omitempty"`

	// Conditions: Ready summarizes; Reconciling and Stalled appear only while true.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// RolloutPhase is where a rollout stands.
// +kubebuilder:validation:Enum=Progressing;Paused;Complete;Halted;RolledBack
type RolloutPhase string

const (
	RolloutProgressing RolloutPhase = "Progressing"
	// RolloutPaused: the canary nodes run the new digest; the rest wait
	// for canary.pause or a resume.
	RolloutPaused   RolloutPhase = "Paused"
	RolloutComplete RolloutPhase = "Complete"
	// RolloutHalted: too many nodes failed; each node stays where it is.
	RolloutHalted RolloutPhase = "Halted"
	// RolloutRolledBack: too many nodes failed; the moved nodes went back
	// to the previous digest, and the failed digest is not tried again
	// until a new version appears or the spec changes.
	RolloutRolledBack RolloutPhase = "RolledBack"
)

// RolloutStatus is the rollout of one digest.
type RolloutStatus struct {
	// Phase of the rollout.
	// +optional
	Phase RolloutPhase `json:"phase,omitempty"`

	// Digest being rolled out (or rolled back from).
	// +optional
	Digest string `json:"digest,omitempty"`

	// Version (tag) of Digest.
	// +optional
	Version string `json:"version,omitempty"`

	// Previous is the digest the nodes ran before; a rollback returns
	// to it.
	// +optional
	Previous string `json:"previous,omitempty"`

	// CanaryNodes took Digest first.
	// +listType=atomic
	// +optional
	CanaryNodes []string `json:"canaryNodes,omitempty"`

	// CanaryReadyAt is when every canary node was Ready (and serving).
	// +optional
	CanaryReadyAt *metav1.Time `json:"canaryReadyAt,omitempty"`

	// ResumedAt is when the remaining nodes were let go on: canary.pause
	// had passed, or the rollout was resumed. Once set, taking the resume
	// annotation away does not pause the rollout again.
	// +optional
	ResumedAt *metav1.Time `json:"resumedAt,omitempty"`

	// Message says why the rollout is where it is.
	// +optional
	Message string `json:"message,omitempty"`
}

// HistoryEntry is one digest rolled out or back.
type HistoryEntry struct {
	// Version (tag) of Digest.
	// +optional
	Version string `json:"version,omitempty"`

	// Digest of the manifest.
	Digest string `json:"digest"`

	// Action: RolledOut, RolledBack or Halted.
	Action string `json:"action"`

	// Reason says why, such as "accuracy 0.931, best of 5" or "3 nodes
	// failed: ...".
	// +optional
	Reason string `json:"reason,omitempty"`

	// Time of the action.
	Time metav1.Time `json:"time"`

	// Generation is the InferenceModel's metadata.generation at the time:
	// a digest rolled back is not chosen again while the spec stays at
	// that generation.
	// +optional
	Generation int64 `json:"generation,omitempty"`
}

// InferenceModel runs a model, given as a container image or an OCI artifact of
// model files, on the edge nodes that match its selector or in the cloud.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=barge
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.resolved.version`
// +kubebuilder:printcolumn:name="Digest",type=string,JSONPath=`.status.resolved.shortDigest`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.nodes.desired`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.nodes.ready`
// +kubebuilder:printcolumn:name="Serving",type=integer,JSONPath=`.status.nodes.serving`,priority=1
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.nodes.failed`,priority=1
// +kubebuilder:printcolumn:name="Rollout",type=string,JSONPath=`.status.rollout.phase`,priority=1
// +kubebuilder:printcolumn:name="Layer",type=string,JSONPath=`.spec.deployToLayer`,priority=1
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type InferenceModel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   InferenceModelSpec   `json:"spec"`
	Status InferenceModelStatus `json:"status,omitempty"`
}

// InferenceModelList is a list of InferenceModels.
//
// +kubebuilder:object:root=true
type InferenceModelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []InferenceModel `json:"items"`
}

func init() {
	SchemeBuilder.Register(&InferenceModel{}, &InferenceModelList{})
}
