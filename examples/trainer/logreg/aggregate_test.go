package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// layOut lays out updates as `barge aggregate fetch` does:
// dir/<node>/ and dir/updates.json.
func layOut(t *testing.T, dir string, updates map[string]string) {
	t.Helper()
	var listed []listedUpdate
	for node, src := range updates {
		info := readUpdateJSON(t, src)
		listed = append(listed, listedUpdate{Node: node, Digest: "sha256:x", Samples: int64(info.Samples), Metrics: info.Metrics})
		os.MkdirAll(filepath.Join(dir, node), 0o755)
		b, err := os.ReadFile(filepath.Join(src, modelFile))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, node, modelFile), b, 0o644)
	}
	b, _ := json.Marshal(listed)
	os.WriteFile(filepath.Join(dir, "updates.json"), b, 0o644)
}

func readUpdateJSON(t *testing.T, dir string) Update {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "update.json"))
	if err != nil {
		t.Fatal(err)
	}
	var u Update
	if err := json.Unmarshal(b, &u); err != nil {
		t.Fatal(err)
	}
	return u
}

// federate runs rounds of training on the shards in data; node poison
// (from 1, or 0) reports claim samples. aggregate makes the next global
// model from the round's update directories.
func federate(t *testing.T, dir, data string, rounds, poison, claim int, aggregate func(updates map[string]string, prev, into string)) []float64 {
	t.Helper()
	global := func(r int) string { return filepath.Join(dir, fmt.Sprintf("global-%d", r)) }
	logreg(t, "init", "--features", "4", "--classes", "3", "--out", global(0))
	var acc []float64
	for r := 1; r <= rounds; r++ {
		updates := map[string]string{}
		for k := 1; k <= 3; k++ {
			out := filepath.Join(dir, fmt.Sprintf("round-%d", r), fmt.Sprintf("node-%d", k))
			args := []string{"train", "--model", global(r - 1), "--data", filepath.Join(data, fmt.Sprintf("node-%d", k)), "--out", out, "--round", fmt.Sprint(r)}
			if k == poison {
				args = append(args, "--report-samples", fmt.Sprint(claim))
			}
			logreg(t, args...)
			updates[fmt.Sprintf("edge-%d", k)] = out
		}
		aggregate(updates, global(r-1), global(r))
		acc = append(acc, accuracy(t, global(r), filepath.Join(data, "test.csv")))
	}
	return acc
}

// TestRobustAggregationResistsALyingNode: one of three nodes trains on
// shifted labels and claims a million samples. FedAvg follows it to far
// below chance; the coordinate-wise median stays within 2 points of what
// FedAvg reaches when every node is honest. Every step is seeded; the
// figures (by round 1, 2): honest FedAvg 0.8267, 0.8480; poisoned FedAvg
// 0.1027, 0.0760; poisoned median 0.8347, 0.8453.
func TestRobustAggregationResistsALyingNode(t *testing.T) {
	const rounds, poison = 2, 2
	dir := t.TempDir()
	honest, bad := filepath.Join(dir, "honest"), filepath.Join(dir, "poisoned")
	logreg(t, "gen", "--seed", "3", "--samples", "3000", "--nodes", "3", "--out", honest)
	logreg(t, "gen", "--seed", "3", "--samples", "3000", "--nodes", "3", "--poison", fmt.Sprint(poison), "--out", bad)
	fedavg := func(updates map[string]string, _, into string) {
		var dirs []string
		for _, d := range updates {
			dirs = append(dirs, d)
		}
		fedAvg(t, dirs, into, defaultConfig)
	}
	median := func(updates map[string]string, prev, into string) {
		in := into + "-updates"
		layOut(t, in, updates)
		logreg(t, "aggregate", "--base", prev, "--updates", in, "--out", into, "--method", MethodMedian)
		// As barge aggregate publish does: train/ carried over from the base.
		b, _ := os.ReadFile(filepath.Join(prev, "train", "config.json"))
		os.MkdirAll(filepath.Join(into, "train"), 0o755)
		os.WriteFile(filepath.Join(into, "train", "config.json"), b, 0o644)
	}
	honestAcc := federate(t, filepath.Join(dir, "a"), honest, rounds, 0, 0, fedavg)
	fedavgAcc := federate(t, filepath.Join(dir, "b"), bad, rounds, poison, 1_000_000, fedavg)
	medianAcc := federate(t, filepath.Join(dir, "c"), bad, rounds, poison, 1_000_000, median)
	t.Logf("held-out accuracy by round: honest FedAvg %.4f; poisoned FedAvg %.4f; poisoned median %.4f", honestAcc, fedavgAcc, medianAcc)
	for r := range rounds {
		if medianAcc[r] < honestAcc[r]-0.02 {
			t.Errorf("round %d: the median reaches %.4f, more than 2 points below honest FedAvg's %.4f", r+1, medianAcc[r], honestAcc[r])
		}
		if fedavgAcc[r] > 0.5 {
			t.Errorf("round %d: poisoned FedAvg reaches %.4f: the attack in this test is too weak to show anything", r+1, fedavgAcc[r])
		}
	}
}

// TestAggregateStatistics: the median and trimmed mean of each weight over
// the updates, exactly, and the same for the nodes' metrics.
func TestAggregateStatistics(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	if err := saveModelDir(base, NewModel(1, 2), defaultConfig); err != nil {
		t.Fatal(err)
	}
	weights := [][]float64{{1, -5}, {2, 7}, {30, 0.5}, {4, 1}, {-100, 2}} // weight[0], bias[0]; weight[1] and bias[1] zero
	updates := map[string]string{}
	for i, w := range weights {
		m := NewModel(1, 2)
		m.Weight[0], m.Bias[0] = w[0], w[1]
		u := filepath.Join(dir, fmt.Sprintf("u%d", i))
		os.MkdirAll(u, 0o755)
		if err := m.Save(filepath.Join(u, modelFile)); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(Update{Samples: 1 + i*1000, Metrics: map[string]float64{"accuracy": float64(i) / 10}})
		os.WriteFile(filepath.Join(u, "update.json"), b, 0o644)
		updates[fmt.Sprintf("edge-%d", i)] = u
	}
	in := filepath.Join(dir, "in")
	layOut(t, in, updates)
	for _, c := range []struct {
		method           string
		trim             float64
		weight, bias, ac float64
	}{
		{MethodMedian, 0, 2, 1, 0.2},
		{MethodTrimmedMean, 0.2, (1 + 2 + 4) / 3.0, (0.5 + 1 + 2) / 3, (0.1 + 0.2 + 0.3) / 3},
		{MethodTrimmedMean, 0, (1 + 2 + 30 + 4 - 100) / 5.0, (-5 + 7 + 0.5 + 1 + 2) / 5, 0.2},
	} {
		out := filepath.Join(dir, fmt.Sprintf("out-%s-%g", c.method, c.trim))
		logreg(t, "aggregate", "--base", base, "--updates", in, "--out", out, "--method", c.method, "--trim", fmt.Sprint(c.trim))
		m, err := LoadModel(filepath.Join(out, modelFile))
		if err != nil {
			t.Fatal(err)
		}
		near := func(a, b float64) bool { return math.Abs(a-b) < 1e-6 }
		if !near(m.Weight[0], c.weight) || !near(m.Bias[0], c.bias) || m.Weight[1] != 0 || m.Bias[1] != 0 {
			t.Errorf("%s %g: weight %v bias %v, want %v and %v", c.method, c.trim, m.Weight, m.Bias, c.weight, c.bias)
		}
		var metrics map[string]float64
		json.Unmarshal(readFileT(t, filepath.Join(out, "metrics.json")), &metrics)
		if !near(metrics["accuracy"], c.ac) {
			t.Errorf("%s %g: metrics %v, want accuracy %v", c.method, c.trim, metrics, c.ac)
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"aggregate", "--base", base, "--updates", in, "--out", filepath.Join(dir, "x"), "--method", "mean"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), `--method "mean": use median or trimmed-mean`) {
		t.Errorf("an unknown method: exit %d, %s", code, errOut.String())
	}
}

func readFileT(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInitAggregate: init --aggregate puts the aggregate code in the model,
// a script that runs logreg aggregate.
func TestInitAggregate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	logreg(t, "init", "--features", "2", "--classes", "2", "--out", dir, "--aggregate", "median")
	b := readFileT(t, filepath.Join(dir, "aggregate", "aggregate"))
	if !strings.HasPrefix(string(b), "#!/bin/sh\n") || !strings.Contains(string(b), "exec logreg aggregate --method median") {
		t.Errorf("aggregate/aggregate:\n%s", b)
	}
}
