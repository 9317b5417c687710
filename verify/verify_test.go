package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	orasregistry "oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/internal/signtest"
	"github.com/bargeml/barge/registry"
	"github.com/bargeml/barge/verify"
)

// fixture is a registry with two versions of one model: the tests sign v1
// and leave v2 unsigned, or copy v1's signature onto v2.
type fixture struct {
	repo   *remote.Repository
	name   string // host/repo
	v1, v2 ocispec.Descriptor
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	reg := registry.StartForTest(t)
	v1 := reg.PushForTest(t, "models/resnet", "1.0.0", map[string]string{"weights.bin": "one"})
	v2 := reg.PushForTest(t, "models/resnet", "2.0.0", map[string]string{"weights.bin": "two"})
	name := reg.Host() + "/models/resnet"
	repo, err := remote.NewRepository(name)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	return fixture{repo: repo, name: name, v1: v1, v2: v2}
}

func (f fixture) ref(d ocispec.Descriptor) string { return f.name + "@" + d.Digest.String() }

// copySignatures re-pushes every referrer of from as a referrer of to,
// unchanged but for the subject: what an attacker who can push does to make
// an unsigned digest look signed.
func copySignatures(t *testing.T, repo *remote.Repository, from, to ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	refs, err := orasregistry.Referrers(ctx, repo, from, "")
	if err != nil || len(refs) == 0 {
		t.Fatalf("referrers of %s: %v (%d)", from.Digest, err, len(refs))
	}
	for _, r := range refs {
		b, err := content.FetchAll(ctx, repo, r)
		if err != nil {
			t.Fatal(err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m.Subject = &to
		nb, _ := json.Marshal(m)
		if _, err := oras.PushBytes(ctx, repo, r.MediaType, nb); err != nil {
			t.Fatalf("push copied signature: %v", err)
		}
	}
	after, _ := orasregistry.Referrers(ctx, repo, to, "")
	if len(after) != len(refs) {
		t.Fatalf("%s has %d referrers after the copy, want %d", to.Digest, len(after), len(refs))
	}
}

func mustNew(t *testing.T, p verify.Policy) verify.Verifier {
	t.Helper()
	v, err := verify.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// wantRefused checks that err is a verdict (not a registry error), names the
// digest, and says why.
func wantRefused(t *testing.T, err error, d ocispec.Descriptor, why string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s verified; want refused (%s)", d.Digest, why)
	}
	if !errors.Is(err, verify.ErrNotVerified) {
		t.Errorf("error does not wrap ErrNotVerified: %v", err)
	}
	if !strings.Contains(err.Error(), d.Digest.String()) || !strings.Contains(err.Error(), why) {
		t.Errorf("error %q; want the digest %s and %q", err, d.Digest, why)
	}
}

func TestCosignKey(t *testing.T) {
	f := newFixture(t)
	key, pub := signtest.CosignKeyPair(t)
	_, otherPub := signtest.CosignKeyPair(t)
	signtest.CosignSign(t, key, f.ref(f.v1))
	ctx := context.Background()
	pubPEM, _ := os.ReadFile(pub)
	otherPEM, _ := os.ReadFile(otherPub)
	good := mustNew(t, verify.Policy{PublicKeys: map[string][]byte{"cosign.pub": pubPEM}})

	if err := good.Verify(ctx, f.repo, f.name, f.v1); err != nil {
		t.Fatalf("signed v1: %v", err)
	}
	t.Run("any of several keys", func(t *testing.T) {
		v := mustNew(t, verify.Policy{PublicKeys: map[string][]byte{"old.pub": otherPEM, "new.pub": pubPEM}})
		if err := v.Verify(ctx, f.repo, f.name, f.v1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		v := mustNew(t, verify.Policy{PublicKeys: map[string][]byte{"other.pub": otherPEM}})
		wantRefused(t, v.Verify(ctx, f.repo, f.name, f.v1), f.v1, "no cosign signature verifies with key other.pub")
	})
	t.Run("unsigned", func(t *testing.T) {
		wantRefused(t, good.Verify(ctx, f.repo, f.name, f.v2), f.v2, "no cosign signature")
	})
	t.Run("signature of another digest", func(t *testing.T) {
		copySignatures(t, f.repo, f.v1, f.v2)
		wantRefused(t, good.Verify(ctx, f.repo, f.name, f.v2), f.v2, "no cosign signature verifies with key cosign.pub")
	})
	// An attestation is signed with the same key but is not a signature.
	t.Run("attestation is not a signature", func(t *testing.T) {
		pred := filepath.Join(t.TempDir(), "sbom.json")
		if err := os.WriteFile(pred, []byte(`{"packages":[]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, stderr, err := signtest.Cosign(t, "attest", "--key", key, "--type", "custom", "--predicate", pred,
			"--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry", "--yes", f.ref(f.v2)); err != nil {
			t.Fatalf("cosign attest: %v\n%s", err, stderr)
		}
		wantRefused(t, good.Verify(ctx, f.repo, f.name, f.v2), f.v2, "an attestation is not a signature")
	})
	// The real cosign accepts what we accept: the test's signature is one
	// users would check with `cosign verify`.
	t.Run("cosign verify agrees", func(t *testing.T) {
		if _, stderr, err := signtest.Cosign(t, "verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-http-registry", f.ref(f.v1)); err != nil {
			t.Fatalf("cosign verify: %v\n%s", err, stderr)
		}
	})
}

func TestCosignKeyless(t *testing.T) {
	f := newFixture(t)
	ks := signtest.NewKeyless(t)
	const (
		issuer  = "https://token.actions.githubusercontent.com"
		subject = "https://github.com/acme/models/.github/workflows/train.yaml@refs/heads/main"
	)
	signtest.PushBundle(t, f.repo, f.v1, ks.Bundle(t, subject, issuer, f.v1))
	ctx := context.Background()
	root := ks.TrustedRoot(t)
	policy := func(iss, sub string) verify.Verifier {
		return mustNew(t, verify.Policy{TrustedRoot: root, Identities: []verify.Identity{{Issuer: iss, Subject: sub}}})
	}

	for _, c := range []struct{ name, issuer, subject, refused string }{
		{"exact identity", regexpQuote(issuer), regexpQuote(subject), ""},
		{"subject pattern", regexpQuote(issuer), `https://github\.com/acme/.*`, ""},
		{"other subject", regexpQuote(issuer), `https://github\.com/evil/.*`, "no cosign signature verifies with identity"},
		{"other issuer", `https://accounts\.google\.com`, ".*", "no cosign signature verifies with identity"},
		// Anchored: a prefix of the subject is not a match.
		{"prefix only", regexpQuote(issuer), `https://github\.com/acme/models`, "no cosign signature verifies with identity"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := policy(c.issuer, c.subject).Verify(ctx, f.repo, f.name, f.v1)
			if c.refused == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantRefused(t, err, f.v1, c.refused)
		})
	}
	t.Run("second identity matches", func(t *testing.T) {
		v := mustNew(t, verify.Policy{TrustedRoot: root, Identities: []verify.Identity{
			{Issuer: "https://accounts.google.com", Subject: ".*"}, {Issuer: regexpQuote(issuer), Subject: ".*"}}})
		if err := v.Verify(ctx, f.repo, f.name, f.v1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("another Sigstore's root", func(t *testing.T) {
		v := mustNew(t, verify.Policy{TrustedRoot: signtest.NewKeyless(t).TrustedRoot(t), Identities: []verify.Identity{{Issuer: ".*", Subject: ".*"}}})
		wantRefused(t, v.Verify(ctx, f.repo, f.name, f.v1), f.v1, "no cosign signature verifies")
	})
	t.Run("signature of another digest", func(t *testing.T) {
		copySignatures(t, f.repo, f.v1, f.v2)
		wantRefused(t, policy(".*", ".*").Verify(ctx, f.repo, f.name, f.v2), f.v2, "no cosign signature verifies")
	})
}

func regexpQuote(s string) string {
	r := strings.NewReplacer(".", `\.`, "/", "/", "?", `\?`, "+", `\+`, "*", `\*`)
	return r.Replace(s)
}

func TestNotation(t *testing.T) {
	f := newFixture(t)
	n := signtest.NewNotary(t, "acme")
	n.Sign(t, f.name, f.v1)
	ctx := context.Background()
	good := mustNew(t, verify.Policy{Provider: "notation", TrustPolicy: signtest.TrustPolicy(t, "acme"), TrustStore: map[string][]byte{"ca/acme": n.CAPEM()}})
	if err := good.Verify(ctx, f.repo, f.name, f.v1); err != nil {
		t.Fatalf("signed v1: %v", err)
	}
	t.Run("other CA", func(t *testing.T) {
		other := signtest.NewNotary(t, "other")
		v := mustNew(t, verify.Policy{Provider: "notation", TrustPolicy: signtest.TrustPolicy(t, "acme"), TrustStore: map[string][]byte{"ca/acme": other.CAPEM()}})
		wantRefused(t, v.Verify(ctx, f.repo, f.name, f.v1), f.v1, "no notation signature verifies with trust store ca:acme")
	})
	t.Run("repository out of the policy's scope", func(t *testing.T) {
		v := mustNew(t, verify.Policy{Provider: "notation", TrustPolicy: signtest.TrustPolicy(t, "acme", "example.com/other"), TrustStore: map[string][]byte{"ca/acme": n.CAPEM()}})
		wantRefused(t, v.Verify(ctx, f.repo, f.name, f.v1), f.v1, "no notation signature verifies")
	})
	t.Run("unsigned", func(t *testing.T) {
		wantRefused(t, good.Verify(ctx, f.repo, f.name, f.v2), f.v2, "no notation signature")
	})
	t.Run("signature of another digest", func(t *testing.T) {
		copySignatures(t, f.repo, f.v1, f.v2)
		wantRefused(t, good.Verify(ctx, f.repo, f.name, f.v2), f.v2, "no notation signature verifies")
	})
}

func TestNewRefusesBadPolicies(t *testing.T) {
	root := signtest.NewKeyless(t).TrustedRoot(t)
	for _, c := range []struct {
		name string
		p    verify.Policy
		want string
	}{
		{"nothing", verify.Policy{}, "cosign needs a public key, or a trusted root"},
		{"unknown provider", verify.Policy{Provider: "gpg"}, `provider "gpg" is not known`},
		{"not a key", verify.Policy{PublicKeys: map[string][]byte{"k.pub": []byte("hello")}}, "public key k.pub"},
		{"key and root", verify.Policy{PublicKeys: map[string][]byte{"k": nil}, TrustedRoot: []byte("{}")}, "not both"},
		{"keyless without identity", verify.Policy{TrustedRoot: []byte("{}")}, "at least one identity"},
		{"bad root", verify.Policy{TrustedRoot: []byte("{"), Identities: []verify.Identity{{Issuer: ".*", Subject: ".*"}}}, "trusted root"},
		{"bad regexp", verify.Policy{TrustedRoot: root, Identities: []verify.Identity{{Issuer: "(", Subject: ".*"}}}, `identity issuer "(" is not a regular expression`},
		{"empty subject", verify.Policy{TrustedRoot: root, Identities: []verify.Identity{{Issuer: ".*"}}}, "identity subject is empty"},
		{"notation without policy", verify.Policy{Provider: "notation"}, "needs a trust policy"},
		{"notation bad policy", verify.Policy{Provider: "notation", TrustPolicy: []byte(`{"version":"9"}`)}, "trust policy"},
		{"notation bad store name", verify.Policy{Provider: "notation", TrustPolicy: signtest.TrustPolicy(t, "acme"), TrustStore: map[string][]byte{"acme.crt": nil}}, "TYPE/NAME"},
		{"notation with a cosign key", verify.Policy{Provider: "notation", PublicKeys: map[string][]byte{"k": nil}}, "not cosign keys"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := verify.New(c.p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v; want an error with %q", err, c.want)
			}
		})
	}
}

// Policies come from users' Secrets and ConfigMaps: nothing in them may
// panic the controller or the puller.
func FuzzNew(f *testing.F) {
	f.Add("cosign", []byte("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"), []byte(nil), "a", "b", []byte(nil), "ca/x", []byte(nil))
	f.Add("", []byte(nil), []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), ".*", "(", []byte(nil), "", []byte(nil))
	f.Add("notation", []byte(nil), []byte(nil), "", "", []byte(`{"version":"1.0","trustPolicies":[]}`), "ca/acme", []byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, provider string, key, root []byte, iss, sub string, policy []byte, store string, cert []byte) {
		p := verify.Policy{Provider: provider, TrustedRoot: root, TrustPolicy: policy}
		if key != nil {
			p.PublicKeys = map[string][]byte{"k": key}
		}
		if iss != "" || sub != "" {
			p.Identities = []verify.Identity{{Issuer: iss, Subject: sub}}
		}
		if store != "" {
			p.TrustStore = map[string][]byte{store: cert}
		}
		_, _ = verify.New(p)
	})
}
