// Package artifact is Barge's wire format: the media types and annotations of
// models, code, datasets and metrics, packing a directory into an OCI
// manifest, and reading any manifest back as a typed view. It works against
// oras-go content interfaces and must not import Kubernetes or do network I/O
// of its own.
package artifact
