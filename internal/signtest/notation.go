package signtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/notaryproject/notation-go"
	notationregistry "github.com/notaryproject/notation-go/registry"
	"github.com/notaryproject/notation-go/signer"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// Notary is a signing identity for Notation: a CA and a leaf certificate
// for code signing, as `notation cert generate-test` makes, but in-process.
type Notary struct {
	CA     *x509.Certificate
	leaf   *x509.Certificate
	key    *ecdsa.PrivateKey
	signer notation.Signer
}

// NewNotary makes a CA and a code-signing leaf under it, named cn.
func NewNotary(tb testing.TB, cn string) *Notary {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn + " CA", Organization: []string{"barge test"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: []string{"barge test"}, Country: []string{"US"}, Province: []string{"WA"}, Locality: []string{"Seattle"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, key.Public(), caKey)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	s, err := signer.NewGenericSigner(key, []*x509.Certificate{leaf, caCert})
	if err != nil {
		tb.Fatal(err)
	}
	return &Notary{CA: caCert, leaf: leaf, key: key, signer: s}
}

// CAPEM is the CA certificate for a trust store.
func (n *Notary) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: n.CA.Raw})
}

// Sign signs desc in the plain-HTTP repository host/repo with notation-go
// (JWS envelope) and stores the signature as a referrer, as `notation sign`
// does.
func (n *Notary) Sign(tb testing.TB, repository string, desc ocispec.Descriptor) {
	tb.Helper()
	repo, err := remote.NewRepository(repository)
	if err != nil {
		tb.Fatal(err)
	}
	repo.PlainHTTP = true
	repo.SkipReferrersGC = true // registries refuse deletes by default (barge serve, the chart)
	_, err = notation.Sign(context.Background(), n.signer, notationregistry.NewRepository(repo), notation.SignOptions{
		SignerSignOptions: notation.SignerSignOptions{SignatureMediaType: "application/jose+json"},
		ArtifactReference: repository + "@" + desc.Digest.String(),
	})
	if err != nil {
		tb.Fatalf("notation sign %s@%s: %v", repository, desc.Digest, err)
	}
}

// TrustPolicy is a trustpolicy.json that trusts signatures on every
// repository (or those in scopes) made under the trust store ca:name, with
// revocation checks off: the test CA publishes no CRL and nodes may be
// offline.
func TrustPolicy(tb testing.TB, name string, scopes ...string) []byte {
	tb.Helper()
	if len(scopes) == 0 {
		scopes = []string{"*"}
	}
	b, err := json.Marshal(map[string]any{
		"version": "1.0",
		"trustPolicies": []any{map[string]any{
			"name":                  "barge-test",
			"registryScopes":        scopes,
			"signatureVerification": map[string]any{"level": "strict", "override": map[string]string{"revocation": "skip"}},
			"trustStores":           []string{"ca:" + name},
			"trustedIdentities":     []string{"*"},
		}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
