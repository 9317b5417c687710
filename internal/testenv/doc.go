// Package testenv starts a real kube-apiserver and etcd, built from their Go
// modules into bin/ by `make tools`, with Barge's CRDs from charts/barge/crds
// installed. Tests start it once per package in TestMain. It is for tests only:
// nothing outside _test.go files may import it.
package testenv
