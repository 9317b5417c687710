package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"oras.land/oras-go/v2/registry/remote"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1 "github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/internal/testenv"
	"github.com/bargeml/barge/safetensors"
)

// Federated training with every part a real process: barge-controller
// makes the rounds, the trainer Jobs run the example trainer
// (examples/trainer/logreg) as processes on each node's directories
// (testenv.StartProcessKubelet stands in for the Job controller and the
// kubelet), each node's barge-edgepuller uploads its update, the
// aggregation Job runs `barge aggregate fedavg`, and the promoted version
// rolls out to the nodes through an InferenceModel following a range.
func TestFederatedTrainingToServing(t *testing.T) {
	const rounds = 3
	ctx := context.Background()
	names := []string{"edge-1", "edge-2", "edge-3"}
	ns := env.Namespace(t)

	data := filepath.Join(t.TempDir(), "data")
	logreg(t, "gen", "--seed", "3", "--samples", "3000", "--nodes", "3", "--out", data)
	roots := startTrainingNodes(t, ns, data, names...)

	initial := filepath.Join(t.TempDir(), "initial")
	logreg(t, "init", "--features", "4", "--classes", "3", "--out", initial)
	repo := registry + "/models/" + ns + "-classifier"
	d0 := barge(t, "push", "--name", "classifier", "--framework", "logreg", initial, repo+":1.0.0")

	tm := &bargev1.TrainingModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "classifier"},
		Spec: bargev1.TrainingModelSpec{
			Artifact: repo, TargetVersion: "1.0.0", Insecure: true,
			NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
			LocalDataset: "/var/lib/sensors",
			Trainer: &bargev1.TrainerSpec{
				// The stand-in runs the command; the image is never pulled.
				Image:   "registry.example.com/trainers/logreg:1",
				Command: []string{filepath.Join(bins, "logreg"), "train"},
			},
			Rounds:  rounds,
			Promote: &bargev1.PromoteSpec{Version: "1.1.0", Require: []string{"metrics.accuracy >= 0.8"}},
		},
	}
	deleteAtEnd(t, ns, tm, "train-classifier")
	if err := env.Client.Create(ctx, tm); err != nil {
		t.Fatal(err)
	}
	waitTrained(t, tm)

	// Each round took every node's update, and the global model's held-out
	// accuracy rose each round to within 3 points of training centrally on
	// all the data.
	if len(tm.Status.Rounds) != rounds {
		t.Fatalf("%d rounds in status, want %d: %+v", len(tm.Status.Rounds), rounds, tm.Status.Rounds)
	}
	test := filepath.Join(data, "test.csv")
	acc := []float64{accuracyOf(t, initial, test)}
	base := d0
	for _, rd := range tm.Status.Rounds {
		if rd.Base != base || rd.Updates != 3 || rd.Participants != 3 || rd.Aggregated == "" {
			t.Errorf("round %d: base %s (want %s), %d of %d updates, aggregated %q", rd.Round, rd.Base, base, rd.Updates, rd.Participants, rd.Aggregated)
		}
		dir := filepath.Join(t.TempDir(), "round")
		barge(t, "pull", "--plain-http", repo+"@"+rd.Aggregated, dir)
		acc = append(acc, accuracyOf(t, dir, test))
		base = rd.Aggregated
	}
	central := filepath.Join(t.TempDir(), "central")
	logreg(t, "init", "--features", "4", "--classes", "3", "--epochs", strconv.Itoa(2*rounds), "--out", central+"-base")
	logreg(t, "train", "--model", central+"-base", "--data", filepath.Join(data, "all.csv"), "--out", central)
	centralAcc := accuracyOf(t, central, test)
	t.Logf("held-out accuracy: initial and by round %.4f; centralized %.4f", acc, centralAcc)
	for r := 1; r <= rounds; r++ {
		if acc[r] <= acc[r-1] {
			t.Errorf("round %d: accuracy %.4f, not above %.4f before it", r, acc[r], acc[r-1])
		}
	}
	if acc[rounds] < centralAcc-0.03 {
		t.Errorf("FedAvg ends at %.4f, more than 3 points below centralized training's %.4f", acc[rounds], centralAcc)
	}

	// The first round's global model is the sample-weighted mean of the
	// three updates, computed here from the updates in the registry.
	checkWeightedMean(t, repo, tm.Status.Rounds[0])

	final := tm.Status.Rounds[rounds-1].Aggregated
	if p := tm.Status.Promoted; p == nil || p.Version != "1.1.0" || p.Digest != final {
		t.Fatalf("promoted %+v, want 1.1.0 at %s", p, final)
	}
	if got := resolveTag(t, repo, "1.1.0"); got != final {
		t.Errorf("%s:1.1.0 is %s, want the final model %s", repo, got, final)
	}

	// An InferenceModel following >=1.0 rolls the promoted version out.
	im := &bargev1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "classifier"},
		Spec: bargev1.InferenceModelSpec{
			Artifact: repo, TargetVersion: ">=1.0", Insecure: true,
			NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
			Rollout:      bargev1.RolloutSpec{MaxConcurrentNodes: 3},
		},
	}
	deleteAtEnd(t, ns, im, "model-classifier")
	createModel(t, im)
	waitUntil(t, "1.1.0 on every node", 2*time.Minute, func() error {
		for _, n := range names {
			na, ok := artifactsNamed(t, ns, "model-classifier")[n]
			if !ok || na.Status.Phase != bargev1.NodeArtifactReady || na.Status.Digest != final {
				return fmt.Errorf("%s: %+v", n, na.Status)
			}
		}
		return nil
	})
	for _, n := range names {
		dir := filepath.Join(roots[n], "artifacts", ns, "model-classifier", "current")
		if got := accuracyOf(t, dir, test); got != acc[rounds] {
			t.Errorf("%s serves a model of accuracy %.4f, want the final model's %.4f", n, got, acc[rounds])
		}
	}
}

// startTrainingNodes starts a puller for each node and the stand-in for
// the kubelet and the Job controller; node i+1 holds shard
// data/node-<i+1>/train.csv where no one else can read it: the
// TrainingModel's localDataset /var/lib/sensors, a host path outside the
// puller's root. It returns each node's puller root.
func startTrainingNodes(t *testing.T, ns, data string, names ...string) map[string]string {
	t.Helper()
	roots, hosts := map[string]string{}, map[string]string{}
	for i, n := range names {
		roots[n] = startNode(t, n).root
		hosts[n] = filepath.Join(t.TempDir(), n+"-host")
		shard, err := os.ReadFile(filepath.Join(data, fmt.Sprintf("node-%d", i+1), "train.csv"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(hosts[n], "var/lib/sensors"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(hosts[n], "var/lib/sensors/shard.csv"), string(shard))
	}
	testenv.StartProcessKubelet(t, env.Client, ns, testenv.ProcessConfig{
		EdgeRoot: bargev1.DefaultEdgeRoot,
		NodeRoot: func(node string) string { return roots[node] },
		HostRoot: func(node string) string { return hosts[node] },
	}, names...)
	return roots
}

// waitTrained waits until tm has completed its rounds.
func waitTrained(t *testing.T, tm *bargev1.TrainingModel) {
	t.Helper()
	waitUntil(t, "the training to complete", 5*time.Minute, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(tm), tm); err != nil {
			return err
		}
		switch tm.Status.Phase {
		case bargev1.TrainingCompleted:
			return nil
		case bargev1.TrainingFailed:
			t.Fatalf("training failed: %+v", tm.Status)
		}
		return fmt.Errorf("phase %s, round %d: %+v", tm.Status.Phase, tm.Status.Round, tm.Status.Rounds)
	})
}

// checkWeightedMean recomputes a round's aggregate from its updates.
func checkWeightedMean(t *testing.T, repo string, rd bargev1.RoundStatus) {
	t.Helper()
	got, in := roundInputs(t, repo, rd)
	sum := map[string][]float64{}
	var samples float64
	for _, u := range in {
		for name, v := range u.tensors {
			s := sum[name]
			if s == nil {
				s = make([]float64, len(v))
			}
			for i := range v {
				s[i] += float64(u.samples) * float64(v[i])
			}
			sum[name] = s
		}
		samples += float64(u.samples)
	}
	if int64(samples) != rd.Samples {
		t.Errorf("round %d: the updates hold %v samples, status says %d", rd.Round, samples, rd.Samples)
	}
	for name, s := range sum {
		for i := range s {
			if want := float32(s[i] / samples); got[name][i] != want {
				t.Fatalf("round %d: %s[%d] is %v, the sample-weighted mean is %v", rd.Round, name, i, got[name][i], want)
			}
		}
	}
	if len(got) != len(sum) || len(sum) == 0 {
		t.Errorf("round %d: the aggregate has tensors %v, the updates %d", rd.Round, len(got), len(sum))
	}
}

// roundInput is one update a round aggregated: its samples and tensors.
type roundInput struct {
	node    string
	samples int64
	tensors map[string][]float32
}

// roundInputs reads a round's aggregated tensors and the updates the
// aggregate names, from the registry, checking that they are of this
// round and base.
func roundInputs(t *testing.T, repo string, rd bargev1.RoundStatus) (map[string][]float32, []roundInput) {
	t.Helper()
	ctx := context.Background()
	r := repository(t, repo)
	base, err := r.Resolve(ctx, rd.Base)
	if err != nil {
		t.Fatal(err)
	}
	agg, err := r.Resolve(ctx, rd.Aggregated)
	if err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Inspect(ctx, r, agg)
	if err != nil {
		t.Fatal(err)
	}
	if a.Annotations["dev.barge.aggregate.base"] != base.Digest.String() {
		t.Errorf("round %d: the aggregate names base %q, want %s", rd.Round, a.Annotations["dev.barge.aggregate.base"], base.Digest)
	}
	// The aggregate names its inputs: the referrers listing of a registry
	// without the referrers API can drop one of two updates pushed at once.
	updates := strings.Split(a.Annotations["dev.barge.aggregate.updates"], ",")
	if len(updates) != int(rd.Updates) {
		t.Fatalf("round %d: the aggregate names updates %v, status says %d", rd.Round, updates, rd.Updates)
	}
	var in []roundInput
	for _, d := range updates {
		ref, err := r.Resolve(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		ua, err := artifact.Inspect(ctx, r, ref)
		if err != nil {
			t.Fatal(err)
		}
		u, err := artifact.UpdateOf(ua)
		if err != nil {
			t.Fatal(err)
		}
		if u.Round != int(rd.Round) || u.Base.Digest != base.Digest {
			t.Errorf("update %s is of round %d from %s, aggregated in round %d from %s", ref.Digest, u.Round, u.Base.Digest, rd.Round, base.Digest)
		}
		in = append(in, roundInput{node: u.Node, samples: u.Samples, tensors: tensorsOf(t, r, ua)})
	}
	return tensorsOf(t, r, a), in
}

// tensorsOf reads the F32 tensors of model.safetensors in a.
func tensorsOf(t *testing.T, r *remote.Repository, a *artifact.Artifact) map[string][]float32 {
	t.Helper()
	for _, f := range a.Files {
		if f.Path != "model.safetensors" {
			continue
		}
		rc, err := r.Fetch(context.Background(), f.Descriptor())
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		st, err := safetensors.Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]float32{}
		for _, tensor := range st.Tensors {
			if tensor.DType != safetensors.F32 {
				t.Fatalf("%s: tensor %s is %s, the example trainer writes F32", a.Digest, tensor.Name, tensor.DType)
			}
			b, err := io.ReadAll(st.Data(tensor))
			if err != nil {
				t.Fatal(err)
			}
			out[tensor.Name] = safetensors.F32s(b)
		}
		return out
	}
	t.Fatalf("%s has no model.safetensors", a.Digest)
	return nil
}

// accuracyOf is the held-out accuracy of the model in dir.
func accuracyOf(t *testing.T, dir, test string) float64 {
	t.Helper()
	out := logreg(t, "eval", "--model", dir, "--data", test)
	var acc, loss float64
	var n int
	if _, err := fmt.Sscanf(out, "accuracy %f loss %f samples %d", &acc, &loss, &n); err != nil {
		t.Fatalf("logreg eval said %q: %v", out, err)
	}
	return acc
}

func logreg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(bins, "logreg"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("logreg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func repository(t *testing.T, repo string) *remote.Repository {
	t.Helper()
	r, err := remote.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	return r
}

func resolveTag(t *testing.T, repo, tag string) string {
	t.Helper()
	desc, err := repository(t, repo).Resolve(context.Background(), tag)
	if err != nil {
		t.Fatal(err)
	}
	return desc.Digest.String()
}

// artifactsNamed lists the NodeArtifacts of one artifact name by node.
func artifactsNamed(t *testing.T, ns, name string) map[string]bargev1.NodeArtifact {
	t.Helper()
	var list bargev1.NodeArtifactList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]bargev1.NodeArtifact{}
	for _, na := range list.Items {
		if na.Spec.ArtifactName == name {
			out[na.Spec.NodeName] = na
		}
	}
	return out
}

// deleteAtEnd deletes obj when the test ends and waits until its
// NodeArtifacts (of artifactName) are gone, while the pullers still run.
func deleteAtEnd(t *testing.T, ns string, obj client.Object, artifactName string) {
	t.Cleanup(func() {
		ctx := context.Background()
		if err := env.Client.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			t.Error(err)
			return
		}
		waitFor(t, obj.GetName()+" and its NodeArtifacts to be gone", 60*time.Second, func() bool {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
			return apierrors.IsNotFound(err) && len(artifactsNamed(t, ns, artifactName)) == 0
		})
	})
}
