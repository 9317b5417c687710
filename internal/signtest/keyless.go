package signtest

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
)

// Keyless is an offline Sigstore: a Fulcio CA, a Rekor log and a timestamp
// authority that exist only in the test (sigstore-go's VirtualSigstore).
type Keyless struct {
	vs *ca.VirtualSigstore
}

// NewKeyless starts a virtual Sigstore.
func NewKeyless(tb testing.TB) *Keyless {
	tb.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		tb.Fatal(err)
	}
	return &Keyless{vs: vs}
}

// TrustedRoot is the trusted_root.json a user would give to verify this
// Sigstore's signatures offline.
func (k *Keyless) TrustedRoot(tb testing.TB) []byte {
	tb.Helper()
	// The virtual logs carry their IDs as hex text where a trusted root
	// holds the raw key ID: convert, or the JSON names logs that no entry
	// refers to.
	rawIDs := func(logs map[string]*root.TransparencyLog) map[string]*root.TransparencyLog {
		for id, l := range logs {
			raw, err := hex.DecodeString(id)
			if err != nil {
				tb.Fatal(err)
			}
			l.ID = raw
		}
		return logs
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, k.vs.FulcioCertificateAuthorities(), rawIDs(k.vs.CTLogs()), k.vs.TimestampingAuthorities(), rawIDs(k.vs.RekorLogs()))
	if err != nil {
		tb.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Bundle signs subject as `cosign sign` does (an in-toto statement with the
// cosign sign predicate, in DSSE), with a certificate for identity from
// issuer, logged in the virtual Rekor, and returns the Sigstore bundle.
func (k *Keyless) Bundle(tb testing.TB, identity, issuer string, subject ocispec.Descriptor) []byte {
	tb.Helper()
	statement, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": "model", "digest": map[string]string{subject.Digest.Algorithm().String(): subject.Digest.Encoded()}}},
		"predicateType": "https://sigstore.dev/cosign/sign/v1",
		"predicate":     map[string]any{},
	})
	if err != nil {
		tb.Fatal(err)
	}
	// As VirtualSigstore.Attest does: a log time inside the certificate's
	// validity, with an inclusion proof, which bundle v0.3 requires.
	ent, err := k.vs.AttestAtTime(identity, issuer, statement, time.Now().Add(5*time.Minute), true)
	if err != nil {
		tb.Fatal(err)
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		tb.Fatal(err)
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		tb.Fatal(err)
	}
	env := sc.(*bundle.Envelope).Envelope
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		tb.Fatal(err)
	}
	pe := &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType}
	for _, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			tb.Fatal(err)
		}
		pe.Signatures = append(pe.Signatures, &protodsse.Signature{Sig: sig, Keyid: s.KeyID})
	}
	entries, _ := ent.TlogEntries()
	var tles []*protorekor.TransparencyLogEntry
	for _, e := range entries {
		// The virtual log builds its entries without the kind, which a
		// bundle must carry: they are Rekor v1 DSSE entries.
		tle := proto.Clone(e.TransparencyLogEntry()).(*protorekor.TransparencyLogEntry)
		tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
		tles = append(tles, tle)
	}
	stamps, _ := ent.Timestamps()
	var ts []*protocommon.RFC3161SignedTimestamp
	for _, s := range stamps {
		ts = append(ts, &protocommon.RFC3161SignedTimestamp{SignedTimestamp: s})
	}
	pb := &protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:                   &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
			TlogEntries:               tles,
			TimestampVerificationData: &protobundle.TimestampVerificationData{Rfc3161Timestamps: ts},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: pe},
	}
	b, err := protojson.Marshal(pb)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BundleArtifactType is what cosign v3 gives the referrer holding a bundle.
const BundleArtifactType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// PushBundle stores a Sigstore bundle as a referrer of subject, the way
// cosign v3 does: one layer, the bundle, with the bundle's media type.
func PushBundle(tb testing.TB, dst content.Pusher, subject ocispec.Descriptor, b []byte) ocispec.Descriptor {
	tb.Helper()
	ctx := context.Background()
	layer, err := oras.PushBytes(ctx, dst, BundleArtifactType, b)
	if err != nil {
		tb.Fatal(err)
	}
	desc, err := oras.PackManifest(ctx, dst, oras.PackManifestVersion1_1, BundleArtifactType, oras.PackManifestOptions{
		Layers: []ocispec.Descriptor{layer}, Subject: &subject,
	})
	if err != nil {
		tb.Fatalf("push bundle for %s: %v", subject.Digest, err)
	}
	return desc
}
