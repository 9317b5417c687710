package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/safetensors"
)

// logreg runs a subcommand as a user would, failing the test if it fails.
func logreg(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("logreg %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	return out.String()
}

func accuracy(t *testing.T, model, data string) float64 {
	t.Helper()
	var acc float64
	if _, err := fmt.Sscanf(logreg(t, "eval", "--model", model, "--data", data), "accuracy %f", &acc); err != nil {
		t.Fatal(err)
	}
	return acc
}

// fedAvg is the aggregation Barge runs, computed here independently: each
// tensor the sample-weighted mean of the nodes' tensors.
func fedAvg(t *testing.T, updates []string, into string, cfg Config) {
	t.Helper()
	var sum *Model
	var total float64
	for _, dir := range updates {
		m, err := LoadModel(filepath.Join(dir, modelFile))
		if err != nil {
			t.Fatal(err)
		}
		info, err := artifact.ReadUpdateDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		n := float64(info.Samples)
		if sum == nil {
			sum = NewModel(m.Features, m.Classes)
		}
		for i, v := range m.Weight {
			sum.Weight[i] += n * v
		}
		for i, v := range m.Bias {
			sum.Bias[i] += n * v
		}
		total += n
	}
	for i := range sum.Weight {
		sum.Weight[i] /= total
	}
	for i := range sum.Bias {
		sum.Bias[i] /= total
	}
	if err := saveModelDir(into, sum, cfg); err != nil {
		t.Fatal(err)
	}
}

// Three nodes, each with its own skewed shard, three rounds of FedAvg: the
// global model's held-out accuracy rises every round and ends within a few
// points of one model trained centrally on all the data for as many epochs.
// Every step is seeded, so the figures are the same on every run:
// 0.8267, 0.8480, 0.8573 by round; 0.8707 centralized.
func TestFedAvgApproachesCentralized(t *testing.T) {
	dir := t.TempDir()
	data, global := filepath.Join(dir, "data"), func(r int) string { return filepath.Join(dir, fmt.Sprintf("global-%d", r)) }
	cfg := defaultConfig
	logreg(t, "gen", "--seed", "3", "--samples", "3000", "--nodes", "3", "--out", data)
	logreg(t, "init", "--features", "4", "--classes", "3", "--out", global(0))
	test := filepath.Join(data, "test.csv")

	const rounds = 3
	acc := []float64{accuracy(t, global(0), test)}
	for r := 1; r <= rounds; r++ {
		var updates []string
		for k := 1; k <= 3; k++ {
			out := filepath.Join(dir, fmt.Sprintf("round-%d", r), fmt.Sprintf("node-%d", k))
			logreg(t, "train", "--model", global(r-1), "--data", filepath.Join(data, fmt.Sprintf("node-%d", k)), "--out", out, "--round", fmt.Sprint(r))
			updates = append(updates, out)
		}
		fedAvg(t, updates, global(r), cfg)
		acc = append(acc, accuracy(t, global(r), test))
	}

	central := filepath.Join(dir, "central")
	long := cfg
	long.Epochs *= rounds
	if err := saveModelDir(filepath.Join(dir, "central-base"), NewModel(4, 3), long); err != nil {
		t.Fatal(err)
	}
	logreg(t, "train", "--model", filepath.Join(dir, "central-base"), "--data", filepath.Join(data, "all.csv"), "--out", central)
	centralAcc := accuracy(t, central, test)

	t.Logf("held-out accuracy by round: %.4f; centralized: %.4f", acc, centralAcc)
	for r := 1; r <= rounds; r++ {
		if acc[r] <= acc[r-1] {
			t.Errorf("round %d: accuracy %.4f, not above round %d's %.4f", r, acc[r], r-1, acc[r-1])
		}
	}
	if acc[rounds] < centralAcc-0.03 {
		t.Errorf("after %d rounds FedAvg reaches %.4f, more than 3 points below centralized training's %.4f", rounds, acc[rounds], centralAcc)
	}
}

// The trainer contract: the directories come from the environment, the
// output is an update Barge's puller accepts, with the base model's tensor
// names, shapes and dtypes, and DONE last.
func TestTrainerContract(t *testing.T) {
	dir := t.TempDir()
	logreg(t, "gen", "--seed", "1", "--samples", "300", "--nodes", "2", "--out", filepath.Join(dir, "data"))
	logreg(t, "init", "--features", "4", "--classes", "3", "--out", filepath.Join(dir, "model"))
	out := filepath.Join(dir, "out")
	t.Setenv("BARGE_MODEL_DIR", filepath.Join(dir, "model"))
	t.Setenv("BARGE_DATA_DIR", filepath.Join(dir, "data", "node-2"))
	t.Setenv("BARGE_OUTPUT_DIR", out)
	t.Setenv("BARGE_ROUND", "2")
	logreg(t, "train")

	info, err := artifact.ReadUpdateDir(out)
	if err != nil {
		t.Fatalf("the puller would refuse the update: %v", err)
	}
	if info.Samples != 160 || info.Metrics["accuracy"] <= 0.5 || info.Metrics["loss"] <= 0 {
		t.Errorf("update.json %+v; want 160 samples (4/5 of node 2's 200), accuracy above chance and a loss", info)
	}
	base, updated := header(t, filepath.Join(dir, "model", modelFile)), header(t, filepath.Join(out, modelFile))
	if base != updated {
		t.Errorf("tensors %s; the base model has %s", updated, base)
	}
	entries, _ := os.ReadDir(out)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "DONE,model.safetensors,update.json" {
		t.Errorf("the output holds %v; want model.safetensors, update.json and DONE", names)
	}
}

// header describes a file's tensors: name, dtype and shape.
func header(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, x := range f.Tensors {
		s = append(s, fmt.Sprintf("%s %s %v", x.Name, x.DType, x.Shape))
	}
	j, _ := json.Marshal(s)
	return string(j)
}

// FuzzReadCSV: any file is read or refused with a message, never a panic,
// and what is read has the model's shape.
func FuzzReadCSV(f *testing.F) {
	f.Add("f0,f1,label\n0.5,1,0\n-2,3e1,1\n")
	f.Add("f0,f1,label\n0.5,1\n")
	f.Add("f0,f1,label\nx,1,0\n")
	f.Add("f0,f1,label\n1,1,7\n")
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(t.TempDir(), "shard.csv")
		os.WriteFile(path, []byte(content), 0o644)
		d, err := ReadData(path, 2, 2)
		if err != nil {
			return
		}
		for i, x := range d.X {
			if len(x) != 2 || d.Y[i] < 0 || d.Y[i] > 1 {
				t.Fatalf("row %d read as %v, label %d", i, x, d.Y[i])
			}
		}
	})
}
