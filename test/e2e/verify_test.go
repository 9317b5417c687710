package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/internal/signtest"
	"github.com/bargeml/barge/registry"
)

// cosign signs v1 with a key made by cosign; barge verify and barge pull
// --verify accept v1 and refuse the wrong key, an unsigned version and a tag
// moved to an unsigned digest, and a refused pull leaves the files in place.
func TestVerifyCosignKey(t *testing.T) {
	reg := registry.StartForTest(t)
	v1 := reg.PushForTest(t, "models/resnet", "1.0.0", map[string]string{"weights.bin": "one"})
	v2 := reg.PushForTest(t, "models/resnet", "2.0.0", map[string]string{"weights.bin": "two"})
	name := reg.Host() + "/models/resnet"
	key, pub := signtest.CosignKeyPair(t)
	_, otherPub := signtest.CosignKeyPair(t)
	signtest.CosignSign(t, key, name+"@"+v1.Digest.String())

	r := must(t, barge(t, "verify", "--key", pub, name+":1.0.0"))
	if strings.TrimSpace(r.stdout) != v1.Digest.String() || !strings.Contains(r.stderr, "Verified") {
		t.Errorf("verify printed %s; want the digest %s", r, v1.Digest)
	}

	for _, c := range []struct{ name, key, ref, want string }{
		{"wrong key", otherPub, name + ":1.0.0", "no cosign signature verifies with key " + otherPub},
		{"unsigned", pub, name + ":2.0.0", "no cosign signature"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := barge(t, "verify", "--key", c.key, c.ref)
			if r.err == nil || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("verify: %s\nwant a failure saying %q", r, c.want)
			}
		})
	}

	dir := filepath.Join(t.TempDir(), "resnet")
	must(t, barge(t, "pull", "--verify", "--key", pub, name+":1.0.0", dir))
	if b, _ := os.ReadFile(filepath.Join(dir, "weights.bin")); string(b) != "one" {
		t.Fatalf("pulled weights.bin = %q", b)
	}

	// Someone who can push moves the tag to the unsigned digest: the pull
	// is refused and the verified version stays in place.
	must(t, oras(t, "tag", "--plain-http", name+"@"+v2.Digest.String(), "1.0.0"))
	r = barge(t, "pull", "--verify", "--key", pub, name+":1.0.0", dir)
	if r.err == nil || !strings.Contains(r.stderr, v2.Digest.String()) || !strings.Contains(r.stderr, "no cosign signature") {
		t.Fatalf("pull of the moved tag: %s\nwant a refusal naming %s", r, v2.Digest)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "weights.bin")); string(b) != "one" {
		t.Errorf("after the refused pull weights.bin = %q; want the verified version kept", b)
	}
	fresh := filepath.Join(t.TempDir(), "fresh")
	if r := barge(t, "pull", "--verify", "--key", pub, name+":2.0.0", fresh); r.err == nil {
		t.Fatalf("pull of unsigned 2.0.0 succeeded")
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("a refused pull created %s (%v)", fresh, err)
	}

	if r := barge(t, "pull", "--key", pub, name+":1.0.0", fresh); r.err == nil || !strings.Contains(r.stderr, "add --verify") {
		t.Errorf("--key without --verify: %s", r)
	}
}

// A keyless signature (sigstore-go's offline test Sigstore) and a Notation
// signature (notation-go's signer), checked with cosign's and notation's
// flags.
func TestVerifyKeylessAndNotation(t *testing.T) {
	reg := registry.StartForTest(t)
	v1 := reg.PushForTest(t, "models/resnet", "1.0.0", map[string]string{"weights.bin": "one"})
	name := reg.Host() + "/models/resnet"
	repo, err := remote.NewRepository(name)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	dir := t.TempDir()

	ks := signtest.NewKeyless(t)
	const issuer, subject = "https://token.actions.githubusercontent.com", "https://github.com/acme/models/.github/workflows/train.yaml@refs/heads/main"
	signtest.PushBundle(t, repo, v1, ks.Bundle(t, subject, issuer, v1))
	root := filepath.Join(dir, "trusted_root.json")
	if err := os.WriteFile(root, ks.TrustedRoot(t), 0o644); err != nil {
		t.Fatal(err)
	}
	must(t, barge(t, "verify", "--trusted-root", root, "--certificate-identity", subject, "--certificate-oidc-issuer", issuer, name+":1.0.0"))
	must(t, barge(t, "verify", "--trusted-root", root, "--certificate-identity-regexp", `https://github\.com/acme/.*`, "--certificate-oidc-issuer", issuer, name+":1.0.0"))
	r := barge(t, "verify", "--trusted-root", root, "--certificate-identity", "https://github.com/acme/models", "--certificate-oidc-issuer", issuer, name+":1.0.0")
	if r.err == nil || !strings.Contains(r.stderr, "no cosign signature verifies with identity") {
		t.Errorf("a prefix of the identity: %s", r)
	}
	if r := barge(t, "verify", "--certificate-identity", subject, "--certificate-oidc-issuer", issuer, name+":1.0.0"); r.err == nil || !strings.Contains(r.stderr, "needs --trusted-root") {
		t.Errorf("keyless without a trusted root: %s", r)
	}

	n := signtest.NewNotary(t, "acme")
	n.Sign(t, name, v1)
	store := filepath.Join(dir, "notation")
	writeTree(t, store, map[string]string{"truststore/x509/ca/acme/acme.crt": string(n.CAPEM())})
	policy := filepath.Join(dir, "trustpolicy.json")
	if err := os.WriteFile(policy, signtest.TrustPolicy(t, "acme"), 0o644); err != nil {
		t.Fatal(err)
	}
	must(t, barge(t, "verify", "--trust-policy", policy, "--trust-store", store, name+":1.0.0"))
	other := filepath.Join(dir, "other")
	writeTree(t, other, map[string]string{"x509/ca/acme/other.crt": string(signtest.NewNotary(t, "other").CAPEM())})
	if r := barge(t, "verify", "--trust-policy", policy, "--trust-store", other, name+":1.0.0"); r.err == nil || !strings.Contains(r.stderr, "no notation signature verifies") {
		t.Errorf("another CA: %s", r)
	}
}
