// Package v1alpha1 is the barge.dev/v1alpha1 Kubernetes API: what users ask for
// (InferenceModel, Dataset) and the per-node work the controller derives from it
// (NodeArtifact). It holds types, defaults and schema validation only; it must not
// import controllers, the edge puller or anything that talks to a registry.
//
// +kubebuilder:object:generate=true
// +groupName=barge.dev
package v1alpha1
