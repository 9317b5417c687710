// Package upload pushes blobs from local files to an OCI registry over slow,
// flaky links: the distribution spec's chunked upload (POST, PATCH with
// Content-Range, PUT ?digest=) with the upload session and its acknowledged
// offset persisted on disk, so that a cut connection or a killed process
// resumes where the registry stopped instead of at byte 0. It mirrors
// edgepuller/fetch in the other direction and must not import Kubernetes,
// the blob store or the agent.
package upload
