package v1alpha1

// DefaultEdgeRoot is the edge puller's default --root on each node, and so
// the controller's default --edge-root. A node holds an artifact's files in
// <root>/artifacts/<namespace>/<artifactName>/versions/<algorithm>-<hex>,
// with <root>/artifacts/<namespace>/<artifactName>/current a symlink to the
// active version.
const DefaultEdgeRoot = "/var/lib/barge"

// DigestAnnotation on an edge serving pod (and its DaemonSet's template) is
// the digest the pod serves: the manifest digest of the files it mounts, or
// of the image it runs.
const DigestAnnotation = "barge.dev/digest"
