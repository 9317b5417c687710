package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/bargeml/barge/artifact"
)

// scriptBase is a base with an aggregate script, as aggregation Script
// needs.
var scriptBase = map[string][]byte{"aggregate/aggregate": []byte("#!/bin/sh\nexec my-aggregator\n")}

func (e *fedEnv) fetch(dir string, args ...string) (fetchResult, string, error) {
	e.t.Helper()
	stdout, stderr, err := runBarge(e.t, append([]string{"aggregate", "fetch", "--base", e.baseRef(), "--updates-repo", e.reg.Host() + "/models/m", "--dir", dir}, args...)...)
	var res fetchResult
	if err == nil {
		if jerr := json.Unmarshal([]byte(stdout), &res); jerr != nil {
			e.t.Fatalf("stdout is not the JSON result: %v\n%s", jerr, stdout)
		}
	}
	return res, stderr, err
}

func (e *fedEnv) publish(dir string, args ...string) (aggregateResult, string, error) {
	e.t.Helper()
	stdout, stderr, err := runBarge(e.t, append([]string{"aggregate", "publish", "--base", e.baseRef(), "--dir", dir}, args...)...)
	var res aggregateResult
	if err == nil {
		if jerr := json.Unmarshal([]byte(stdout), &res); jerr != nil {
			e.t.Fatalf("stdout is not the JSON result: %v\n%s", jerr, stdout)
		}
	}
	return res, stderr, err
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAggregateScriptFetchThenPublish: fetch lays out the base, this
// round's updates by node (never another run's) and updates.json; the
// script's output is pushed with the base's metadata, the provenance
// annotations, the base's code carried over, and the script's
// metrics.json as the metrics (not as a file of the model); without
// metrics.json, the weighted means.
func TestAggregateScriptFetchThenPublish(t *testing.T) {
	e := newFedEnvWith(t, scriptBase)
	const run = "run-a"
	in := []*update{
		e.goodUpdate("edge-2", 1, run, 300, 0.70),
		e.goodUpdate("edge-1", 1, run, 1200, 0.80),
		e.goodUpdate("edge-3", 1, run, 4500, 0.90),
	}
	e.goodUpdate("edge-1", 1, "run-b", 999, 0.1) // another training from the same base

	dir := filepath.Join(t.TempDir(), "work")
	fr, stderr, err := e.fetch(dir, "--round", "1", "--run", run)
	if err != nil {
		t.Fatalf("fetch: %v\n%s", err, stderr)
	}
	var listed []scriptUpdate
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "updates", "updates.json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 || len(fr.Updates) != 3 {
		t.Fatalf("updates.json %+v, result %+v", listed, fr.Updates)
	}
	for i, node := range []string{"edge-1", "edge-2", "edge-3"} {
		u := in[[]int{1, 0, 2}[i]]
		l := listed[i]
		if l.Node != node || l.Digest != string(u.desc.Digest) || l.Samples != u.samples || l.Metrics["accuracy"] != u.metrics["accuracy"] {
			t.Errorf("updates.json[%d] = %+v, want node %s's update %s, %d samples, %v", i, l, node, u.desc.Digest, u.samples, u.metrics)
		}
		if got := readFile(t, filepath.Join(dir, "updates", node, "model.safetensors")); !bytes.Equal(got, u.files["model.safetensors"]) {
			t.Errorf("updates/%s/model.safetensors is not its update's", node)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "updates")); len(entries) != 4 {
		t.Errorf("updates/ has %d entries, want updates.json and the 3 of run-a", len(entries))
	}
	if fi, err := os.Stat(filepath.Join(dir, "base/aggregate/aggregate")); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("base/aggregate/aggregate is not executable: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "base/model.safetensors")); err != nil {
		t.Error(err)
	}
	if _, _, err := e.fetch(dir, "--round", "1", "--run", run); err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Errorf("a second fetch into the same directory: %v, want it refused", err)
	}

	// The script: the first update's weights, a config of its own, metrics.
	out := filepath.Join(dir, "out")
	newWeights := in[1].files["model.safetensors"]
	os.WriteFile(filepath.Join(out, "model.safetensors"), newWeights, 0o644)
	os.WriteFile(filepath.Join(out, "config.json"), []byte(`{"classes": 10, "aggregated": "median"}`), 0o644)
	os.WriteFile(filepath.Join(out, "metrics.json"), []byte(`{"accuracy": 0.42, "loss": 1.5}`), 0o644)
	push := e.reg.Host() + "/models/m:train-r1"
	res, stderr, err := e.publish(dir, "--round", "1", "--run", run, "--push", push, "--promote", "1.1.0", "--require", "metrics.accuracy >= 0.4")
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, stderr)
	}
	if res.Metrics["accuracy"] != 0.42 || res.Metrics["loss"] != 1.5 || res.Samples != 6000 || len(res.Updates) != 3 || !res.Promoted || res.Tag != "train-r1" {
		t.Errorf("result %+v", res)
	}
	pulled, _ := e.pullModel(push)
	if !bytes.Equal(readFile(t, filepath.Join(pulled, "model.safetensors")), newWeights) {
		t.Error("the pushed model.safetensors is not what the script wrote")
	}
	if !strings.Contains(string(readFile(t, filepath.Join(pulled, "config.json"))), "median") {
		t.Error("the pushed config.json is not the script's")
	}
	for _, f := range []string{"train/train.py", "aggregate/aggregate", "aggregate/README.md"} {
		if _, err := os.Stat(filepath.Join(pulled, f)); err != nil {
			t.Errorf("the base's %s was not carried over: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(pulled, "metrics.json")); err == nil {
		t.Error("metrics.json was packed into the model")
	}
	desc, err := e.repo.Resolve(context.Background(), "1.1.0")
	if err != nil || string(desc.Digest) != res.Digest {
		t.Fatalf("1.1.0 is %s (%v), want %s", desc.Digest, err, res.Digest)
	}
	a, err := artifact.Inspect(context.Background(), e.repo, desc)
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for _, u := range in {
		digests = append(digests, string(u.desc.Digest))
	}
	slices.Sort(digests)
	if a.Name != "mnist" || a.Annotations[AnnotationAggregateMethod] != "script" || a.Annotations[AnnotationAggregateRound] != "1" ||
		a.Annotations[AnnotationAggregateRun] != run || a.Annotations[AnnotationAggregateUpdates] != strings.Join(digests, ",") {
		t.Errorf("name %q, annotations %v", a.Name, a.Annotations)
	}
	for _, f := range a.Files {
		if strings.HasPrefix(f.Path, "train/") && f.Role != artifact.RoleTrain || strings.HasPrefix(f.Path, "aggregate/") && f.Role != artifact.RoleAggregate {
			t.Errorf("%s has role %q", f.Path, f.Role)
		}
	}
	recs, err := artifact.ListMetrics(context.Background(), e.repo, desc)
	if err != nil || len(recs) != 1 || recs[0].Metrics.Metrics["accuracy"] != 0.42 {
		t.Errorf("metrics referrers %+v (%v), want the script's", recs, err)
	}

	// Published again: the same model, the same digest.
	again, stderr, err := e.publish(dir, "--round", "1", "--run", run, "--push", push)
	if err != nil || again.Digest != res.Digest {
		t.Errorf("publish again: %s (%v), want %s\n%s", again.Digest, err, res.Digest, stderr)
	}

	// Without metrics.json: the participants' weighted means.
	os.Remove(filepath.Join(out, "metrics.json"))
	res, stderr, err = e.publish(dir, "--round", "1", "--run", run, "--push", e.reg.Host()+"/models/m:r1b")
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, stderr)
	}
	if want := (300*0.70 + 1200*0.80 + 4500*0.90) / 6000; res.Metrics["accuracy"] != want {
		t.Errorf("accuracy %v, want the weighted mean %v", res.Metrics["accuracy"], want)
	}
}

// TestAggregateScriptRefuses: fetch refuses an update FedAvg would (a
// tensor of another shape), naming node and tensor; publish refuses what
// the script (which runs with the directory writable) could have altered
// or slipped in: an updates.json naming another node, sample count or a
// stale update, a changed code file of the base, a symlink out of the
// directory (such as to the push credential), and an empty output.
func TestAggregateScriptRefuses(t *testing.T) {
	e := newFedEnvWith(t, scriptBase)
	e.goodUpdate("edge-1", 1, "run-a", 100, 0.5)
	e.goodUpdate("edge-2", 1, "run-a", 300, 0.7)
	stale := e.goodUpdate("edge-3", 1, "run-b", 100, 0.5)

	bad := &update{node: "edge-9", round: 2, run: "run-a", samples: 100, files: map[string][]byte{
		"model.safetensors": safetensorsBytes(t, append([]fedTensor{{"fc.weight", "F32", []int64{10, 4}}}, fedModel[1:]...), fedValues(e.rng, append([]fedTensor{{"fc.weight", "F32", []int64{10, 4}}}, fedModel[1:]...))),
	}}
	e.push(bad)
	_, _, err := e.fetch(filepath.Join(t.TempDir(), "w"), "--round", "2", "--run", "run-a")
	if err == nil || !strings.Contains(err.Error(), "node edge-9") || !strings.Contains(err.Error(), "tensor fc.weight has shape [10 4], the base has [10 5]") {
		t.Errorf("fetch of a misshapen update: %v", err)
	}

	fetched := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "w")
		if _, stderr, err := e.fetch(dir, "--round", "1", "--run", "run-a"); err != nil {
			t.Fatalf("fetch: %v\n%s", err, stderr)
		}
		os.WriteFile(filepath.Join(dir, "out", "model.safetensors"), []byte("weights"), 0o644)
		return dir
	}
	secret := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(secret, []byte(`{"auths": {}}`), 0o600)
	editList := func(edit func([]scriptUpdate) []scriptUpdate) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			var l []scriptUpdate
			json.Unmarshal(readFile(t, filepath.Join(dir, "updates", "updates.json")), &l)
			b, _ := json.Marshal(edit(l))
			os.WriteFile(filepath.Join(dir, "updates", "updates.json"), b, 0o644)
		}
	}
	cases := []struct {
		name  string
		alter func(t *testing.T, dir string)
		want  string
	}{
		{"more samples", editList(func(l []scriptUpdate) []scriptUpdate { l[0].Samples = 1e9; return l }),
			"updates.json says node edge-1, 1000000000 samples; the update's annotations say node edge-1, 100"},
		{"a stale update", editList(func(l []scriptUpdate) []scriptUpdate {
			return append(l, scriptUpdate{Node: "edge-3", Digest: string(stale.desc.Digest), Samples: 100})
		}), "it is of training run run-b, not run-a"},
		{"not a list", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "updates", "updates.json"), []byte(`{}`), 0o644)
		},
			"not a list of updates"},
		{"changed train code", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "base/train/train.py")
			os.Remove(p)
			os.WriteFile(p, []byte("steal()\n"), 0o644)
		}, "carry train/train.py over from the base"},
		{"symlink out", func(t *testing.T, dir string) { os.Symlink(secret, filepath.Join(dir, "out", "creds.json")) },
			"symlink creds.json points outside"},
		{"empty output", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "out", "model.safetensors")) },
			"holds no file: the aggregation wrote no model"},
		{"bad metrics", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "out", "metrics.json"), []byte(`{"accuracy": "high"}`), 0o644)
		}, `metric "accuracy" is "high", not a number`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := fetched(t)
			c.alter(t, dir)
			tag := "r-" + strings.ReplaceAll(c.name, " ", "-")
			_, stderr, err := e.publish(dir, "--round", "1", "--run", "run-a", "--push", e.reg.Host()+"/models/m:"+tag)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("publish: %v, want it to say %q\n%s", err, c.want, stderr)
			}
			if _, err := e.repo.Resolve(context.Background(), tag); err == nil {
				t.Errorf("%s was pushed", tag)
			}
		})
	}
}

func TestCheckNodeName(t *testing.T) {
	for _, n := range []string{"edge-1", "node.example.com", "N_1"} {
		if err := checkNodeName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", "..", ".store", "a/b", "../x", "-a", "a b", "updates.json", strings.Repeat("a", 254)} {
		if err := checkNodeName(n); err == nil {
			t.Errorf("%q was accepted as a directory name", n)
		}
	}
}

// FuzzParseScriptUpdates: updates.json, which an aggregation script may
// rewrite, never panics the parser, and what it accepts names each update
// by a valid digest.
func FuzzParseScriptUpdates(f *testing.F) {
	f.Add([]byte(`[{"node": "edge-1", "digest": "sha256:` + strings.Repeat("a", 64) + `", "samples": 3, "metrics": {"accuracy": 0.5}}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"digest": "sha256:x"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := parseScriptUpdates(b)
		if err != nil {
			return
		}
		if len(entries) == 0 {
			t.Fatal("an empty list was accepted")
		}
		for _, e := range entries {
			if _, err := digest.Parse(e.Digest); err != nil {
				t.Fatalf("digest %q accepted: %v", e.Digest, err)
			}
		}
	})
}
