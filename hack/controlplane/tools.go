//go:build tools

// Package controlplane pins the kube-apiserver and etcd that envtest starts,
// and the kubectl the quickstart drives them with.
// `make tools` builds both into bin/; nothing here is imported by Barge.
package controlplane

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
