// Package signtest signs artifacts in tests the way users do: with the real
// cosign CLI built into bin/, keyless through sigstore-go's offline test CA,
// and with notation-go's signer and a certificate chain made here. Tests
// only; it must not be imported by a binary.
package signtest
