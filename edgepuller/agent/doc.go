// Package agent is the edge puller's orchestrator: one loop that takes the
// desired artifacts from a Source, fetches them into the blob store, activates
// them under root/artifacts/<name>, reports their status to a Reporter and
// collects garbage. It keeps serving and finishing what it knew when its
// source is gone (edge autonomy): the desired list is persisted under root.
// It must not import Kubernetes: the Kubernetes mode implements Source and
// Reporter elsewhere.
package agent
