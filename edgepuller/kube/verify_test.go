package kube_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/trust"
	"github.com/bargeml/barge/internal/signtest"
)

// A NodeArtifact with spec.verify whose digest is swapped to an unsigned one
// (by whoever could write its spec) is not activated: the puller reports it
// Failed with the reason, and status.digest and the files stay on the signed
// version.
func TestSwappedDigestNotActivated(t *testing.T) {
	s := newSite(t)
	v1 := s.push("models/m", map[string]string{"m.onnx": "signed"})
	v2 := s.push("models/m", map[string]string{"m.onnx": "unsigned"})
	key, pub := signtest.CosignKeyPair(t)
	signtest.CosignSign(t, key, s.reg.Host()+"/models/m@"+v1.digest.String())
	dir := signtest.CosignKeyDir(t, pub, s.ns, "cosign")
	s.verify = trust.FromDir(dir, nil)

	na := s.create("m", node, v1)
	patch := `{"spec":{"verify":{"provider":"cosign","configMapRef":{"name":"cosign"}}}}`
	if err := env.Client.Patch(context.Background(), na, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
	s.start(nil, nil)
	s.waitReady("m", v1)

	patch = fmt.Sprintf(`{"spec":{"reference":%q,"digest":%q}}`, v2.ref, v2.digest)
	if err := env.Client.Patch(context.Background(), na, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
	failed := s.waitStatus("m", "Failed on the unsigned digest", func(st v1alpha1.NodeArtifactStatus) bool {
		return st.Phase == v1alpha1.NodeArtifactFailed && strings.Contains(st.Message, "no cosign signature")
	})
	if failed.Status.Digest != v1.digest.String() || !strings.Contains(failed.Status.Message, v2.digest.String()) {
		t.Errorf("status %+v: want digest still v1 %s and the message naming %s", failed.Status, v1.digest, v2.digest)
	}
	if got, err := s.read("m", "m.onnx"); err != nil || got != "signed" {
		t.Errorf("m.onnx = %q (%v); want the signed version kept", got, err)
	}
}

// The edge part of a signed joint model is activated: the NodeArtifact's
// spec.verify.signedIndex names the index that carries the signature, and
// the node verifies that index and that it lists the part.
func TestJointEdgePartVerified(t *testing.T) {
	s := newSite(t)
	index, parts := s.reg.PushJointForTest(t, "models/j", "1", map[string]string{"a.onnx": "edge"}, map[string]string{"b.onnx": "cloud"}, artifact.PackOptions{})
	key, pub := signtest.CosignKeyPair(t)
	signtest.CosignSign(t, key, s.reg.Host()+"/models/j@"+index.Digest.String())
	dir := signtest.CosignKeyDir(t, pub, s.ns, "cosign")
	s.verify = trust.FromDir(dir, nil)

	edge := pushed{ref: s.host + "/models/j@" + parts.Edge.Digest.String(), digest: parts.Edge.Digest}
	na := s.create("j", node, edge)
	patch := fmt.Sprintf(`{"spec":{"verify":{"provider":"cosign","configMapRef":{"name":"cosign"},"signedIndex":%q}}}`, index.Digest)
	if err := env.Client.Patch(context.Background(), na, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
	s.start(nil, nil)
	s.waitReady("j", edge)
	if got, err := s.read("j", "a.onnx"); err != nil || got != "edge" {
		t.Errorf("a.onnx = %q (%v); want the edge part's file", got, err)
	}
}
