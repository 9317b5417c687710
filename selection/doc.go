// Package selection chooses a version of an artifact by its metrics and
// metadata: CEL expressions (the language Kubernetes validation uses) that a
// version must pass, and an order among those that do. The controller and
// `barge versions` share it, so a user sees locally the choice a cluster
// makes. It knows nothing of Kubernetes or of registries.
package selection
