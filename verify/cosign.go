package verify

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"

	"github.com/bargeml/barge/artifact"
)

// BundleMediaTypePrefix starts the artifactType of the referrer in which
// cosign (v3, or v2 with --new-bundle-format) stores a Sigstore bundle, and
// the media type of its one layer.
const BundleMediaTypePrefix = "application/vnd.dev.sigstore.bundle"

// cosignSignPredicate is the in-toto predicate type of `cosign sign`: a
// bundle with another predicate (an SBOM attestation signed by the same key)
// is not a signature of the image.
const cosignSignPredicate = "https://sigstore.dev/cosign/sign/v1"

// cosign verifies Sigstore bundles stored as referrers, with either public
// keys or a trusted root and identities.
type cosign struct {
	// verifiers are tried in turn; a bundle verifying with one is trusted.
	verifiers []keyedVerifier
	policy    []sgverify.PolicyOption
	what      string // "key K" or "identity …", for messages
}

type keyedVerifier struct {
	name string
	v    *sgverify.Verifier
}

func newCosignKey(keys map[string][]byte) (*cosign, error) {
	names := make([]string, 0, len(keys))
	for n := range keys {
		names = append(names, n)
	}
	sort.Strings(names)
	c := &cosign{what: "key " + strings.Join(names, ", "), policy: []sgverify.PolicyOption{sgverify.WithKey()}}
	for _, n := range names {
		pub, err := cryptoutils.UnmarshalPEMToPublicKey(keys[n])
		if err != nil {
			return nil, fmt.Errorf("verify policy: public key %s: %v (want a PEM PUBLIC KEY, as `cosign generate-key-pair` writes to cosign.pub)", n, err)
		}
		sv, err := signature.LoadDefaultVerifier(pub)
		if err != nil {
			return nil, fmt.Errorf("verify policy: public key %s: %v", n, err)
		}
		// No validity window and no timestamps: a key is trusted until the
		// user removes it, as `cosign verify --key` does offline.
		key := root.NewExpiringKey(sv, time.Time{}, time.Time{})
		material := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return key, nil })
		v, err := sgverify.NewVerifier(material, sgverify.WithNoObserverTimestamps())
		if err != nil {
			return nil, fmt.Errorf("verify policy: public key %s: %v", n, err)
		}
		c.verifiers = append(c.verifiers, keyedVerifier{name: n, v: v})
	}
	return c, nil
}

func newCosignKeyless(trustedRoot []byte, ids []Identity) (*cosign, error) {
	if len(ids) == 0 {
		return nil, errors.New("verify policy: keyless cosign needs at least one identity (issuer and subject regular expressions): without one any certificate of the trusted root would do")
	}
	tr, err := root.NewTrustedRootFromJSON(trustedRoot)
	if err != nil {
		return nil, fmt.Errorf("verify policy: trusted root: %v (want a Sigstore trusted_root.json)", err)
	}
	c := &cosign{}
	var whats []string
	for _, id := range ids {
		iss, err := anchored("issuer", id.Issuer)
		if err != nil {
			return nil, err
		}
		sub, err := anchored("subject", id.Subject)
		if err != nil {
			return nil, err
		}
		ci, err := sgverify.NewShortCertificateIdentity("", iss, "", sub)
		if err != nil {
			return nil, fmt.Errorf("verify policy: identity %s from %s: %v", id.Subject, id.Issuer, err)
		}
		c.policy = append(c.policy, sgverify.WithCertificateIdentity(ci))
		whats = append(whats, fmt.Sprintf("%s from %s", id.Subject, id.Issuer))
	}
	c.what = "identity " + strings.Join(whats, " or ")
	// A certificate is short-lived: it must have been valid when the
	// transparency log (or a timestamp authority) saw the signature.
	v, err := sgverify.NewVerifier(tr, sgverify.WithTransparencyLog(1), sgverify.WithObserverTimestamps(1))
	if err != nil {
		return nil, fmt.Errorf("verify policy: trusted root: %v", err)
	}
	c.verifiers = []keyedVerifier{{name: "trusted root", v: v}}
	return c, nil
}

func (c *cosign) Verify(ctx context.Context, src content.ReadOnlyGraphStorage, repository string, desc ocispec.Descriptor) error {
	refs, err := registry.Referrers(ctx, src, desc, "")
	if err != nil {
		return fmt.Errorf("%s@%s: list signatures: %w", repository, desc.Digest, err)
	}
	want, err := hex.DecodeString(desc.Digest.Encoded())
	if err != nil {
		return fmt.Errorf("%s@%s: %w", repository, desc.Digest, err)
	}
	artifactPolicy := sgverify.WithArtifactDigest(desc.Digest.Algorithm().String(), want)
	var errs []error
	tried := 0
	for _, ref := range refs {
		if !strings.HasPrefix(ref.ArtifactType, BundleMediaTypePrefix) {
			continue
		}
		if tried++; tried > maxSignatures {
			errs = append(errs, fmt.Errorf("more than %d signatures: the rest were not tried", maxSignatures))
			break
		}
		b, err := fetchBundle(ctx, src, ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("signature %s: %w", short(ref.Digest), err))
			continue
		}
		if err := c.verifyBundle(b, artifactPolicy); err != nil {
			errs = append(errs, fmt.Errorf("signature %s: %w", short(ref.Digest), err))
			continue
		}
		return nil
	}
	if tried == 0 {
		return fmt.Errorf("%s@%s: %w: no cosign signature (no referrer of type %s…): sign it with `cosign sign --key …` or keyless", repository, desc.Digest, ErrNotVerified, BundleMediaTypePrefix)
	}
	return fmt.Errorf("%s@%s: %w: no cosign signature verifies with %s: %w", repository, desc.Digest, ErrNotVerified, c.what, errors.Join(errs...))
}

func (c *cosign) verifyBundle(b *bundle.Bundle, artifactPolicy sgverify.ArtifactPolicyOption) error {
	var errs []error
	for _, kv := range c.verifiers {
		if _, err := kv.v.Verify(b, sgverify.NewPolicy(artifactPolicy, c.policy...)); err != nil {
			if len(c.verifiers) > 1 {
				err = fmt.Errorf("%s: %w", kv.name, err)
			}
			errs = append(errs, err)
			continue
		}
		return checkPredicate(b)
	}
	return errors.Join(errs...)
}

// checkPredicate refuses a verified bundle that is not a `cosign sign`
// signature: sigstore-go has checked the statement's subject digest, not
// what the statement claims.
func checkPredicate(b *bundle.Bundle) error {
	env, err := b.Envelope()
	if err != nil {
		// A message signature over the digest itself: nothing more to say.
		return nil
	}
	st, err := env.Statement()
	if err != nil {
		return fmt.Errorf("read the signed statement: %v", err)
	}
	if st.PredicateType != cosignSignPredicate {
		return fmt.Errorf("signed statement has predicate type %q, not a signature (%s): an attestation is not a signature", st.PredicateType, cosignSignPredicate)
	}
	return nil
}

// fetchBundle reads the one bundle layer of a cosign referrer.
func fetchBundle(ctx context.Context, src content.Fetcher, ref ocispec.Descriptor) (*bundle.Bundle, error) {
	mb, err := artifact.FetchLimited(ctx, src, ref)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("not a manifest: %v", err)
	}
	for _, l := range m.Layers {
		if !strings.HasPrefix(l.MediaType, BundleMediaTypePrefix) {
			continue
		}
		lb, err := fetchAll(ctx, src, l)
		if err != nil {
			return nil, err
		}
		return parseBundle(lb)
	}
	return nil, fmt.Errorf("no layer of type %s…", BundleMediaTypePrefix)
}

// parseBundle reads a Sigstore bundle from a registry: outside input.
func parseBundle(b []byte) (*bundle.Bundle, error) {
	var bu bundle.Bundle
	if err := bu.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("not a Sigstore bundle: %v", err)
	}
	return &bu, nil
}
