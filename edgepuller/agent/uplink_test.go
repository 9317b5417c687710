package agent_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/agent"
)

// bigTraining is a training whose base model is classes×features F32
// weights, so that its updates go up in chunks of 1 MiB.
func bigTraining(t *testing.T, classes, features int64) (*training, func(rate int64) *running) {
	tr := newTraining(t)
	big := tr.e.push("models/base", "big", map[string]string{"model.safetensors": weights(classes, features, 0)})
	tr.base, tr.entry.Reference = big, tr.e.ref("models/base@"+big.String())
	return tr, func(rate int64) *running {
		return tr.e.start(func(o *agent.Options) {
			o.NodeName, o.UploadPoll, o.Upload.ChunkSize, o.UploadLimitRate = "edge-1", 20*time.Millisecond, 1<<20, rate
		})
	}
}

// UploadLimitRate paces the node's uploads: a 4 MiB update at 2 MiB/s
// takes about two seconds, and goes up whole.
func TestUploadLimitRate(t *testing.T) {
	if testing.Short() {
		t.Skip("takes two seconds")
	}
	tr, start := bigTraining(t, 1024, 1024)
	r := start(2 << 20)
	r.set(tr.entry)
	r.waitReady(t, tr.entry.Name, tr.base)
	update := weights(1024, 1024, 0.5)
	began := time.Now()
	tr.write(r, map[string]string{"model.safetensors": update, artifact.UpdateInfoFile: `{"samples": 9}`, artifact.UpdateDoneFile: ""})
	tr.waitUpload(t, r, "Uploaded", func(u agent.UploadStatus) bool { return u.Phase == agent.UploadUploaded })
	took := time.Since(began)
	t.Logf("%d bytes at 2 MiB/s took %v", len(update), took)
	if took < 1500*time.Millisecond {
		t.Errorf("a %d-byte update at 2 MiB/s went up in %v; the cap was not applied", len(update), took)
	}
	if got := tr.e.updates(t, "models/base", tr.base); len(got) != 1 || got[0].files["model.safetensors"] != update {
		t.Errorf("the registry holds %d updates of the base, or not the file written", len(got))
	}
}

var resumedAt = regexp.MustCompile(`msg="update upload resumed where the registry stopped".* offset=(\d+) size=(\d+)`)

// A puller stopped halfway through a paced upload and started again says,
// in its log and in the upload's status, that it resumed where the
// registry stopped, not from 0.
func TestUploadResumeIsLogged(t *testing.T) {
	tr, start := bigTraining(t, 1024, 2048)
	r := start(4 << 20)
	r.set(tr.entry)
	r.waitReady(t, tr.entry.Name, tr.base)
	update := weights(1024, 2048, 0.5) // 8 MiB
	size := int64(len(update))
	info := `{"samples": 9}`
	tr.write(r, map[string]string{"model.safetensors": update, artifact.UpdateInfoFile: info, artifact.UpdateDoneFile: ""})
	waitFor(t, "half the update sent", func() bool { return tr.e.proxy.sent.Load() >= size/2 })
	r.stop(t)
	if tr.e.sawUpload(r, agent.UploadUploaded) {
		t.Fatal("the update was uploaded before the stop: the test proves nothing")
	}
	if resumedAt.MatchString(r.logs.String()) {
		t.Fatalf("the first run logged a resume:\n%s", r.logs)
	}

	r = start(0)
	r.set(tr.entry)
	tr.waitUpload(t, r, "Uploaded after the restart", func(u agent.UploadStatus) bool { return u.Phase == agent.UploadUploaded })
	m := resumedAt.FindStringSubmatch(r.logs.String())
	if m == nil {
		t.Fatalf("the restarted puller did not log the resume:\n%s", r.logs)
	}
	off, _ := strconv.ParseInt(m[1], 10, 64)
	if total, _ := strconv.ParseInt(m[2], 10, 64); total != size || off < size/2-1<<20 || off >= size {
		t.Errorf("resumed at %s of %s; want at least half of %d, less one chunk", m[1], m[2], size)
	}
	var said *agent.UploadStatus
	r.rec.mu.Lock()
	for _, s := range r.rec.all {
		if u := s.Upload; u.Phase == agent.UploadUploading && strings.Contains(u.Message, "where the registry stopped") {
			said = &u
			break
		}
	}
	r.rec.mu.Unlock()
	if total := size + int64(len(info)); said == nil || said.BytesDone < off || said.BytesTotal != total {
		t.Errorf("the restarted puller reported %+v; want Uploading from %d of %d, saying it resumed", said, off, total)
	}
}
