package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DatasetFormat is how a dataset's files are laid out; package dataset reads each.
// +kubebuilder:validation:Enum=csv;imagelist;imagefolder;voc;coco;yolo;jsonl
type DatasetFormat string

// Dataset formats.
const (
	DatasetCSV         DatasetFormat = "csv"
	DatasetImageList   DatasetFormat = "imagelist"
	DatasetImageFolder DatasetFormat = "imagefolder"
	DatasetVOC         DatasetFormat = "voc"
	DatasetCOCO        DatasetFormat = "coco"
	DatasetYOLO        DatasetFormat = "yolo"
	DatasetJSONL       DatasetFormat = "jsonl"
)

// DatasetSpec says which dataset should be on which nodes.
type DatasetSpec struct {
	// Artifact is an OCI repository of dataset files, without tag or digest,
	// such as registry.example.com/datasets/coco-val.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="!self.contains('@') && !self.substring(self.lastIndexOf('/') + 1).contains(':')",message="spec.artifact is a repository without tag or digest (registry.example.com/datasets/coco); put the version in spec.targetVersion"
	Artifact string `json:"artifact"`

	// TargetVersion of Artifact: a tag, a semver range over the repository's
	// tags (>=1.2 <2), or a manifest digest (sha256:...).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('sha256:') || self.matches('^sha256:[a-f0-9]{64}$')",message="spec.targetVersion: a digest is sha256: followed by 64 lowercase hex characters"
	TargetVersion string `json:"targetVersion"`

	// Format the dataset must have; any format the artifact declares when unset.
	// +optional
	Format DatasetFormat `json:"format,omitempty"`

	// NodeSelector chooses the nodes by label; an empty selector matches every node.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Insecure reaches the registry over plain HTTP.
	// +optional
	Insecure bool `json:"insecure,omitempty"`

	// PullSecretRef names a kubernetes.io/dockerconfigjson Secret in the same
	// namespace that the controller uses to resolve versions.
	// +optional
	PullSecretRef *LocalObjectReference `json:"pullSecretRef,omitempty"`

	// Verify requires a signature on the digest before it rolls out; the
	// previous digest keeps running while a new one fails verification.
	// +kubebuilder:validation:XValidation:rule="!has(self.signedIndex)",message="spec.verify.signedIndex is written by the controller on NodeArtifacts; leave it out"
	// +optional
	Verify *VerifySpec `json:"verify,omitempty"`

	// Interval between two resolutions of a tag or range; at least 30s.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s')",message="spec.interval must be at least 30s: each resolution asks the registry again; for a faster rollout name a new targetVersion"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// DatasetStatus is what the controller observed.
type DatasetStatus struct {
	// ObservedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Resolved is the version and digest spec.targetVersion resolved to.
	// +optional
	Resolved *ResolvedArtifact `json:"resolved,omitempty"`

	// Format the artifact declares.
	// +optional
	Format DatasetFormat `json:"format,omitempty"`

	// NumberOfSamples in the dataset, as its config records.
	// +optional
	NumberOfSamples int64 `json:"numberOfSamples,omitempty"`

	// Classes maps each class label to its number of samples.
	// +optional
	Classes map[string]int64 `json:"classes,omitempty"`

	// Size in bytes of the dataset's files.
	// +optional
	Size int64 `json:"size,omitempty"`

	// Nodes counts the NodeArtifacts of this dataset by state.
	// +optional
	Nodes NodeCounts `json:"nodes,omitempty"`

	// Conditions: Ready summarizes; Reconciling and Stalled appear only while true.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// Dataset puts a dataset, an OCI artifact of data files, on the nodes that
// match its selector.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=barge
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.resolved.version`
// +kubebuilder:printcolumn:name="Digest",type=string,JSONPath=`.status.resolved.shortDigest`
// +kubebuilder:printcolumn:name="Format",type=string,JSONPath=`.status.format`
// +kubebuilder:printcolumn:name="Samples",type=integer,JSONPath=`.status.numberOfSamples`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.nodes.desired`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.nodes.ready`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.nodes.failed`,priority=1
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Dataset struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DatasetSpec   `json:"spec"`
	Status DatasetStatus `json:"status,omitempty"`
}

// DatasetList is a list of Datasets.
//
// +kubebuilder:object:root=true
type DatasetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Dataset `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Dataset{}, &DatasetList{})
}
