package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1 "github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/internal/testenv"
	"github.com/bargeml/barge/safetensors"
)

// The base model of the upload fault tests: a 64 MiB weight and a bias,
// float32, with values that no two neighbours share.
var bigTensors = []safetensors.Tensor{
	{Name: "layer.weight", DType: safetensors.F32, Shape: []int64{4096, 4096}},
	{Name: "layer.bias", DType: safetensors.F32, Shape: []int64{4096}},
}

func baseValue(i int64) float32 { return float32(i%9973)*0.001 - 4 }

// A node's puller SIGKILLed when half of its update has gone up the link,
// and started again, finishes the upload from where the registry stopped:
// the round completes with its update, and the link carried the update
// about once.
func TestUploadKilledMidwayFinishesAfterRestart(t *testing.T) {
	testUploadFault(t, true)
}

// A node's link to the registry cut when half of the update has gone up:
// the same puller resumes it without a restart, and the link carried the
// update about once.
func TestUploadCutMidwayResumes(t *testing.T) {
	testUploadFault(t, false)
}

// testUploadFault trains one round on edge-3 with the plus-one trainer,
// the output repository named through a linkProxy, and kills the puller
// (kill) or cuts its link when half of the update has crossed.
func testUploadFault(t *testing.T, kill bool) {
	if testing.Short() {
		t.Skip("pushes, pulls and uploads 64 MiB models through real processes")
	}
	ctx := context.Background()
	ns := env.Namespace(t)
	const name = "edge-3"
	// Paced (about 4 s for the update), so that the upload's progress
	// shows in its status.
	n := startNode(t, name, "--limit-upload-rate", "16M")
	host := filepath.Join(t.TempDir(), name+"-host")
	if err := os.MkdirAll(filepath.Join(host, "var/lib/sensors"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(host, "var/lib/sensors/readings.csv"), "x\n1\n")
	testenv.StartProcessKubelet(t, env.Client, ns, testenv.ProcessConfig{
		EdgeRoot: bargev1.DefaultEdgeRoot,
		NodeRoot: func(string) string { return n.root },
		HostRoot: func(string) string { return host },
	}, name)

	baseDir := filepath.Join(t.TempDir(), "base")
	writeBigModel(t, baseDir)
	repo := registry + "/models/" + ns + "-big"
	d0 := barge(t, "push", "--name", "big", "--framework", "custom", baseDir, repo+":1.0.0")

	// The node reaches the output repository through the link; the
	// controller and the aggregation Job do too, and are counted apart.
	link := startLinkProxy(t, registry)
	outName := "/models/" + ns + "-big-trained"
	half := bigTensors[0].Elements() * 4 / 2
	var tripped <-chan struct{}
	if kill {
		tripped = link.tripAt("barge-edgepuller", half, func() { n.p.kill() })
	} else {
		tripped = link.tripAt("barge-edgepuller", half, nil)
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The trainer keeps a link to what it wrote: the node's upload
	// directory goes with the NodeArtifact once training completes.
	keep := t.TempDir()
	tm := &bargev1.TrainingModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "big"},
		Spec: bargev1.TrainingModelSpec{
			Artifact: repo, TargetVersion: "1.0.0", Output: link.Host() + outName, Insecure: true,
			NodeSelector: map[string]string{"site": "b"},
			LocalDataset: "/var/lib/sensors",
			Trainer: &bargev1.TrainerSpec{
				Image:   "registry.example.com/trainers/plus-one:1",
				Command: []string{exe},
				Env:     []corev1.EnvVar{{Name: trainerEnv, Value: "plus-one"}, {Name: keepEnv, Value: keep}},
			},
			Rounds: 1,
		},
	}
	deleteAtEnd(t, ns, tm, "train-big")
	if err := env.Client.Create(ctx, tm); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tripped:
	case <-time.After(60 * time.Second):
		t.Fatalf("half of the update did not cross the link within 60s; the link carried %v", link.Clients())
	}
	if kill {
		t.Logf("puller SIGKILLed after %d bytes of its upload; starting it again", link.Sent("barge-edgepuller"))
		n.start(t)
		// Delete while this puller runs: cleanups run last first.
		deleteAtEnd(t, ns, tm, "train-big")
	}

	var upload, resumed bargev1.UploadStatus
	waitUntil(t, "the round to complete", 90*time.Second, func() error {
		if na, ok := artifactsNamed(t, ns, "train-big")[name]; ok && na.Status.Upload != nil {
			upload = *na.Status.Upload
			if upload.Phase == bargev1.UploadUploading && strings.Contains(upload.Message, "where the registry stopped") {
				resumed = upload
			}
		}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(tm), tm); err != nil {
			return err
		}
		switch tm.Status.Phase {
		case bargev1.TrainingCompleted:
			return nil
		case bargev1.TrainingFailed:
			t.Fatalf("training failed: %+v", tm.Status)
		}
		return fmt.Errorf("phase %s, round %d, %s's upload %+v", tm.Status.Phase, tm.Status.Round, name, upload)
	})
	// The operator can tell: the restarted puller says where it resumed,
	// in its log and in status.upload; a cut is logged as such.
	if kill {
		m := regexp.MustCompile(`update upload resumed where the registry stopped.* offset=(\d+)`).FindStringSubmatch(n.p.logs.String())
		var off int64
		if m != nil {
			off, _ = strconv.ParseInt(m[1], 10, 64)
		}
		if m == nil || off < half-4<<20 || off > half {
			t.Errorf("the restarted puller did not log a resume at about %d bytes (%q):\n%s", half, m, n.p.logs.tail(30))
		}
		if resumed.Phase == "" || resumed.BytesDone < off || resumed.BytesTotal == 0 {
			t.Errorf("status.upload never said where it resumed with its bytes (last %+v)", upload)
		}
		t.Logf("status.upload after the restart: %+v", resumed)
	} else {
		if n.p.cmd.ProcessState != nil {
			t.Errorf("the puller exited: %v", n.p.cmd.ProcessState)
		}
		if !strings.Contains(n.p.logs.String(), "update upload interrupted; continuing at the registry's offset") {
			t.Errorf("the puller did not log the cut:\n%s", n.p.logs.tail(30))
		}
	}

	// What the trainer wrote on the node is what went up: the update
	// artifact's model.safetensors has the file's digest.
	update := keep
	size := filesSize(t, update, "model.safetensors", "update.json")
	sent := link.Sent("barge-edgepuller")
	ratio := float64(sent) / float64(size)
	t.Logf("the puller sent %d bytes over the link for an update of %d bytes: %.4fx (all clients: %v)", sent, size, ratio, link.Clients())
	if ratio > 1.05 {
		t.Errorf("the puller sent %.4fx the update over the link; a resumed upload sends at most 1.05x", ratio)
	}
	if len(tm.Status.Rounds) != 1 {
		t.Fatalf("rounds in status: %+v", tm.Status.Rounds)
	}
	rd := tm.Status.Rounds[0]
	if rd.Base != d0 || rd.Updates != 1 || rd.Samples != 100 || rd.Aggregated == "" {
		t.Errorf("round 1: base %s (want %s), %d updates of %d samples (want 1 of 100), aggregated %q", rd.Base, d0, rd.Updates, rd.Samples, rd.Aggregated)
	}
	if upload.Phase != bargev1.UploadUploaded || upload.BytesDone != size || upload.BytesTotal != size {
		t.Errorf("%s's status.upload: %+v; want Uploaded, %d of %d bytes", name, upload, size, size)
	}
	out := registry + outName
	r := repository(t, out)
	agg, err := r.Resolve(ctx, rd.Aggregated)
	if err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Inspect(ctx, r, agg)
	if err != nil {
		t.Fatal(err)
	}
	updateDigest := a.Annotations["dev.barge.aggregate.updates"]
	if updateDigest != upload.Digest {
		t.Errorf("the aggregate names updates %q; %s uploaded %s", updateDigest, name, upload.Digest)
	}
	ud, err := r.Resolve(ctx, updateDigest)
	if err != nil {
		t.Fatal(err)
	}
	ua, err := artifact.Inspect(ctx, r, ud)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fileDigest(ua, "model.safetensors"), digestOfFile(t, filepath.Join(update, "model.safetensors")); got != want {
		t.Errorf("the update's model.safetensors in the registry is %s; the trainer wrote %s", got, want)
	}

	// One participant: the global model is its update, which is the base
	// plus one.
	checkPlusOne(t, filepath.Join(update, "model.safetensors"))
	aggDir := filepath.Join(t.TempDir(), "aggregate")
	barge(t, "pull", "--plain-http", out+"@"+rd.Aggregated, aggDir)
	sameTensors(t, filepath.Join(aggDir, "model.safetensors"), filepath.Join(update, "model.safetensors"))
}

// writeBigModel writes the base model of the fault tests into dir, with
// the train code layer a TrainingModel requires.
func writeBigModel(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "train"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "train", "config.json"), `{"trainer": "plus-one"}`)
	f, err := os.Create(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := safetensors.NewWriter(f, nil, bigTensors)
	if err != nil {
		t.Fatal(err)
	}
	var i int64
	for _, tensor := range w.Tensors() {
		err := streamF32(w, tensor.Elements(), func() float32 { v := baseValue(i); i++; return v })
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// streamF32 writes n float32s from next, a MiB at a time.
func streamF32(w io.Writer, n int64, next func() float32) error {
	buf := make([]byte, 0, 1<<20)
	for ; n > 0; n-- {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(next()))
		if len(buf) == cap(buf) || n == 1 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	return nil
}

// trainerEnv, in a trainer Job's environment, makes this test binary the
// trainer instead of the tests (see TestMain).
const trainerEnv = "CLUSTER_TEST_TRAINER"

// keepEnv names a directory where the trainer links the files it wrote.
const keepEnv = "CLUSTER_TEST_KEEP"

// plusOneTrainer is a trainer by the contract: it writes an update of the
// base model's shape, each float32 of model.safetensors plus one, trained
// on 100 samples.
func plusOneTrainer() error {
	model, out := os.Getenv("BARGE_MODEL_DIR"), os.Getenv("BARGE_OUTPUT_DIR")
	if model == "" || out == "" {
		return fmt.Errorf("BARGE_MODEL_DIR and BARGE_OUTPUT_DIR must be set")
	}
	src, err := os.Open(filepath.Join(model, "model.safetensors"))
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	st, err := safetensors.Open(src, fi.Size())
	if err != nil {
		return err
	}
	dst, err := os.Create(filepath.Join(out, "model.safetensors"))
	if err != nil {
		return err
	}
	defer dst.Close()
	w, err := safetensors.NewWriter(dst, nil, st.Tensors)
	if err != nil {
		return err
	}
	for _, tensor := range st.Tensors {
		if tensor.DType != safetensors.F32 {
			return fmt.Errorf("tensor %s is %s; this trainer takes F32 only", tensor.Name, tensor.DType)
		}
		buf := make([]byte, 1<<20)
		data := st.Data(tensor)
		for {
			k, err := io.ReadFull(data, buf)
			for j := 0; j+4 <= k; j += 4 {
				v := math.Float32frombits(binary.LittleEndian.Uint32(buf[j:]))
				binary.LittleEndian.PutUint32(buf[j:], math.Float32bits(v+1))
			}
			if _, werr := w.Write(buf[:k]); werr != nil {
				return werr
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				return err
			}
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, artifact.UpdateInfoFile), []byte(`{"samples": 100, "metrics": {"loss": 0.5}}`), 0o644); err != nil {
		return err
	}
	if keep := os.Getenv(keepEnv); keep != "" {
		for _, name := range []string{"model.safetensors", artifact.UpdateInfoFile} {
			if err := os.Link(filepath.Join(out, name), filepath.Join(keep, name)); err != nil {
				return err
			}
		}
	}
	return os.WriteFile(filepath.Join(out, artifact.UpdateDoneFile), nil, 0o644)
}

// checkPlusOne checks every value of the update at path against the base's.
func checkPlusOne(t *testing.T, path string) {
	t.Helper()
	var i int64
	eachTensor(t, path, func(tensor safetensors.Tensor, data io.Reader) {
		buf := make([]byte, 1<<20)
		for {
			k, err := io.ReadFull(data, buf)
			for j := 0; j+4 <= k; j += 4 {
				got := math.Float32frombits(binary.LittleEndian.Uint32(buf[j:]))
				if want := baseValue(i) + 1; got != want {
					t.Fatalf("the update's %s holds %v at element %d of the file, want the base's %v plus one", tensor.Name, got, i, baseValue(i))
				}
				i++
			}
			if err != nil {
				return
			}
		}
	})
}

// sameTensors checks that the safetensors files got and want hold the same
// tensors with the same bytes.
func sameTensors(t *testing.T, got, want string) {
	t.Helper()
	f, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	w, err := safetensors.Open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	eachTensor(t, got, func(tensor safetensors.Tensor, data io.Reader) {
		count++
		wt, ok := w.Tensor(tensor.Name)
		if !ok || wt.DType != tensor.DType || fmt.Sprint(wt.Shape) != fmt.Sprint(tensor.Shape) {
			t.Fatalf("%s has tensor %s %s %v, %s has %+v", got, tensor.Name, tensor.DType, tensor.Shape, want, wt)
		}
		a, b := make([]byte, 1<<20), make([]byte, 1<<20)
		wd := w.Data(wt)
		for off := 0; ; off += len(a) {
			na, errA := io.ReadFull(data, a)
			nb, _ := io.ReadFull(wd, b)
			if !bytes.Equal(a[:na], b[:nb]) {
				t.Fatalf("tensor %s differs from the update's within bytes %d-%d", tensor.Name, off, off+len(a))
			}
			if errA != nil {
				return
			}
		}
	})
	if count != len(w.Tensors) {
		t.Errorf("%s has %d tensors, %s %d", got, count, want, len(w.Tensors))
	}
}

// eachTensor calls fn with each tensor of the safetensors file at path.
func eachTensor(t *testing.T, path string, fn func(safetensors.Tensor, io.Reader)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st, err := safetensors.Open(f, fi.Size())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, tensor := range st.Tensors {
		fn(tensor, st.Data(tensor))
	}
}

// filesSize is the size of the named files in dir.
func filesSize(t *testing.T, dir string, names ...string) int64 {
	t.Helper()
	var n int64
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

func digestOfFile(t *testing.T, path string) digest.Digest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return digest.NewDigest(digest.SHA256, h)
}

// fileDigest is the digest of the file at path in a, or "".
func fileDigest(a *artifact.Artifact, path string) digest.Digest {
	for _, f := range a.Files {
		if f.Path == path {
			return f.Descriptor().Digest
		}
	}
	return ""
}
