package agent_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/safetensors"
)

// weights is a safetensors file of a small classifier: "weight" of shape
// [classes, features] and "bias" [classes], F32, every value v.
func weights(classes, features int64, v float32) string {
	var b strings.Builder
	tensors := []safetensors.Tensor{
		{Name: "weight", DType: safetensors.F32, Shape: []int64{classes, features}},
		{Name: "bias", DType: safetensors.F32, Shape: []int64{classes}},
	}
	fill := func(n int64) []byte { return safetensors.AppendF32(nil, slices.Repeat([]float32{v}, int(n))...) }
	if err := safetensors.Encode(&b, nil, tensors, [][]byte{fill(classes * features), fill(classes)}); err != nil {
		panic(err)
	}
	return b.String()
}

// training is a base model in the registry and a node that trains on it:
// the entry asking for round 1's update.
type training struct {
	e     *env
	base  digest.Digest
	entry agent.Desired
}

func newTraining(t *testing.T) *training {
	e := newEnv(t)
	base := e.push("models/base", "r0", map[string]string{"model.safetensors": weights(3, 4, 0), "train/config.json": "{}"})
	return &training{e: e, base: base, entry: agent.Desired{
		Name:      "team/train-mnist",
		Reference: e.ref("models/base@" + base.String()),
		Insecure:  true,
		Upload:    agent.UploadRef{Round: 1, Repository: e.host + "/models/base", Run: "run-1"},
	}}
}

func (tr *training) start() *running {
	return tr.e.start(func(o *agent.Options) {
		o.NodeName = "edge-1"
		o.UploadPoll = 20 * time.Millisecond
	})
}

// write puts files into round 1's directory as a trainer does: DONE last.
// Content "->target" makes a symlink.
func (tr *training) write(r *running, files map[string]string) {
	tr.e.t.Helper()
	dir := r.UploadDir(tr.entry.Name, 1)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tr.e.t.Fatal(err)
	}
	put := func(name, content string) {
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
				tr.e.t.Fatal(err)
			}
			return
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			tr.e.t.Fatal(err)
		}
	}
	for name, content := range files {
		if name != artifact.UpdateDoneFile {
			put(name, content)
		}
	}
	if content, ok := files[artifact.UpdateDoneFile]; ok {
		put(artifact.UpdateDoneFile, content)
	}
}

func (tr *training) waitUpload(t *testing.T, r *running, what string, cond func(agent.UploadStatus) bool) agent.UploadStatus {
	t.Helper()
	waitFor(t, "upload "+what, func() bool {
		s, ok := r.rec.get(tr.entry.Name)
		return ok && s.Phase == agent.Ready && cond(s.Upload)
	})
	s, _ := r.rec.get(tr.entry.Name)
	return s.Upload
}

// Once the base model is Ready, the puller waits for DONE, and then pushes
// the directory as an update referrer of the base, attributed to the node,
// round, run and sample count. A restart reports it Uploaded again without
// pushing anything.
func TestUploadsUpdateOnceDone(t *testing.T) {
	tr := newTraining(t)
	r := tr.start()
	r.set(tr.entry)
	r.waitReady(t, tr.entry.Name, tr.base)
	tr.waitUpload(t, r, "waiting for DONE", func(u agent.UploadStatus) bool {
		return u.Round == 1 && u.Phase == agent.UploadWaiting && strings.Contains(u.Message, "DONE")
	})

	update := map[string]string{"model.safetensors": weights(3, 4, 0.5), artifact.UpdateInfoFile: `{"samples": 120, "metrics": {"accuracy": 0.9}}`}
	tr.write(r, update)
	time.Sleep(200 * time.Millisecond) // ten polls
	if u, _ := r.rec.get(tr.entry.Name); u.Upload.Phase != agent.UploadWaiting || tr.e.proxy.writes.Load() != 0 {
		t.Fatalf("without DONE the upload is %s after %d write requests; want Waiting and none", u.Upload.Phase, tr.e.proxy.writes.Load())
	}

	tr.write(r, map[string]string{artifact.UpdateDoneFile: ""})
	u := tr.waitUpload(t, r, "Uploaded", func(u agent.UploadStatus) bool { return u.Phase == agent.UploadUploaded })
	size := int64(len(update["model.safetensors"]) + len(update[artifact.UpdateInfoFile]))
	if u.Samples != 120 || u.BytesDone != size || u.BytesTotal != size || u.Round != 1 {
		t.Errorf("Uploaded status %+v; want 120 samples, %d of %d bytes, round 1", u, size, size)
	}
	if !tr.e.sawUpload(r, agent.UploadUploading) {
		t.Error("no Uploading status was reported before Uploaded")
	}

	got := tr.e.updates(t, "models/base", tr.base)
	if len(got) != 1 || got[0].digest != u.Digest {
		t.Fatalf("the base has update referrers %+v; want one, %s", got, u.Digest)
	}
	want := artifact.Update{Node: "edge-1", Round: 1, Run: "run-1", UpdateInfo: artifact.UpdateInfo{Samples: 120}}
	if g := got[0].update; g.Node != want.Node || g.Round != want.Round || g.Run != want.Run || g.Samples != want.Samples || g.Base.Digest != tr.base {
		t.Errorf("update annotations say %+v; want node edge-1, round 1, run run-1, 120 samples, base %s", g, tr.base)
	}
	if files := got[0].files; files["model.safetensors"] != update["model.safetensors"] || files[artifact.UpdateDoneFile] != "" || len(files) != 2 {
		t.Errorf("the update holds %v; want model.safetensors and update.json, not DONE", files)
	}

	r.stop(t)
	writes := tr.e.proxy.writes.Load()
	r = tr.start()
	r.set(tr.entry)
	again := tr.waitUpload(t, r, "Uploaded after a restart", func(u agent.UploadStatus) bool { return u.Phase == agent.UploadUploaded })
	if again.Digest != u.Digest || again.Samples != 120 {
		t.Errorf("after a restart the upload says %+v; want %s with 120 samples", again, u.Digest)
	}
	if n := tr.e.proxy.writes.Load() - writes; n != 0 || tr.e.sawUpload(r, agent.UploadUploading) {
		t.Errorf("a restart after Uploaded sent %d write requests and reported Uploading %v; want none", n, tr.e.sawUpload(r, agent.UploadUploading))
	}
}

// A malformed update is refused with a message naming the file and what is
// wrong, and nothing is pushed; when the trainer writes it anew, it goes.
// Weights are checked against the base model's file of the same name,
// which the node holds: the tensors FedAvg will average, header only.
func TestRefusesMalformedUpdate(t *testing.T) {
	good := weights(3, 4, 1)
	for _, tt := range []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"update.json is not JSON", map[string]string{"model.safetensors": good, artifact.UpdateInfoFile: `{"samples": 12`}, []string{"update.json", "not valid"}},
		{"no samples", map[string]string{"model.safetensors": good, artifact.UpdateInfoFile: `{"metrics": {"accuracy": 1}}`}, []string{"update.json", "samples is 0"}},
		{"no update.json", map[string]string{"model.safetensors": good}, []string{"no update.json"}},
		{"weights the base does not have", map[string]string{"head.safetensors": good, artifact.UpdateInfoFile: `{"samples": 3}`}, []string{"head.safetensors", "base model has no file"}},
		{"a tensor of another shape", map[string]string{"model.safetensors": weights(3, 5, 1), artifact.UpdateInfoFile: `{"samples": 3}`},
			[]string{"model.safetensors", `tensor "weight" is F32 [3 5]; the base model's is F32 [3 4]`}},
		{"not safetensors", map[string]string{"model.safetensors": "pickled torch", artifact.UpdateInfoFile: `{"samples": 3}`}, []string{"model.safetensors", "not a safetensors file"}},
		{"a symlink", map[string]string{"model.safetensors": good, artifact.UpdateInfoFile: `{"samples": 3}`, "secrets": "->/etc/hostname"}, []string{"secrets is a symlink"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTraining(t)
			r := tr.start()
			r.set(tr.entry)
			r.waitReady(t, tr.entry.Name, tr.base)
			tt.files[artifact.UpdateDoneFile] = ""
			tr.write(r, tt.files)
			u := tr.waitUpload(t, r, "Failed", func(u agent.UploadStatus) bool { return u.Phase == agent.UploadFailed })
			for _, w := range tt.want {
				if !strings.Contains(u.Message, w) {
					t.Errorf("refusal %q does not say %q", u.Message, w)
				}
			}
			time.Sleep(100 * time.Millisecond) // five polls more
			if n := tr.e.proxy.writes.Load(); n != 0 {
				t.Errorf("a refused update sent %d write requests to the registry", n)
			}
			if got := tr.e.updates(t, "models/base", tr.base); len(got) != 0 {
				t.Errorf("a refused update is in the registry: %+v", got)
			}

			os.RemoveAll(r.UploadDir(tr.entry.Name, 1))
			tr.write(r, map[string]string{"model.safetensors": good, artifact.UpdateInfoFile: `{"samples": 3}`, artifact.UpdateDoneFile: ""})
			tr.waitUpload(t, r, "Uploaded once rewritten", func(u agent.UploadStatus) bool { return u.Phase == agent.UploadUploaded })
		})
	}
}

// A puller stopped halfway through an update resumes it after a restart
// from what the registry acknowledged: it sends the rest, and at most the
// chunk that was in flight again.
func TestUploadResumesAfterRestart(t *testing.T) {
	const chunk = 1 << 20
	tr := newTraining(t)
	big := tr.e.push("models/base", "big", map[string]string{"model.safetensors": weights(1024, 2048, 0)})
	tr.base, tr.entry.Reference = big, tr.e.ref("models/base@"+big.String())
	start := func() *running {
		return tr.e.start(func(o *agent.Options) {
			o.NodeName, o.UploadPoll, o.Upload.ChunkSize = "edge-1", 20*time.Millisecond, chunk
		})
	}
	r := start()
	r.set(tr.entry)
	r.waitReady(t, tr.entry.Name, tr.base)
	update := weights(1024, 2048, 0.5) // 8 MiB
	size := int64(len(update))
	tr.e.proxy.upRate.Store(4 << 20)
	tr.write(r, map[string]string{"model.safetensors": update, artifact.UpdateInfoFile: `{"samples": 9}`, artifact.UpdateDoneFile: ""})
	waitFor(t, "half the update sent", func() bool { return tr.e.proxy.sent.Load() >= size/2 })
	r.stop(t)
	if tr.e.sawUpload(r, agent.UploadUploaded) {
		t.Fatal("the update was uploaded before the stop: the test proves nothing")
	}

	tr.e.proxy.upRate.Store(0)
	r = start()
	r.set(tr.entry)
	tr.waitUpload(t, r, "Uploaded after the restart", func(u agent.UploadStatus) bool { return u.Phase == agent.UploadUploaded })
	sent := tr.e.proxy.sent.Load()
	t.Logf("%d bytes sent for an update of %d, stopped halfway", sent, size)
	if sent > size+chunk+64<<10 {
		t.Errorf("%d bytes sent for an update of %d: the restart sent more than the rest and one chunk (%d)", sent, size, chunk)
	}
	if got := tr.e.updates(t, "models/base", tr.base); len(got) != 1 || got[0].files["model.safetensors"] != update {
		t.Errorf("the registry holds %d updates of the base, or not the file written", len(got))
	}
}

func (e *env) sawUpload(r *running, p agent.UploadPhase) bool {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	for _, s := range r.rec.all {
		if s.Upload.Phase == p {
			return true
		}
	}
	return false
}

type uploaded struct {
	digest digest.Digest
	update artifact.Update
	files  map[string]string // title → content
}

// updates reads the update referrers of base in repo, straight from the
// registry.
func (e *env) updates(t *testing.T, repo string, base digest.Digest) []uploaded {
	t.Helper()
	ctx := context.Background()
	r, err := remote.NewRepository(e.reg.Host() + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	baseDesc, err := r.Resolve(ctx, base.String())
	if err != nil {
		t.Fatal(err)
	}
	refs, err := artifact.UpdateReferrers(ctx, r, baseDesc)
	if err != nil {
		t.Fatal(err)
	}
	var out []uploaded
	for _, ref := range refs {
		a, err := artifact.Inspect(ctx, r, ref)
		if err != nil {
			t.Fatal(err)
		}
		u, err := artifact.UpdateOf(a)
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]string{}
		for _, f := range a.Files {
			rc, err := r.Fetch(ctx, f.Descriptor())
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			files[f.Path] = string(b)
		}
		out = append(out, uploaded{digest: ref.Digest, update: u, files: files})
	}
	return out
}
