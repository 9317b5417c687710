package verify

import "testing"

// Bundles come from whoever can push to the registry: reading one, and
// checking what it claims, must fail cleanly, never panic.
func FuzzParseBundle(f *testing.F) {
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"x"}},"dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"AA=="}]}}`))
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle+json;version=0.1"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		bu, err := parseBundle(b)
		if err != nil {
			return
		}
		_ = checkPredicate(bu)
	})
}

// Key material comes from users' Secrets, ConfigMaps and node directories,
// by file name.
func FuzzFromFiles(f *testing.F) {
	f.Add("cosign", "cosign.pub", []byte("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"))
	f.Add("notation", "ca.acme.crt", []byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"))
	f.Add("notation", "trustpolicy.json", []byte(`{"version":"1.0","trustPolicies":[{"name":"a","registryScopes":["*"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]}]}`))
	f.Add("cosign", "trusted_root.json", []byte(`{}`))
	f.Fuzz(func(t *testing.T, provider, name string, b []byte) {
		_, _ = New(FromFiles(provider, map[string][]byte{name: b}, []Identity{{Issuer: ".*", Subject: ".*"}}))
	})
}
