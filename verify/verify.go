package verify

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// Providers a Policy may name.
const (
	ProviderCosign   = "cosign"
	ProviderNotation = "notation"
)

// ErrNotVerified is wrapped by every error that means "the signatures were
// read and none is trusted", as opposed to a registry that could not be
// reached: a caller that retries the second must not retry the first.
var ErrNotVerified = errors.New("signature not verified")

// Verifier checks one manifest.
type Verifier interface {
	// Verify returns nil only if a signature that is a referrer of desc in
	// src verifies under the verifier's policy. repository ("host/path")
	// names where desc lives: Notation matches trust policies by it, and
	// errors name it.
	Verify(ctx context.Context, src content.ReadOnlyGraphStorage, repository string, desc ocispec.Descriptor) error
}

// Identity is a keyless signer the policy trusts: both regular expressions
// must match the whole value (they are anchored), as the OIDC issuer and the
// subject alternative name of the signing certificate.
type Identity struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
}

// Policy is what to trust, with the key material already read. New turns it
// into a Verifier.
type Policy struct {
	// Provider is ProviderCosign or ProviderNotation; if empty, cosign.
	Provider string

	// PublicKeys (cosign with a key): name → PEM public key. A signature
	// verifying with any of them is trusted. The name is only for messages.
	PublicKeys map[string][]byte

	// TrustedRoot (cosign keyless): a Sigstore trusted_root.json, read from
	// the user's configuration and never fetched, so verification works
	// offline. Identities must then list at least one signer.
	TrustedRoot []byte
	Identities  []Identity

	// TrustPolicy (Notation): a trustpolicy.json document. TrustStore holds
	// its certificates: "<type>/<name>" (e.g. "ca/acme") → PEM certificates,
	// the store the policy names as "<type>:<name>".
	TrustPolicy []byte
	TrustStore  map[string][]byte
}

// New checks p and builds its Verifier. The error says which part of the
// policy is wrong.
func New(p Policy) (Verifier, error) {
	switch p.Provider {
	case "", ProviderCosign:
		switch {
		case len(p.PublicKeys) > 0 && len(p.TrustedRoot) > 0:
			return nil, errors.New("verify policy: give cosign either public keys or a trusted root with identities, not both")
		case len(p.PublicKeys) > 0:
			if len(p.Identities) > 0 {
				return nil, errors.New("verify policy: identities apply to keyless signatures; a public key is an identity of its own")
			}
			return newCosignKey(p.PublicKeys)
		case len(p.TrustedRoot) > 0:
			return newCosignKeyless(p.TrustedRoot, p.Identities)
		}
		return nil, errors.New("verify policy: cosign needs a public key, or a trusted root and at least one identity (issuer and subject)")
	case ProviderNotation:
		if len(p.PublicKeys) > 0 || len(p.TrustedRoot) > 0 || len(p.Identities) > 0 {
			return nil, errors.New("verify policy: notation takes a trust policy and a trust store, not cosign keys, trusted roots or identities")
		}
		return newNotation(p.TrustPolicy, p.TrustStore)
	}
	return nil, fmt.Errorf("verify policy: provider %q is not known: use %q or %q", p.Provider, ProviderCosign, ProviderNotation)
}

// anchored compiles a user's regular expression so that it must match the
// whole value: "https://github.com/acme/" must not also accept
// "https://github.com/acme/../evil" by prefix.
func anchored(what, re string) (string, error) {
	if re == "" {
		return "", fmt.Errorf("verify policy: identity %s is empty: give a regular expression (\".*\" to accept any)", what)
	}
	if _, err := regexp.Compile(re); err != nil {
		return "", fmt.Errorf("verify policy: identity %s %q is not a regular expression: %v", what, re, err)
	}
	return "^(?:" + re + ")$", nil
}

// maxSignatures bounds how many referrers are tried, and maxBlob how big one
// may be: both come from whoever can push to the registry.
const (
	maxSignatures = 50
	maxBlob       = 4 << 20
)

func fetchAll(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > maxBlob || desc.Size < 0 {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d a signature may have", desc.Digest, desc.Size, maxBlob)
	}
	return content.FetchAll(ctx, src, desc)
}

func short(d fmt.Stringer) string {
	s := d.String()
	if i := strings.IndexByte(s, ':'); i >= 0 && len(s) > i+13 {
		return s[:i+13] + "…"
	}
	return s
}

// Names of the files (Secret, ConfigMap or directory keys) FromFiles reads.
const (
	FileTrustedRoot = "trusted_root.json"
	FileTrustPolicy = "trustpolicy.json"
)

// FromFiles builds a policy from named files, as a Secret's or ConfigMap's
// data or a mounted directory holds them: cosign public keys as *.pub,
// a keyless trusted root as trusted_root.json, a Notation trust policy as
// trustpolicy.json with its certificates as TYPE.NAME.crt (or .pem), such as
// ca.acme.crt for the store ca:acme. Other files are ignored. ids are the
// keyless identities.
func FromFiles(provider string, files map[string][]byte, ids []Identity) Policy {
	p := Policy{Provider: provider, Identities: ids}
	for name, b := range files {
		switch {
		case name == FileTrustedRoot:
			p.TrustedRoot = b
		case name == FileTrustPolicy:
			p.TrustPolicy = b
		case strings.HasSuffix(name, ".pub"):
			if p.PublicKeys == nil {
				p.PublicKeys = map[string][]byte{}
			}
			p.PublicKeys[name] = b
		case strings.HasSuffix(name, ".crt") || strings.HasSuffix(name, ".pem"):
			base := strings.TrimSuffix(strings.TrimSuffix(name, ".crt"), ".pem")
			typ, store, ok := strings.Cut(base, ".")
			if !ok {
				typ, store = "", base
			}
			if p.TrustStore == nil {
				p.TrustStore = map[string][]byte{}
			}
			p.TrustStore[typ+"/"+store] = b
		}
	}
	if provider == ProviderNotation {
		p.PublicKeys, p.TrustedRoot = nil, nil
		return p
	}
	// Certificates and trust policies belong to Notation; cosign ignores them
	// rather than refusing a Secret that serves both.
	p.TrustPolicy, p.TrustStore = nil, nil
	return p
}
