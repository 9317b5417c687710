//go:build tools

// Package tools pins the command-line tools the Makefile builds into bin/.
// Every tool comes from the Go module proxy at the version in go.mod.
package tools

import (
	_ "github.com/sigstore/cosign/v3/cmd/cosign"
	_ "helm.sh/helm/v3/cmd/helm"
	_ "oras.land/oras/cmd/oras"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
