package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bargev1 "github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/safetensors"
)

// A robust aggregation written by the model's authors, run by Barge: the
// model carries aggregate/aggregate (examples/trainer/logreg's coordinate-
// wise median), and spec.aggregation Script runs it in each round's
// aggregation Job between `barge aggregate fetch` and `barge aggregate
// publish`. One of the three nodes trains on shifted labels and claims a
// million samples. FedAvg over the very updates of round 1 falls far
// below chance; the median stays close to what FedAvg reaches when every
// node is honest, and equals the median the test computes.
func TestScriptAggregationResistsALyingNode(t *testing.T) {
	const rounds = 2
	ctx := context.Background()
	names := []string{"edge-1", "edge-2", "edge-3"}
	ns := env.Namespace(t)
	data := filepath.Join(t.TempDir(), "data")
	logreg(t, "gen", "--seed", "3", "--samples", "3000", "--nodes", "3", "--poison", "2", "--out", data)
	startTrainingNodes(t, ns, data, names...)

	initial := filepath.Join(t.TempDir(), "initial")
	logreg(t, "init", "--features", "4", "--classes", "3", "--aggregate", "median", "--out", initial)
	repo := registry + "/models/" + ns + "-classifier"
	d0 := barge(t, "push", "--name", "classifier", "--framework", "logreg", initial, repo+":1.0.0")

	tm := &bargev1.TrainingModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "robust"},
		Spec: bargev1.TrainingModelSpec{
			Artifact: repo, TargetVersion: "1.0.0", Insecure: true,
			NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
			LocalDataset: "/var/lib/sensors",
			Aggregation:  bargev1.AggregationScript,
			Trainer: &bargev1.TrainerSpec{
				// The stand-in runs the commands (this one, and the model's
				// aggregate/aggregate, which runs logreg) with logreg on
				// PATH, as the image would have it.
				Image: "registry.example.com/trainers/logreg:1",
				Command: []string{"/bin/sh", "-c", `if [ "$BARGE_NODE_NAME" = edge-2 ]; then exec logreg train --report-samples 1000000; fi
exec logreg train`},
			},
			Rounds:  rounds,
			Promote: &bargev1.PromoteSpec{Version: "1.1.0", Require: []string{"metrics.accuracy >= 0.5"}},
		},
	}
	deleteAtEnd(t, ns, tm, "train-robust")
	if err := env.Client.Create(ctx, tm); err != nil {
		t.Fatal(err)
	}
	waitTrained(t, tm)

	test := filepath.Join(data, "test.csv")
	var acc []float64
	base := d0
	for _, rd := range tm.Status.Rounds {
		if rd.Base != base || rd.Updates != 3 || rd.Aggregated == "" {
			t.Fatalf("round %d: base %s (want %s), %d updates, aggregated %q", rd.Round, rd.Base, base, rd.Updates, rd.Aggregated)
		}
		got, in := roundInputs(t, repo, rd)
		if want := medianOf(in); !tensorsEqual(got, want) {
			t.Errorf("round %d: the script's model is not the coordinate-wise median of the updates:\n%v\nwant\n%v", rd.Round, got, want)
		}
		dir := filepath.Join(t.TempDir(), "round")
		barge(t, "pull", "--plain-http", repo+"@"+rd.Aggregated, dir)
		if _, err := os.Stat(filepath.Join(dir, "aggregate", "aggregate")); err != nil {
			t.Errorf("round %d: the aggregate code was not carried over: %v", rd.Round, err)
		}
		acc = append(acc, accuracyOf(t, dir, test))
		base = rd.Aggregated
	}
	r := repository(t, repo)
	final, err := r.Resolve(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Inspect(ctx, r, final)
	if err != nil {
		t.Fatal(err)
	}
	if m := a.Annotations["dev.barge.aggregate.method"]; m != "script" {
		t.Errorf("the final model's aggregate method is %q, want script", m)
	}

	// What FedAvg would have made of round 1's updates, and what it makes
	// when every node is honest (trained here, from the same model, seeded
	// as the trainers are).
	_, in := roundInputs(t, repo, tm.Status.Rounds[0])
	poisoned := accuracyOf(t, writeModel(t, fedAvgOf(in)), test)
	honestData := filepath.Join(t.TempDir(), "honest")
	logreg(t, "gen", "--seed", "3", "--samples", "3000", "--nodes", "3", "--out", honestData)
	var honest []roundInput
	for k := 1; k <= 3; k++ {
		out := filepath.Join(t.TempDir(), "update")
		logreg(t, "train", "--model", initial, "--data", filepath.Join(honestData, fmt.Sprintf("node-%d", k)), "--out", out, "--round", "1")
		honest = append(honest, localUpdate(t, out))
	}
	honestAcc := accuracyOf(t, writeModel(t, fedAvgOf(honest)), test)
	t.Logf("held-out accuracy: median by round %.4f; round 1 by FedAvg over the same updates %.4f, by FedAvg with every node honest %.4f", acc, poisoned, honestAcc)
	if acc[0] < honestAcc-0.03 {
		t.Errorf("round 1: the median reaches %.4f, more than 3 points below honest FedAvg's %.4f", acc[0], honestAcc)
	}
	if poisoned > 0.5 {
		t.Errorf("FedAvg over the poisoned round reaches %.4f: the lying node should have taken it below chance", poisoned)
	}
	if p := tm.Status.Promoted; p == nil || p.Version != "1.1.0" || p.Digest != base {
		t.Errorf("promoted %+v, want 1.1.0 at %s (the nodes' median accuracy passes >= 0.5)", p, base)
	}
}

// medianOf is the coordinate-wise median of the updates' tensors.
func medianOf(in []roundInput) map[string][]float32 {
	out := map[string][]float32{}
	for name, v := range in[0].tensors {
		m := make([]float32, len(v))
		vals := make([]float64, len(in))
		for i := range v {
			for k, u := range in {
				vals[k] = float64(u.tensors[name][i])
			}
			slices.Sort(vals)
			n := len(vals)
			if n%2 == 1 {
				m[i] = float32(vals[n/2])
			} else {
				m[i] = float32((vals[n/2-1] + vals[n/2]) / 2)
			}
		}
		out[name] = m
	}
	return out
}

// fedAvgOf is the sample-weighted mean of the updates' tensors.
func fedAvgOf(in []roundInput) map[string][]float32 {
	var total float64
	sum := map[string][]float64{}
	for _, u := range in {
		for name, v := range u.tensors {
			if sum[name] == nil {
				sum[name] = make([]float64, len(v))
			}
			for i, x := range v {
				sum[name][i] += float64(u.samples) * float64(x)
			}
		}
		total += float64(u.samples)
	}
	out := map[string][]float32{}
	for name, s := range sum {
		out[name] = make([]float32, len(s))
		for i := range s {
			out[name][i] = float32(s[i] / total)
		}
	}
	return out
}

func tensorsEqual(a, b map[string][]float32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// writeModel writes the test's classifier (3 classes, 4 features) with
// tensors into a new model directory, for logreg eval.
func writeModel(t *testing.T, tensors map[string][]float32) string {
	t.Helper()
	var data [][]byte
	specs := []safetensors.Tensor{
		{Name: "weight", DType: safetensors.F32, Shape: []int64{3, 4}},
		{Name: "bias", DType: safetensors.F32, Shape: []int64{3}},
	}
	for _, s := range specs {
		data = append(data, safetensors.AppendF32(nil, tensors[s.Name]...))
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, nil, specs, data); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "model.safetensors"), buf.String())
	return dir
}

// localUpdate reads an update logreg train wrote.
func localUpdate(t *testing.T, dir string) roundInput {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "update.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info artifact.UpdateInfo
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	m, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := safetensors.Open(bytes.NewReader(m), int64(len(m)))
	if err != nil {
		t.Fatal(err)
	}
	u := roundInput{samples: info.Samples, tensors: map[string][]float32{}}
	for _, x := range st.Tensors {
		raw, err := io.ReadAll(st.Data(x))
		if err != nil {
			t.Fatal(err)
		}
		u.tensors[x.Name] = safetensors.F32s(raw)
	}
	return u
}
