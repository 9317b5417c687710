// Package registry runs the embedded OCI registry: CNCF distribution v3
// in-process, on filesystem or in-memory storage, loopback by default.
// `barge serve`, the quickstart and every test that needs a registry use it.
// It must not import anything Kubernetes or edge-puller specific.
package registry
