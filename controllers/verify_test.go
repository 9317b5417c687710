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

// TestVerifyRollout: with spec.verify, a digest signed by the Secret's
// cosign key rolls out; a tag moved to an unsigned digest stalls the model
// with VerificationFailed and moves no NodeArtifact (the node keeps the
// signed version); once the new digest is signed it rolls out. Every
// NodeArtifact carries spec.verify for the node's own check.
func TestVerifyRollout(t *testing.T) {
	key, pub := signtest.CosignKeyPair(t)
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cosign"}, Data: map[string][]byte{"cosign.pub": pubPEM}})
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	d1 := pushModel(t, repo, "latest", map[string]string{"m.onnx": "v1"}, artifact.Metadata{}).Digest.String()
	signtest.CosignSign(t, key, ref+"@"+d1)
	nodes(t, ns, nil, 1)

	m := edgeModel(ns, "m", ref, "latest")
	m.Spec.Interval = &metav1.Duration{Duration: 2 * time.Second}
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
	eventually(t, "stalled on the unsigned v2", func() error {
		get(t, m)
		return conds{ready: metav1.ConditionFalse, reason: ReasonVerificationFailed, message: "refusing " + d2, stalled: true}.
			check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	// Several intervals later nothing has moved: the node still has v1.
	time.Sleep(5 * time.Second)
	get(t, m)
	if m.Status.Resolved == nil || m.Status.Resolved.Digest != d1 {
		t.Errorf("status.resolved = %+v; want still v1 %s", m.Status.Resolved, d1)
	}
	if got := onDigest(nodeArtifacts(t, ns), d1); len(got) != 1 {
		t.Fatalf("after the refusal NodeArtifacts on v1: %v; want the node kept there", got)
	}

	signtest.CosignSign(t, key, ref+"@"+d2)
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
