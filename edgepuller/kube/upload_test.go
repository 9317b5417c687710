package kube_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"oras.land/oras-go/v2/registry/remote"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/safetensors"
)

// weights is a safetensors file with one F32 tensor "weight" [2, 2], every
// value v: a model and its updates, as the puller checks them.
func weights(v float32) string {
	var b strings.Builder
	t := []safetensors.Tensor{{Name: "weight", DType: safetensors.F32, Shape: []int64{2, 2}}}
	if err := safetensors.Encode(&b, nil, t, [][]byte{safetensors.AppendF32(nil, v, v, v, v)}); err != nil {
		panic(err)
	}
	return b.String()
}

const trainName = "train-mnist"

// createTraining makes the NodeArtifact of round's base for this node, as
// the TrainingModel controller does: the base by digest, spec.upload.
func (s *site) createTraining(p pushed, round int32) *v1alpha1.NodeArtifact {
	s.t.Helper()
	na := &v1alpha1.NodeArtifact{}
	na.Namespace, na.Name = s.ns, trainName+"-"+node
	na.Labels = map[string]string{v1alpha1.NodeLabel: node}
	na.Finalizers = []string{v1alpha1.FilesFinalizer}
	na.Spec = v1alpha1.NodeArtifactSpec{NodeName: node, Reference: p.ref, Digest: p.digest.String(), Insecure: true,
		ArtifactName: trainName, Upload: &v1alpha1.UploadSpec{Round: round, Repository: s.host + "/models/mnist", Run: "uid-1"}}
	if err := env.Client.Create(context.Background(), na); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { s.forget(na.Name) })
	return na
}

// writeUpdate writes round's update where the trainer Job's output mount
// puts it: <root>/v1alpha1.UploadDir(...).
func (s *site) writeUpdate(round int32, samples int) string {
	s.t.Helper()
	dir := filepath.Join(s.root, filepath.FromSlash(v1alpha1.UploadDir(s.ns, trainName, round)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	for _, f := range []struct{ name, content string }{
		{"model.safetensors", weights(float32(round))},
		{artifact.UpdateInfoFile, fmt.Sprintf(`{"samples": %d, "metrics": {"accuracy": 0.8}}`, samples)},
		{artifact.UpdateDoneFile, ""},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.content), 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	return dir
}

// updatesOf lists the update referrers of base in models/mnist.
func (s *site) updatesOf(base pushed) []artifact.Update {
	s.t.Helper()
	ctx := context.Background()
	r, err := remote.NewRepository(s.reg.Host() + "/models/mnist")
	if err != nil {
		s.t.Fatal(err)
	}
	r.PlainHTTP = true
	desc, err := r.Resolve(ctx, base.digest.String())
	if err != nil {
		s.t.Fatal(err)
	}
	refs, err := artifact.UpdateReferrers(ctx, r, desc)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []artifact.Update
	for _, ref := range refs {
		a, err := artifact.Inspect(ctx, r, ref)
		if err != nil {
			s.t.Fatal(err)
		}
		u, err := artifact.UpdateOf(a)
		if err != nil {
			s.t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

func (s *site) waitUpload(what string, cond func(*v1alpha1.UploadStatus) bool) *v1alpha1.NodeArtifact {
	s.t.Helper()
	return s.waitStatus(trainName+"-"+node, "status.upload "+what, func(st v1alpha1.NodeArtifactStatus) bool {
		return st.Upload != nil && cond(st.Upload)
	})
}

// A NodeArtifact with spec.upload: Ready on the base, status.upload waits for
// DONE in v1alpha1.UploadDir under the root, then says Uploaded with the
// update's digest and sample count; the update in the registry is a referrer
// of the base, attributed to the node. The next round starts Waiting again,
// with nothing of the last round's upload left in status.
func TestUploadStatus(t *testing.T) {
	s := newSite(t)
	base := s.push("models/mnist", map[string]string{"model.safetensors": weights(0)})
	s.createTraining(base, 1)
	p := s.start(nil, nil)
	s.waitReady(trainName+"-"+node, base)
	s.waitUpload("Waiting for DONE", func(u *v1alpha1.UploadStatus) bool {
		return u.Round == 1 && u.Phase == v1alpha1.UploadWaiting && strings.Contains(u.Message, "DONE")
	})
	want := filepath.Join(s.root, filepath.FromSlash(v1alpha1.UploadDir(s.ns, trainName, 1)))
	if got := p.UploadDir(s.ns+"/"+trainName, 1); got != want {
		t.Fatalf("the agent watches %s; the trainer Job writes into %s", got, want)
	}

	s.writeUpdate(1, 250)
	na := s.waitUpload("Uploaded", func(u *v1alpha1.UploadStatus) bool { return u.Phase == v1alpha1.UploadUploaded })
	u := na.Status.Upload
	if u.Round != 1 || u.Samples != 250 || u.Digest == "" || u.BytesDone != u.BytesTotal || u.BytesTotal == 0 || u.Message != "" {
		t.Errorf("status.upload %+v; want round 1, 250 samples, a digest, all bytes done", u)
	}
	updates := s.updatesOf(base)
	if len(updates) != 1 || updates[0].Node != node || updates[0].Round != 1 || updates[0].Run != "uid-1" || updates[0].Samples != 250 {
		t.Errorf("updates of the base in the registry: %+v; want one from %s, round 1, run uid-1, 250 samples", updates, node)
	}

	next := s.push("models/mnist", map[string]string{"model.safetensors": weights(0.5)})
	patch := fmt.Sprintf(`{"spec":{"reference":%q,"digest":%q,"upload":{"round":2}}}`, next.ref, next.digest)
	if err := env.Client.Patch(context.Background(), na, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
	na = s.waitUpload("round 2 Waiting", func(u *v1alpha1.UploadStatus) bool {
		return u.Round == 2 && u.Phase == v1alpha1.UploadWaiting
	})
	if u := na.Status.Upload; u.Digest != "" || u.Samples != 0 {
		t.Errorf("round 2's status.upload keeps round 1's digest or samples: %+v", u)
	}
}

// With the API server unreachable the update is still uploaded; the status
// says so once the link is back.
func TestUploadWhileAPIServerUnreachable(t *testing.T) {
	s := newSite(t)
	base := s.push("models/mnist", map[string]string{"model.safetensors": weights(0)})
	s.createTraining(base, 1)
	proxy := newTCPProxy(t, apiHostPort(t))
	p := s.start(proxy.config(t), nil)
	s.waitUpload("Waiting", func(u *v1alpha1.UploadStatus) bool { return u.Phase == v1alpha1.UploadWaiting })

	proxy.setCut(true)
	s.writeUpdate(1, 40)
	name := s.ns + "/" + trainName
	waitFor(t, "the upload offline", func() bool { return p.status(name).Upload.Phase == agent.UploadUploaded })
	if len(s.updatesOf(base)) != 1 {
		t.Fatal("the update is not in the registry")
	}
	time.Sleep(300 * time.Millisecond)
	if na, err := s.get(trainName + "-" + node); err != nil || na.Status.Upload.Phase != v1alpha1.UploadWaiting {
		t.Fatalf("the server's status changed while the link was cut: %+v, %v", na.Status.Upload, err)
	}
	proxy.setCut(false)
	na := s.waitUpload("Uploaded once the link is back", func(u *v1alpha1.UploadStatus) bool { return u.Phase == v1alpha1.UploadUploaded })
	if na.Status.Upload.Digest != p.status(name).Upload.Digest.String() || na.Status.Upload.Samples != 40 {
		t.Errorf("status.upload %+v; want the agent's digest and 40 samples", na.Status.Upload)
	}
}

// A malformed update is refused: status.upload says Failed and names the
// file, and nothing reaches the registry.
func TestMalformedUpdateNamed(t *testing.T) {
	s := newSite(t)
	base := s.push("models/mnist", map[string]string{"model.safetensors": weights(0)})
	s.createTraining(base, 1)
	s.start(nil, nil)
	s.waitUpload("Waiting", func(u *v1alpha1.UploadStatus) bool { return u.Phase == v1alpha1.UploadWaiting })
	dir := s.writeUpdate(1, 10)
	if err := os.WriteFile(filepath.Join(dir, artifact.UpdateInfoFile), []byte(`{"samples": "many"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	na := s.waitUpload("Failed", func(u *v1alpha1.UploadStatus) bool { return u.Phase == v1alpha1.UploadFailed })
	if msg := na.Status.Upload.Message; !strings.Contains(msg, "update.json") || !strings.Contains(msg, "refused") {
		t.Errorf("status.upload.message %q does not name update.json as refused", msg)
	}
	if n := len(s.updatesOf(base)); n != 0 {
		t.Errorf("%d updates in the registry after a refusal", n)
	}
}

// Only a node's own puller writes status.upload: another node's puller, which
// RBAC lets patch any NodeArtifact status, is refused by the chart's policy,
// so a stolen node cannot claim another node's update.
func TestUploadStatusOnlyByItsNode(t *testing.T) {
	s := newSite(t)
	base := s.push("models/mnist", map[string]string{"model.safetensors": weights(0)})
	na := s.createTraining(base, 1)
	ctx := context.Background()
	patch := client.RawPatch("application/merge-patch+json", []byte(
		`{"status":{"upload":{"round":1,"phase":"Uploaded","digest":"`+base.digest.String()+`","samples":1000000}}}`))

	other, err := client.New(nodePullerConfig(t, "edge-2"), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	err = other.Status().Patch(ctx, na.DeepCopy(), patch)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "of node "+node) {
		t.Errorf("edge-2's puller patching status.upload of %s's NodeArtifact: %v; want Forbidden by the policy", node, err)
	}
	if got, _ := s.get(na.Name); got.Status.Upload != nil {
		t.Errorf("a refused patch left status.upload %+v", got.Status.Upload)
	}

	own, err := client.New(pullerConfig(t), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := own.Status().Patch(ctx, na.DeepCopy(), patch); err != nil {
		t.Errorf("%s's puller may not patch status.upload of its own NodeArtifact: %v", node, err)
	}
}
