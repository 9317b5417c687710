package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Layer is where a model runs: on edge nodes as files, or in the cloud as a
// Deployment and Service.
// +kubebuilder:validation:Enum=edge;cloud
type Layer string

const (
	// LayerEdge puts the model's files on every node that matches nodeSelector.
	LayerEdge Layer = "edge"
	// LayerCloud runs the model as a Deployment with a Service.
	LayerCloud Layer = "cloud"
)

// InferenceModelSpec says which model should run where.
//
// +kubebuilder:validation:XValidation:rule="has(self.image) != has(self.artifact)",message="set exactly one of spec.image (a container image) or spec.artifact (an OCI repository of model files)"
// +kubebuilder:validation:XValidation:rule="!has(self.artifact) || has(self.targetVersion)",message="spec.targetVersion is required with spec.artifact: a tag (1.0.0), a semver range (>=1.2 <2) or a digest (sha256:...)",fieldPath=".targetVersion",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.targetVersion) || has(self.artifact)",message="spec.targetVersion applies to spec.artifact only; put the tag or digest in spec.image",fieldPath=".targetVersion"
// +kubebuilder:validation:XValidation:rule="!has(self.replicas) || (has(self.deployToLayer) && self.deployToLayer == 'cloud')",message="spec.replicas applies only to deployToLayer: cloud; on the edge the model goes to every node that matches spec.nodeSelector",fieldPath=".replicas"
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
	// or ...@sha256:...) to run as the model. Exclusive with Artifact.
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
}

// RolloutSpec limits how a new digest reaches the nodes. A node keeps serving its
// old version until the new one is Ready.
type RolloutSpec struct {
	// MaxConcurrentNodes is how many nodes may pull a new digest at once.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxConcurrentNodes int32 `json:"maxConcurrentNodes,omitempty"`
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

	// Conditions: Ready summarizes; Reconciling and Stalled appear only while true.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
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
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.nodes.failed`,priority=1
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
