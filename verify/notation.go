package verify

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/notaryproject/notation-go"
	notationregistry "github.com/notaryproject/notation-go/registry"
	notationverifier "github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"

	"github.com/bargeml/barge/artifact"
)

// notary verifies Notation signatures with notation-go's verifier.
type notary struct {
	verifier notation.Verifier
	stores   string // the trust store names, for messages
}

func newNotation(policy []byte, store map[string][]byte) (*notary, error) {
	if len(policy) == 0 {
		return nil, errors.New("verify policy: notation needs a trust policy (trustpolicy.json)")
	}
	var doc trustpolicy.Document
	dec := json.NewDecoder(strings.NewReader(string(policy)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("verify policy: trust policy: %v (want notation's trustpolicy.json, version 1.0)", err)
	}
	if err := doc.Validate(); err != nil {
		return nil, fmt.Errorf("verify policy: trust policy: %v", err)
	}
	ts, err := newTrustStore(store)
	if err != nil {
		return nil, err
	}
	v, err := notationverifier.New(&doc, ts, nil)
	if err != nil {
		return nil, fmt.Errorf("verify policy: notation: %v", err)
	}
	return &notary{verifier: v, stores: ts.names()}, nil
}

func (n *notary) Verify(ctx context.Context, src content.ReadOnlyGraphStorage, repository string, desc ocispec.Descriptor) error {
	ref := repository + "@" + desc.Digest.String()
	_, outcomes, err := notation.Verify(ctx, n.verifier, &notationRepo{src: src, desc: desc}, notation.VerifyOptions{
		ArtifactReference:    ref,
		MaxSignatureAttempts: maxSignatures,
	})
	if err == nil {
		return nil
	}
	var why []string
	for _, o := range outcomes {
		if o.Error != nil {
			why = append(why, o.Error.Error())
		}
	}
	if len(why) > 0 {
		err = fmt.Errorf("%w (%s)", err, strings.Join(why, "; "))
	}
	var retrieval notation.ErrorSignatureRetrievalFailed
	if errors.As(err, &retrieval) {
		if strings.Contains(err.Error(), "no signature is associated") {
			return fmt.Errorf("%s: %w: no notation signature: sign it with `notation sign`", ref, ErrNotVerified)
		}
		// The registry did not answer: not a verdict on the signatures.
		return fmt.Errorf("%s: read notation signatures: %w", ref, err)
	}
	return fmt.Errorf("%s: %w: no notation signature verifies with trust store %s: %w", ref, ErrNotVerified, n.stores, err)
}

// notationRepo gives notation-go the signatures of one manifest from any
// oras-go graph storage: a remote repository (through the referrers API or
// its tag fallback) or a local store.
type notationRepo struct {
	src  content.ReadOnlyGraphStorage
	desc ocispec.Descriptor
}

func (r *notationRepo) Resolve(_ context.Context, reference string) (ocispec.Descriptor, error) {
	if reference != r.desc.Digest.String() {
		return ocispec.Descriptor{}, fmt.Errorf("verify %s: asked for %s", r.desc.Digest, reference)
	}
	return r.desc, nil
}

func (r *notationRepo) ListSignatures(ctx context.Context, desc ocispec.Descriptor, fn func([]ocispec.Descriptor) error) error {
	refs, err := registry.Referrers(ctx, r.src, desc, notationregistry.ArtifactTypeNotation)
	if err != nil {
		return err
	}
	return fn(refs)
}

func (r *notationRepo) FetchSignatureBlob(ctx context.Context, desc ocispec.Descriptor) ([]byte, ocispec.Descriptor, error) {
	mb, err := artifact.FetchLimited(ctx, r.src, desc)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("signature manifest %s: %v", desc.Digest, err)
	}
	if len(m.Layers) != 1 {
		return nil, ocispec.Descriptor{}, fmt.Errorf("signature manifest %s has %d layers, want 1 signature envelope", desc.Digest, len(m.Layers))
	}
	b, err := fetchAll(ctx, r.src, m.Layers[0])
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return b, m.Layers[0], nil
}

func (r *notationRepo) PushSignature(context.Context, string, []byte, ocispec.Descriptor, map[string]string) (ocispec.Descriptor, ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, ocispec.Descriptor{}, errors.New("verify: read-only")
}

// trustStore holds the certificates of a trust policy's stores in memory, so
// they can come from a ConfigMap as well as from notation's directory.
type trustStore map[string][]*x509.Certificate

func newTrustStore(pems map[string][]byte) (trustStore, error) {
	ts := trustStore{}
	for key, pem := range pems {
		typ, name, ok := strings.Cut(key, "/")
		if !ok || name == "" || strings.Contains(name, "/") || !validStoreType(typ) {
			return nil, fmt.Errorf("verify policy: trust store %q: name it TYPE/NAME with TYPE one of ca, signingAuthority, tsa (the policy refers to it as TYPE:NAME)", key)
		}
		certs, err := parseCertificates(pem)
		if err != nil {
			return nil, fmt.Errorf("verify policy: trust store %s: %v", key, err)
		}
		if err := truststore.ValidateCertificates(certs); err != nil {
			return nil, fmt.Errorf("verify policy: trust store %s: %v", key, err)
		}
		ts[key] = append(ts[key], certs...)
	}
	return ts, nil
}

func validStoreType(t string) bool {
	for _, v := range truststore.Types {
		if string(v) == t {
			return true
		}
	}
	return false
}

func (ts trustStore) GetCertificates(_ context.Context, typ truststore.Type, name string) ([]*x509.Certificate, error) {
	certs := ts[string(typ)+"/"+name]
	if len(certs) == 0 {
		return nil, truststore.TrustStoreError{Msg: fmt.Sprintf("trust store %s:%s has no certificates: add them to the verify policy's trust store as %s/%s", typ, name, typ, name)}
	}
	return certs, nil
}

func (ts trustStore) names() string {
	var n []string
	for k := range ts {
		n = append(n, strings.Replace(k, "/", ":", 1))
	}
	sort.Strings(n)
	if len(n) == 0 {
		return "(empty)"
	}
	return strings.Join(n, ", ")
}
