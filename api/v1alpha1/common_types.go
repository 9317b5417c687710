package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types. Ready summarizes an object; Reconciling and Stalled are
// present only while true, as kstatus expects.
const (
	ReadyCondition       = "Ready"
	ReconcilingCondition = "Reconciling"
	StalledCondition     = "Stalled"
)

// NodeLabel on a NodeArtifact names the node whose puller does its work, so each
// puller can list and watch only its own objects.
const NodeLabel = "barge.dev/node"

// FilesFinalizer is on every NodeArtifact: the node's puller removes it once
// it has deleted the files. The controller removes it only when the Node
// itself is gone, so that a deletion cannot hang on a missing node.
const FilesFinalizer = "barge.dev/files"

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// Name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ResolvedArtifact is what a targetVersion resolved to in the registry. From then
// on the controller works by Digest only.
type ResolvedArtifact struct {
	// Version is the tag that was resolved; empty when targetVersion is a digest.
	// +optional
	Version string `json:"version,omitempty"`

	// Digest of the manifest, sha256:<64 hex>.
	// +optional
	Digest string `json:"digest,omitempty"`

	// ShortDigest is the first 12 hex characters of Digest, for kubectl columns.
	// +optional
	ShortDigest string `json:"shortDigest,omitempty"`

	// ArtifactType of the manifest, such as application/vnd.cncf.model.manifest.v1+json.
	// +optional
	ArtifactType string `json:"artifactType,omitempty"`

	// Size in bytes of the config and layers the manifest references.
	// +optional
	Size int64 `json:"size,omitempty"`

	// ResolvedAt is when the controller last resolved targetVersion.
	// +optional
	ResolvedAt *metav1.Time `json:"resolvedAt,omitempty"`
}

// NodeCounts counts the NodeArtifacts of an object by state.
type NodeCounts struct {
	// Desired is the number of nodes that should hold the artifact.
	// +optional
	Desired int32 `json:"desired,omitempty"`

	// Ready is the number of nodes that hold the resolved digest.
	// +optional
	Ready int32 `json:"ready,omitempty"`

	// Failed is the number of nodes whose pull failed.
	// +optional
	Failed int32 `json:"failed,omitempty"`
}
