package v1alpha1

import (
	"fmt"

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

	// Upload asks the puller to upload a trainer's update for one round of
	// a TrainingModel: once UploadDir's DONE marker appears, the puller
	// pushes that directory as an update artifact, a referrer of
	// spec.digest, to upload.repository with the node's own push
	// credential.
	// +optional
	Upload *UploadSpec `json:"upload,omitempty"`

	// Peers are other nodes of the same site (see the controller's
	// --site-label) that hold or are fetching spec.digest, in the order the
	// puller tries them before the origin: the site's seeds first. A node
	// with no peers fetches from the origin. The puller verifies every byte
	// against its digest, so a peer can cost time, never correctness; one
	// that serves wrong bytes or stalls is dropped for that pull.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	Peers []Peer `json:"peers,omitempty"`
}

// Peer is a node whose puller serves its store to the site.
type Peer struct {
	// Node is the peer's node name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`

	// Address is host:port of the peer's puller (its node's InternalIP and
	// the chart's edgePuller.peers.port).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=261
	Address string `json:"address"`
}

// UploadSpec is one round's update that a node's puller uploads.
type UploadSpec struct {
	// Round of the TrainingModel, from 1.
	// +kubebuilder:validation:Minimum=1
	Round int32 `json:"round"`

	// Repository the update is pushed to, without tag or digest: the
	// TrainingModel's spec.output.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="!self.contains('@') && !self.substring(self.lastIndexOf('/') + 1).contains(':')",message="spec.upload.repository is a repository without tag or digest"
	Repository string `json:"repository"`

	// Run is the TrainingModel's uid, annotated on the update, so that the
	// updates of two trainings from one base never mix.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Run string `json:"run,omitempty"`
}

// UploadDir is where the trainer of a round writes its update on a node,
// relative to the puller's root: uploads/<namespace>/<artifactName>/round-<N>.
func UploadDir(namespace, artifactName string, round int32) string {
	return fmt.Sprintf("uploads/%s/%s/round-%d", namespace, artifactName, round)
}

// UploadPhase is where a node's upload of a round's update stands.
// +kubebuilder:validation:Enum=Waiting;Uploading;Uploaded;Failed
type UploadPhase string

const (
	// UploadWaiting: the trainer has not written its DONE marker yet.
	UploadWaiting UploadPhase = "Waiting"
	// UploadUploading: the update's blobs are being pushed.
	UploadUploading UploadPhase = "Uploading"
	// UploadUploaded: the update's manifest is in the registry, status.upload.digest.
	UploadUploaded UploadPhase = "Uploaded"
	// UploadFailed: the update was refused (malformed) or could not be pushed.
	UploadFailed UploadPhase = "Failed"
)

// UploadStatus is the node's upload of one round's update.
type UploadStatus struct {
	// Round the status describes: spec.upload.round once the puller saw it.
	Round int32 `json:"round"`

	// Phase of the upload.
	// +optional
	Phase UploadPhase `json:"phase,omitempty"`

	// Digest of the update manifest once Uploaded.
	// +kubebuilder:validation:MaxLength=71
	// +optional
	Digest string `json:"digest,omitempty"`

	// Samples the trainer reported.
	// +optional
	Samples int64 `json:"samples,omitempty"`

	// BytesDone of BytesTotal uploaded so far.
	// +optional
	BytesDone int64 `json:"bytesDone,omitempty"`

	// BytesTotal is the size of the update's files.
	// +optional
	BytesTotal int64 `json:"bytesTotal,omitempty"`

	// Message says why the upload waits or failed.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Message string `json:"message,omitempty"`
}

// ByteSources counts received bytes by source.
type ByteSources struct {
	// Origin is the bytes received from the registry itself.
	// +optional
	Origin int64 `json:"origin,omitempty"`
	// Peers is the bytes received from other nodes of the site.
	// +optional
	Peers int64 `json:"peers,omitempty"`
	// Mirrors is the bytes received from configured registry mirrors.
	// +optional
	Mirrors int64 `json:"mirrors,omitempty"`
}

// DroppedPeer is a peer a pull stopped using.
type DroppedPeer struct {
	// Node is the peer's node name.
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`
	// Reason says what the peer did: Corrupt (bytes that did not match
	// their digest), Stalled, Unreachable or Refused (TLS or HTTP error).
	// +kubebuilder:validation:Enum=Corrupt;Stalled;Unreachable;Refused
	Reason string `json:"reason"`
	// Message gives the detail.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Message string `json:"message,omitempty"`
}

// MaxPeers is how many peers a NodeArtifact lists at most.
const MaxPeers = 16

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

	// Sources counts the bytes of spec.digest's last pull by where they
	// came from, so an operator sees what the site's peers saved the
	// uplink.
	// +optional
	Sources *ByteSources `json:"sources,omitempty"`

	// DroppedPeers are the peers the last pull stopped using, and why: a
	// peer that served bytes that did not match their digest, or stalled.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	DroppedPeers []DroppedPeer `json:"droppedPeers,omitempty"`

	// Upload is the upload of spec.upload's round.
	// +optional
	Upload *UploadStatus `json:"upload,omitempty"`

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
