// Package fetch moves artifacts from an OCI registry (or its mirrors) into
// the edge puller's blob store over slow, flaky links: per-blob HTTP Range
// resume, retries with backoff, parallel layers, a shared bandwidth limit and
// progress events. It must not import Kubernetes, the unpacker or the status
// reporter: it only turns references into verified blobs in the store.
package fetch
