// Package trust is the node's side of signature verification: it checks a
// version before the agent activates it, with key material kept on the node
// (a mounted ConfigMap), never with what the desired entry says, so a
// tampered NodeArtifact cannot bring its own key. It must not import
// Kubernetes: the puller has no read access to Secrets or ConfigMaps.
package trust
