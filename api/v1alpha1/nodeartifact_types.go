package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeArtifactPhase is where a node's puller is with a NodeArtifact.
// +kubebuilder:validation:Enum=Pending;Pulling;Ready;Failed
type NodeArtifactPhase string

const (
	// NodeArtifactPending: the puller has not started on this digest.
	NodeArtifactPending NodeArtifactPhase = "Pending"
	// NodeArtifactPulling: layers are being fetched or unpacked.
	NodeArtifactPulling NodeArtifactPhase = "Pulling"
	// NodeArtifactReady: the files of status.digest are in status.path.
	NodeArtifactReady NodeArtifactPhase = "Ready"
	// NodeArtifactFailed: the pull failed; status.message says why.
	NodeArtifactFailed NodeArtifactPhase = "Failed"
)

// NodeArtifactSpec is one artifact, by digest, that one node must hold. The
// controller writes it.
//
// +kubebuilder:validation:XValidation:rule="self.reference.endsWith('@' + self.digest)",message="spec.reference must be the repository followed by @ and spec.digest"
type NodeArtifactSpec struct {
	// NodeName is the node whose puller materializes the artifact.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.nodeName is immutable; create a NodeArtifact for the other node"
	NodeName string `json:"nodeName"`

	// Reference is repository@digest, such as
	// registry.example.com/models/resnet50@sha256:...
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Reference string `json:"reference"`

	// Digest of the manifest to materialize.
	// +kubebuilder:validation:MaxLength=71
	// +kubebuilder:validation:XValidation:rule="self.matches('^sha256:[a-f0-9]{64}$')",message="spec.digest must be sha256: followed by 64 lowercase hex characters"
	Digest string `json:"digest"`

	// Insecure reaches the registry over plain HTTP.
	// +optional
	Insecure bool `json:"insecure,omitempty"`

	// ArtifactName names the directory of the files on the node,
	// <root>/artifacts/<namespace>/<artifactName>/current, the same on every
	// node (model-<name> for an InferenceModel, dataset-<name> for a
	// Dataset), so a workload can mount one hostPath wherever it runs. The
	// NodeArtifact's own name when empty.
	// +kubebuilder:validation:MaxLength=136
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +optional
	ArtifactName string `json:"artifactName,omitempty"`

	// Verify is the owner's spec.verify: the puller checks the digest's
	// signature again before activating it, with key material from its own
	// node (see the chart's edgePuller.verify), never from this object.
	// +optional
	Verify *VerifySpec `json:"verify,omitempty"`
}

// MaxArtifactName is the longest spec.artifactName: with a namespace (63)
// and a '/', it fills the 200 characters a puller accepts as an artifact's
// name, which keep <root>/artifacts/<name>/versions/sha256-<hex> within the
// file-name limits of common filesystems.
const MaxArtifactName = 136

// NodeArtifactStatus is written only by the puller of spec.nodeName.
type NodeArtifactStatus struct {
	// ObservedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase of the pull.
	// +optional
	Phase NodeArtifactPhase `json:"phase,omitempty"`

	// Digest that is materialized on the node now; during a rollout it is
	// still the old one until the new one is Ready.
	// +optional
	Digest string `json:"digest,omitempty"`

	// Path is the absolute directory of the files on the node.
	// +optional
	Path string `json:"path,omitempty"`

	// BytesDone of BytesTotal fetched so far for spec.digest.
	// +optional
	BytesDone int64 `json:"bytesDone,omitempty"`

	// BytesTotal is the size of the layers of spec.digest.
	// +optional
	BytesTotal int64 `json:"bytesTotal,omitempty"`

	// Message says what the puller is doing or why it failed.
	// +optional
	Message string `json:"message,omitempty"`

	// Conditions: Ready summarizes; Reconciling and Stalled appear only while true.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// NodeArtifact is one artifact that one node must hold, like a Pod is one
// workload on one node: the controller writes the spec, the node's puller the
// status. It carries the label barge.dev/node=<spec.nodeName>.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=barge
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Done",type=integer,JSONPath=`.status.bytesDone`,priority=1
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.bytesTotal`,priority=1
// +kubebuilder:printcolumn:name="Reference",type=string,JSONPath=`.spec.reference`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeArtifact struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeArtifactSpec   `json:"spec"`
	Status NodeArtifactStatus `json:"status,omitempty"`
}

// NodeArtifactList is a list of NodeArtifacts.
//
// +kubebuilder:object:root=true
type NodeArtifactList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeArtifact `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeArtifact{}, &NodeArtifactList{})
}
