// Package registry runs the embedded OCI registry: CNCF distribution v3
// in-process, on filesystem, in-memory or S3-compatible storage
// (distribution's own drivers), loopback by default, with optional TLS and
// read-write and read-only htpasswd users in front of it. `barge serve`, the
// quickstart and every test that needs a registry use it. It must not
// import anything Kubernetes or edge-puller specific.
package registry
