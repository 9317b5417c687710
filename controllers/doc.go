// Package controllers turns what users ask for (InferenceModel, Dataset) into
// digests and per-node work: it resolves versions in the registry, checks the
// artifact's kind, copies metadata and metrics into status, writes one
// NodeArtifact per matching node with a bounded rollout, and runs cloud-layer
// models as a Deployment and a Service. It must not import the edge puller:
// the two sides meet only through the NodeArtifact API.
package controllers
