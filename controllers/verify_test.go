package controllers

import (
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/internal/signtest"
)

// cosignSecret makes a cosign key pair and the Secret "cosign" in ns that
// holds its public key, as spec.verify.secretRef names it; it returns the
// private key's path, to sign with.
func cosignSecret(t *testing.T, ns string) string {
	t.Helper()
	key, pub := signtest.CosignKeyPair(t)
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cosign"}, Data: map[string][]byte{"cosign.pub": pubPEM}})
	return key
}

// TestVerifyRollout: with spec.verify, a digest signed by the Secret's
// cosign key rolls out; a tag moved to an unsigned digest stalls the model
// with VerificationFailed and moves no NodeArtifact (the node keeps the
// signed version); once the new digest is signed it rolls out. Every
// NodeArtifact carries spec.verify for the node's own check.
func TestVerifyRollout(t *testing.T) {
	ns := env.Namespace(t)
	key := cosignSecret(t, ns)
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	d1 := pushModel(t, repo, "latest", map[string]string{"m.onnx": "v1"}, artifact.Metadata{}).Digest.String()
	signtest.CosignSign(t, key, ref+"@"+d1)
	nodes(t, ns, nil, 1)

	m := edgeModel(ns, "m", ref, "latest")
	m.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	m.Spec.Verify = &v1alpha1.VerifySpec{Provider: "cosign", SecretRef: &v1alpha1.LocalObjectReference{Name: "cosign"}}
	create(t, m)
	nas := waitNodeArtifacts(t, ns, "on the signed v1", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, d1); len(got) != 1 {
			return fmt.Errorf("on v1: %v", got)
		}
		return nil
	})
	for _, na := range nas {
		if na.Spec.Verify == nil || na.Spec.Verify.SecretRef == nil || na.Spec.Verify.SecretRef.Name != "cosign" {
			t.Errorf("NodeArtifact %s spec.verify = %+v; want the model's", na.Name, na.Spec.Verify)
		}
		puller(t, na, v1alpha1.NodeArtifactReady, d1, "")
	}

	d2 := pushModel(t, repo, "latest", map[string]string{"m.onnx": "v2, unsigned"}, artifact.Metadata{}).Digest.String()
	// A spec change resolves at once, without waiting for the interval
	// (at least 30s).
	change(t, m, func() { m.Spec.Interval = &metav1.Duration{Duration: 30 * time.Minute} })
	eventually(t, "stalled on the unsigned v2", func() error {
		get(t, m)
		return conds{ready: metav1.ConditionFalse, reason: ReasonVerificationFailed, message: "refusing " + d2, stalled: true}.
			check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	// Several passes later nothing has moved: the node still has v1.
	time.Sleep(5 * time.Second)
	get(t, m)
	if m.Status.Resolved == nil || m.Status.Resolved.Digest != d1 {
		t.Errorf("status.resolved = %+v; want still v1 %s", m.Status.Resolved, d1)
	}
	if got := onDigest(nodeArtifacts(t, ns), d1); len(got) != 1 {
		t.Fatalf("after the refusal NodeArtifacts on v1: %v; want the node kept there", got)
	}

	// Once signed, the next resolution (here a spec change; else the
	// interval, as TestTagMovedOnInterval shows) rolls it out.
	signtest.CosignSign(t, key, ref+"@"+d2)
	change(t, m, func() { m.Spec.Interval = &metav1.Duration{Duration: 20 * time.Minute} })
	waitNodeArtifacts(t, ns, "on v2 once signed", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, d2); len(got) != 1 {
			return fmt.Errorf("on v2: %v", got)
		}
		return nil
	})
}

// TestVerifyRefuses: a digest signed by another key, and key material that
// does not exist, stall the model before any NodeArtifact exists.
func TestVerifyRefuses(t *testing.T) {
	key, _ := signtest.CosignKeyPair(t)
	_, otherPub := signtest.CosignKeyPair(t)
	otherPEM, err := os.ReadFile(otherPub)
	if err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "other"}, Data: map[string]string{"other.pub": string(otherPEM)}})
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	d := pushModel(t, repo, "1.0.0", map[string]string{"m.onnx": "v1"}, artifact.Metadata{}).Digest.String()
	signtest.CosignSign(t, key, ref+"@"+d)
	nodes(t, ns, nil, 1)

	wrong := edgeModel(ns, "wrong-key", ref, "1.0.0")
	wrong.Spec.Verify = &v1alpha1.VerifySpec{Provider: "cosign", ConfigMapRef: &v1alpha1.LocalObjectReference{Name: "other"}}
	missing := edgeModel(ns, "missing-key", ref, "1.0.0")
	missing.Spec.Verify = &v1alpha1.VerifySpec{Provider: "cosign", SecretRef: &v1alpha1.LocalObjectReference{Name: "nope"}}
	create(t, wrong)
	create(t, missing)
	for _, c := range []struct {
		m    *v1alpha1.InferenceModel
		want string
	}{
		{wrong, "no cosign signature verifies with key other.pub"},
		{missing, "secret " + ns + "/nope named by spec.verify does not exist"},
	} {
		eventually(t, c.m.Name+" stalled", func() error {
			get(t, c.m)
			return conds{ready: metav1.ConditionFalse, reason: ReasonVerificationFailed, message: c.want, stalled: true}.
				check(c.m.Generation, c.m.Status.ObservedGeneration, c.m.Status.Conditions)
		})
	}
	if nas := nodeArtifacts(t, ns); len(nas) != 0 {
		t.Errorf("NodeArtifacts of refused models: %v", nas)
	}
}

// TestVerifyKeylessAndNotation: keyless signatures checked against the
// Secret's trusted_root.json and spec.verify.matchOIDCIdentity, and a
// Notation signature against a ConfigMap's trust policy and certificate.
func TestVerifyKeylessAndNotation(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	desc := pushModel(t, repo, "1.0.0", map[string]string{"m.onnx": "v1"}, artifact.Metadata{})
	ks := signtest.NewKeyless(t)
	const issuer, subject = "https://token.actions.githubusercontent.com", "https://github.com/acme/models/.github/workflows/train.yaml@refs/heads/main"
	signtest.PushBundle(t, repo, desc, ks.Bundle(t, subject, issuer, desc))
	n := signtest.NewNotary(t, "acme")
	n.Sign(t, ref, desc)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sigstore"}, Data: map[string][]byte{"trusted_root.json": ks.TrustedRoot(t)}})
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "notation"}, Data: map[string]string{
		"trustpolicy.json": string(signtest.TrustPolicy(t, "acme")), "ca.acme.crt": string(n.CAPEM())}})

	keyless := func(name, subjectRE string) *v1alpha1.InferenceModel {
		m := edgeModel(ns, name, ref, "1.0.0")
		m.Spec.Verify = &v1alpha1.VerifySpec{Provider: "cosign", SecretRef: &v1alpha1.LocalObjectReference{Name: "sigstore"},
			MatchOIDCIdentity: []v1alpha1.OIDCIdentityMatch{{Issuer: `https://token\.actions\.githubusercontent\.com`, Subject: subjectRE}}}
		create(t, m)
		return m
	}
	trusted := keyless("trusted", `https://github\.com/acme/.*`)
	other := keyless("other-identity", `https://github\.com/evil/.*`)
	notary := edgeModel(ns, "notation", ref, "1.0.0")
	notary.Spec.Verify = &v1alpha1.VerifySpec{Provider: "notation", ConfigMapRef: &v1alpha1.LocalObjectReference{Name: "notation"}}
	create(t, notary)

	for _, c := range []struct {
		m    *v1alpha1.InferenceModel
		want conds
	}{
		{trusted, conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}},
		{notary, conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}},
		{other, conds{ready: metav1.ConditionFalse, reason: ReasonVerificationFailed, message: "no cosign signature verifies with identity", stalled: true}},
	} {
		eventually(t, c.m.Name, func() error {
			get(t, c.m)
			if err := c.want.check(c.m.Generation, c.m.Status.ObservedGeneration, c.m.Status.Conditions); err != nil {
				return err
			}
			if c.want.ready == metav1.ConditionTrue && (c.m.Status.Resolved == nil || c.m.Status.Resolved.Digest != desc.Digest.String()) {
				return fmt.Errorf("resolved %+v", c.m.Status.Resolved)
			}
			return nil
		})
	}
}
