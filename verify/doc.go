// Package verify checks that a manifest carries a signature a policy trusts,
// before anything acts on it: cosign with a public key, cosign keyless with
// an identity and an offline trusted root, or Notation with a trust policy and
// a trust store. Signatures are found as referrers of the manifest; the
// cryptography is sigstore-go's and notation-go's, never our own. It works on
// oras-go content interfaces and must not import Kubernetes.
package verify
