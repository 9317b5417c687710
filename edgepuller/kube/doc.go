// Package kube is the edge puller's Kubernetes mode: a Source that lists and
// watches the NodeArtifacts labelled with one node, and a Reporter that patches
// their status and lets their finalizer go once the files are gone. It uses
// only plain list, watch, get and patch requests on NodeArtifacts, so it also
// works through KubeEdge's MetaServer. Only this package of the puller talks
// to the API server; the agent must not import it.
package kube
