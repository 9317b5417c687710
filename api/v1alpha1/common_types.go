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

// SeedLabel on a Node ("true") puts the node ahead of the other nodes of
// its site that do not hold a digest yet, so it fetches from the origin
// (or holds the digest already) and the others follow it: a node with a
// good uplink or a big disk, or the node that collected a dataset and
// pushed it with barge push --store.
const SeedLabel = "barge.dev/seed"

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

	// Reason says why this version was chosen, with spec.selection: "accuracy
	// 0.931, best of 5; 2 below metrics.accuracy >= 0.9".
	// +optional
	Reason string `json:"reason,omitempty"`
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

	// Serving is the number of nodes whose serving pod is ready on the
	// resolved digest (edge models with spec.server or spec.image).
	// +optional
	Serving int32 `json:"serving,omitempty"`
}

// VerifySpec says which signatures a digest must carry before it rolls out:
// the controller refuses to resolve to a digest without one, and each node's
// puller checks again before activating it. As Flux's OCIRepository
// spec.verify.
// +kubebuilder:validation:XValidation:rule="has(self.secretRef) != has(self.configMapRef)",message="spec.verify: name the key material with exactly one of secretRef or configMapRef"
// +kubebuilder:validation:XValidation:rule="self.provider == 'cosign' || !has(self.matchOIDCIdentity)",message="spec.verify.matchOIDCIdentity applies to cosign keyless signatures only; notation's trust policy names its identities"
type VerifySpec struct {
	// Provider of the signatures: cosign or notation.
	// +kubebuilder:validation:Enum=cosign;notation
	// +kubebuilder:default=cosign
	// +optional
	Provider string `json:"provider,omitempty"`

	// SecretRef names a Secret in the same namespace holding the key
	// material: for cosign, public keys as *.pub (any one verifying is
	// enough), or trusted_root.json for keyless signatures with
	// matchOIDCIdentity; for notation, trustpolicy.json and the trust
	// store's certificates as TYPE.NAME.crt (ca.acme.crt is the store
	// ca:acme).
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`

	// ConfigMapRef is the same as SecretRef, from a ConfigMap: public keys
	// and certificates are not secret.
	// +optional
	ConfigMapRef *LocalObjectReference `json:"configMapRef,omitempty"`

	// MatchOIDCIdentity lists the keyless signers trusted; a signature by
	// any of them is enough. Needs trusted_root.json in the key material:
	// verification is offline.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	MatchOIDCIdentity []OIDCIdentityMatch `json:"matchOIDCIdentity,omitempty"`

	// SignedIndex is written by the controller, on the NodeArtifacts of a
	// joint model's edge part only: the digest of the joint index that
	// carries the signature. The node verifies the signature on that index
	// and that the index lists the NodeArtifact's digest as its edge part.
	// +kubebuilder:validation:MaxLength=71
	// +kubebuilder:validation:XValidation:rule="self.matches('^sha256:[a-f0-9]{64}$')",message="spec.verify.signedIndex must be sha256: followed by 64 lowercase hex characters"
	// +optional
	SignedIndex string `json:"signedIndex,omitempty"`
}

// OIDCIdentityMatch is a keyless signer: regular expressions (RE2) that
// must match the whole OIDC issuer and the whole subject (the certificate's
// subject alternative name).
type OIDCIdentityMatch struct {
	// Issuer, such as https://token\.actions\.githubusercontent\.com.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Issuer string `json:"issuer"`

	// Subject, such as https://github\.com/acme/models/\.github/workflows/.*.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Subject string `json:"subject"`
}

// KeyMaterialName is the name of the Secret or ConfigMap the spec names.
func (v *VerifySpec) KeyMaterialName() string {
	switch {
	case v == nil:
		return ""
	case v.SecretRef != nil:
		return v.SecretRef.Name
	case v.ConfigMapRef != nil:
		return v.ConfigMapRef.Name
	}
	return ""
}
