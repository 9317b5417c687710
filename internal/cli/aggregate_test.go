package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/x448/float16"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/registry"
	"github.com/bargeml/barge/safetensors"
)

// fedTensor is one tensor of the test model.
type fedTensor struct {
	name  string
	dtype safetensors.DType
	shape []int64
}

// fedModel has every averaged 16- and 32-bit dtype, an integer tensor that
// is taken from the base, and a tensor much larger than the chunk size the
// tests aggregate with (4 KiB): 40,000 F32 elements, 156 KiB.
var fedModel = []fedTensor{
	{"fc.weight", safetensors.F32, []int64{10, 5}},
	{"fc.bias", safetensors.F32, []int64{10}},
	{"emb.half", safetensors.F16, []int64{6, 4}},
	{"emb.brain", safetensors.BF16, []int64{17}},
	{"steps", safetensors.I64, []int64{1}},
	{"big", safetensors.F32, []int64{200, 200}},
}

var fedPrecision = map[safetensors.DType]uint{safetensors.F32: 24, safetensors.F16: 11, safetensors.BF16: 8}

// fedValues draws values representable in each tensor's dtype.
func fedValues(rng *rand.Rand, model []fedTensor) [][]float64 {
	vals := make([][]float64, len(model))
	for i, t := range model {
		n := int64(1)
		for _, d := range t.shape {
			n *= d
		}
		vals[i] = make([]float64, n)
		for j := range vals[i] {
			x := 0.25 + rng.Float64()*3.5
			if rng.IntN(2) == 0 {
				x = -x
			}
			if p, ok := fedPrecision[t.dtype]; ok {
				x = roundPrec(big.NewFloat(x), p)
			} else {
				x = float64(rng.IntN(1000))
			}
			vals[i][j] = x
		}
	}
	return vals
}

func roundPrec(x *big.Float, prec uint) float64 {
	f, _ := new(big.Float).SetMode(big.ToNearestEven).SetPrec(prec).Set(x).Float64()
	return f
}

func encodeTensor(dtype safetensors.DType, v []float64) []byte {
	var b []byte
	for _, x := range v {
		switch dtype {
		case safetensors.F32:
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(x)))
		case safetensors.F16:
			b = binary.LittleEndian.AppendUint16(b, float16.Fromfloat32(float32(x)).Bits())
		case safetensors.BF16:
			b = binary.LittleEndian.AppendUint16(b, uint16(math.Float32bits(float32(x))>>16))
		case safetensors.I64:
			b = binary.LittleEndian.AppendUint64(b, uint64(int64(x)))
		}
	}
	return b
}

func decodeTensor(dtype safetensors.DType, b []byte) []float64 {
	var v []float64
	for len(b) > 0 {
		switch dtype {
		case safetensors.F32:
			v, b = append(v, float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))), b[4:]
		case safetensors.F16:
			v, b = append(v, float64(float16.Frombits(binary.LittleEndian.Uint16(b)).Float32())), b[2:]
		case safetensors.BF16:
			v, b = append(v, float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b))<<16))), b[2:]
		case safetensors.I64:
			v, b = append(v, float64(int64(binary.LittleEndian.Uint64(b)))), b[8:]
		}
	}
	return v
}

// safetensorsBytes encodes a model file.
func safetensorsBytes(t *testing.T, model []fedTensor, vals [][]float64) []byte {
	t.Helper()
	var tensors []safetensors.Tensor
	var data [][]byte
	for i, m := range model {
		tensors = append(tensors, safetensors.Tensor{Name: m.name, DType: m.dtype, Shape: m.shape})
		data = append(data, encodeTensor(m.dtype, vals[i]))
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, map[string]string{"format": "pt"}, tensors, data); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFiles(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fedEnv is a registry with a base model in models/m, whose updates the
// nodes push to the same repository.
type fedEnv struct {
	t    *testing.T
	reg  *registry.Registry
	repo *remote.Repository
	// out is where the nodes push their updates: repo unless a test moves it.
	out  *remote.Repository
	base ocispec.Descriptor
	rng  *rand.Rand
}

func newFedEnv(t *testing.T) *fedEnv { return newFedEnvWith(t, nil) }

// newFedEnvWith is newFedEnv with more files in the base model.
func newFedEnvWith(t *testing.T, extra map[string][]byte) *fedEnv {
	reg := registry.StartForTest(t)
	repo, err := remote.NewRepository(reg.Host() + "/models/m")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	e := &fedEnv{t: t, reg: reg, repo: repo, out: repo, rng: rand.New(rand.NewPCG(10, 20))}
	files := map[string][]byte{
		"model.safetensors":   safetensorsBytes(t, fedModel, fedValues(e.rng, fedModel)),
		"config.json":         []byte(`{"classes": 10}`),
		"train/train.py":      []byte("print('train')\n"),
		"aggregate/README.md": []byte("FedAvg\n"),
	}
	maps.Copy(files, extra)
	dir := writeFiles(t, files)
	e.base, err = artifact.Pack(context.Background(), repo, dir, artifact.PackOptions{
		Metadata: artifact.Metadata{Name: "mnist", Task: "image-classification", Framework: "safetensors"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(context.Background(), e.base, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *fedEnv) baseRef() string { return e.reg.Host() + "/models/m@" + string(e.base.Digest) }

// update is what one node sends.
type update struct {
	node    string
	round   int
	run     string
	base    ocispec.Descriptor
	samples int64
	metrics map[string]float64
	files   map[string][]byte
	desc    ocispec.Descriptor
	vals    [][]float64
}

// push packs u as the node's puller does.
func (e *fedEnv) push(u *update) {
	e.t.Helper()
	info, _ := json.Marshal(artifact.UpdateInfo{Samples: u.samples, Metrics: u.metrics})
	files := map[string][]byte{artifact.UpdateInfoFile: info, artifact.UpdateDoneFile: nil}
	for k, v := range u.files {
		files[k] = v
	}
	base := u.base
	if base.Digest == "" {
		base = e.base
	}
	var err error
	u.desc, err = artifact.PackUpdate(context.Background(), e.out, writeFiles(e.t, files), artifact.Update{Node: u.node, Round: u.round, Run: u.run, Base: base})
	if err != nil {
		e.t.Fatal(err)
	}
}

// goodUpdate is a well-formed update of fedModel with fresh values.
func (e *fedEnv) goodUpdate(node string, round int, run string, samples int64, accuracy float64) *update {
	vals := fedValues(e.rng, fedModel)
	u := &update{node: node, round: round, run: run, samples: samples, vals: vals,
		metrics: map[string]float64{"accuracy": accuracy},
		files:   map[string][]byte{"model.safetensors": safetensorsBytes(e.t, fedModel, vals)}}
	e.push(u)
	return u
}

func (e *fedEnv) aggregate(args ...string) (aggregateResult, string, error) {
	e.t.Helper()
	stdout, stderr, err := runBarge(e.t, append([]string{"aggregate", "fedavg", "--base", e.baseRef()}, args...)...)
	var res aggregateResult
	if err == nil {
		if jerr := json.Unmarshal([]byte(stdout), &res); jerr != nil {
			e.t.Fatalf("stdout is not the JSON result: %v\n%s", jerr, stdout)
		}
	}
	return res, stderr, err
}

// pullModel pulls ref with `barge pull` and opens its model.safetensors.
func (e *fedEnv) pullModel(ref string) (string, *safetensors.File) {
	e.t.Helper()
	dir := filepath.Join(e.t.TempDir(), "pulled")
	if _, stderr, err := runBarge(e.t, "pull", "--cache", e.t.TempDir(), ref, dir); err != nil {
		e.t.Fatalf("pull %s: %v\n%s", ref, err, stderr)
	}
	f, err := os.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	sf, err := safetensors.Open(f, fi.Size())
	if err != nil {
		e.t.Fatalf("the aggregated model.safetensors: %v", err)
	}
	return dir, sf
}

// TestAggregateFedAvgIsTheSampleWeightedMean: three nodes' updates of round
// 1 are averaged into tensors equal to the sample-weighted mean computed
// here exactly, rounded to each dtype; an integer tensor keeps the base's
// values; updates of another run and of round 2 on the same base are left
// out; the new model keeps the base's code and metadata and carries the
// weighted metrics.
func TestAggregateFedAvgIsTheSampleWeightedMean(t *testing.T) {
	e := newFedEnv(t)
	const run = "run-a"
	in := []*update{
		e.goodUpdate("edge-2", 1, run, 300, 0.70),
		e.goodUpdate("edge-1", 1, run, 1200, 0.80),
		e.goodUpdate("edge-3", 1, run, 4500, 0.90),
	}
	e.goodUpdate("edge-1", 1, "run-b", 999, 0.1) // another training from the same base
	e.goodUpdate("edge-4", 2, run, 999, 0.1)     // a stale or mislabelled round

	res, stderr, err := e.aggregate("--round", "1", "--run", run, "--chunk-size", "4K", "--push", e.reg.Host()+"/models/m:train-r1")
	if err != nil {
		t.Fatalf("aggregate: %v\n%s", err, stderr)
	}
	if len(res.Updates) != 3 || res.Updates[0].Node != "edge-1" || res.Updates[1].Node != "edge-2" || res.Updates[2].Node != "edge-3" {
		t.Fatalf("updates %+v, want edge-1, edge-2, edge-3 only", res.Updates)
	}
	if res.Samples != 6000 || res.Round != 1 || res.Tag != "train-r1" || res.Base != string(e.base.Digest) {
		t.Errorf("result %+v", res)
	}
	if want := (300*0.70 + 1200*0.80 + 4500*0.90) / 6000; math.Abs(res.Metrics["accuracy"]-want) > 1e-12 {
		t.Errorf("accuracy %v, want the weighted mean %v", res.Metrics["accuracy"], want)
	}
	if !strings.Contains(stderr, "Left out 2 update(s)") {
		t.Errorf("stderr does not say which updates were left out:\n%s", stderr)
	}

	ref := e.reg.Host() + "/models/m:train-r1"
	dir, got := e.pullModel(ref)
	baseVals := e.baseValues()
	for ti, m := range fedModel {
		tt, ok := got.Tensor(m.name)
		if !ok || tt.DType != m.dtype {
			t.Fatalf("tensor %s: %+v", m.name, tt)
		}
		b, _ := io.ReadAll(got.Data(tt))
		vals := decodeTensor(m.dtype, b)
		for j, v := range vals {
			want := baseVals[ti][j]
			if p, ok := fedPrecision[m.dtype]; ok {
				want = exactWeightedMean(in, ti, j, p)
			}
			if v != want {
				t.Fatalf("%s %s[%d] = %v, want %v", m.dtype, m.name, j, v, want)
			}
		}
	}
	for _, f := range []string{"config.json", "train/train.py", "aggregate/README.md"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the base's %s is not in the new model: %v", f, err)
		}
	}

	desc, err := e.repo.Resolve(context.Background(), "train-r1")
	if err != nil || string(desc.Digest) != res.Digest {
		t.Fatalf("train-r1 is %s (%v), the result says %s", desc.Digest, err, res.Digest)
	}
	a, err := artifact.Inspect(context.Background(), e.repo, desc)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "mnist" || a.Metadata["task"] != "image-classification" || a.Metadata["aggregate.round"] != "1" || a.Metadata["aggregate.base"] != string(e.base.Digest) {
		t.Errorf("metadata %v (name %q): the base's is not kept, or the provenance is missing", a.Metadata, a.Name)
	}
	roles := map[string]string{}
	for _, f := range a.Files {
		roles[f.Path] = f.Role
	}
	if roles["train/train.py"] != artifact.RoleTrain || roles["aggregate/README.md"] != artifact.RoleAggregate {
		t.Errorf("code layers lost their roles: %v", roles)
	}
	recs, err := artifact.ListMetrics(context.Background(), e.repo, desc)
	if err != nil || len(recs) != 1 || recs[0].Metrics.Metrics["accuracy"] != res.Metrics["accuracy"] {
		t.Errorf("metrics referrers %+v (%v), want one with accuracy %v", recs, err, res.Metrics["accuracy"])
	}
	if res.Promoted {
		t.Error("promoted without --promote")
	}
}

func (e *fedEnv) baseValues() [][]float64 {
	e.t.Helper()
	_, f := e.pullModel(e.baseRef())
	var out [][]float64
	for _, m := range fedModel {
		tt, _ := f.Tensor(m.name)
		b, _ := io.ReadAll(f.Data(tt))
		out = append(out, decodeTensor(m.dtype, b))
	}
	return out
}

// exactWeightedMean is Σ samples·x / Σ samples in exact arithmetic,
// rounded to prec bits.
func exactWeightedMean(in []*update, tensor, elem int, prec uint) float64 {
	sum := new(big.Float).SetPrec(256)
	var total int64
	for _, u := range in {
		x := new(big.Float).SetPrec(256).SetFloat64(u.vals[tensor][elem])
		sum.Add(sum, x.Mul(x, new(big.Float).SetInt64(u.samples)))
		total += u.samples
	}
	return roundPrec(sum.Quo(sum, new(big.Float).SetPrec(256).SetInt64(total)), prec)
}

// TestAggregateRefusesMalformedUpdates: an update that does not fit the
// base is refused with a message that names its node, its digest and what
// is wrong, and nothing is pushed.
func TestAggregateRefusesMalformedUpdates(t *testing.T) {
	e := newFedEnv(t)
	withTensor := func(i int, mod func(*fedTensor)) []fedTensor {
		m := append([]fedTensor{}, fedModel...)
		mod(&m[i])
		return m
	}
	model := func(m []fedTensor) []byte { return safetensorsBytes(t, m, fedValues(e.rng, m)) }
	good := model(fedModel)
	cases := []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"wrong shape", map[string][]byte{"model.safetensors": model(withTensor(0, func(t *fedTensor) { t.shape = []int64{10, 4} }))},
			"tensor fc.weight has shape [10 4], the base has [10 5]"},
		{"missing tensor", map[string][]byte{"model.safetensors": model(fedModel[1:])},
			"tensor fc.weight is missing"},
		{"bad dtype", map[string][]byte{"model.safetensors": model(withTensor(2, func(t *fedTensor) { t.dtype = safetensors.BF16 }))},
			"tensor emb.half has dtype BF16, the base has F16"},
		{"unknown dtype", map[string][]byte{"model.safetensors": bytes.Replace(good, []byte(`"F16"`), []byte(`"F17"`), 1)},
			`model.safetensors: invalid safetensors file: tensor "emb.half": unknown dtype "F17"`},
		{"truncated file", map[string][]byte{"model.safetensors": good[:len(good)-100]},
			"model.safetensors: invalid safetensors file: tensors need"},
		{"no weights", map[string][]byte{"other.safetensors": good},
			"it has other.safetensors, which the base does not"},
		{"missing weights", map[string][]byte{"weights.bin": good},
			"it has no model.safetensors"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ok := e.goodUpdate("edge-1", i+1, "", 100, 0.5)
			bad := &update{node: "edge-2", round: i + 1, samples: 100, files: c.files}
			e.push(bad)
			tag := fmt.Sprintf("r%d", i+1)
			_, stderr, err := e.aggregate("--round", fmt.Sprint(i+1), "--update", string(ok.desc.Digest), "--update", string(bad.desc.Digest), "--push", e.reg.Host()+"/models/m:"+tag)
			if err == nil {
				t.Fatalf("aggregate accepted it:\n%s", stderr)
			}
			name := "update " + shortDigest(string(bad.desc.Digest)) + " from node edge-2"
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\nwant it to name %q and say %q", err, name, c.want)
			}
			if _, err := e.repo.Resolve(context.Background(), tag); err == nil {
				t.Errorf("%s was pushed although an update was refused", tag)
			}
		})
	}
}

// TestAggregateNeverMixesInStaleUpdates: an --update of another round, run
// or base is refused by node and digest; without --update, a round with
// no updates of its own is an error, not an average of old ones; and a
// node with two updates in a round is refused rather than weighed twice.
func TestAggregateNeverMixesInStaleUpdates(t *testing.T) {
	e := newFedEnv(t)
	r1 := e.goodUpdate("edge-1", 1, "run-a", 100, 0.5)
	otherRun := e.goodUpdate("edge-2", 2, "run-b", 100, 0.5)
	other := e.reg.PushForTest(t, "models/m", "other", map[string]string{"model.safetensors": "x"})
	otherBase := &update{node: "edge-3", round: 2, run: "run-a", base: other, samples: 100,
		files: map[string][]byte{"model.safetensors": safetensorsBytes(t, fedModel, fedValues(e.rng, fedModel))}}
	e.push(otherBase)
	fresh := e.goodUpdate("edge-4", 2, "run-a", 100, 0.5)

	cases := []struct {
		u    *update
		want string
	}{
		{r1, "it is of round 1, not 2"},
		{otherRun, "it is of training run run-b, not run-a"},
		{otherBase, "it was trained from " + shortDigest(string(other.Digest)) + ", not from the base"},
	}
	for _, c := range cases {
		_, _, err := e.aggregate("--round", "2", "--run", "run-a", "--update", string(fresh.desc.Digest), "--update", string(c.u.desc.Digest), "--push", e.reg.Host()+"/models/m:r2")
		name := "update " + shortDigest(string(c.u.desc.Digest)) + " from node " + c.u.node
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v\nwant it to name %q and say %q", err, name, c.want)
		}
	}
	_, _, err := e.aggregate("--round", "3", "--run", "run-a", "--push", e.reg.Host()+"/models/m:r3")
	if err == nil || !strings.Contains(err.Error(), "has no updates of round 3 of run run-a") {
		t.Errorf("round 3 has no updates: err = %v", err)
	}
	res, stderr, err := e.aggregate("--round", "2", "--run", "run-a", "--push", e.reg.Host()+"/models/m:r2")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if len(res.Updates) != 1 || res.Updates[0].Digest != string(fresh.desc.Digest) {
		t.Errorf("round 2 averaged %+v, want only edge-4's update", res.Updates)
	}

	// A node that uploads a second, different update in the same round
	// must not weigh twice.
	again := e.goodUpdate("edge-4", 2, "run-a", 100, 0.6)
	_, _, err = e.aggregate("--round", "2", "--run", "run-a", "--push", e.reg.Host()+"/models/m:r2")
	if err == nil || !strings.Contains(err.Error(), "node edge-4 has two updates in round 2") || !strings.Contains(err.Error(), string(again.desc.Digest)) {
		t.Errorf("two updates from edge-4: err = %v", err)
	}
}

// TestAggregatePromotion: with --promote, the new model is tagged VERSION
// when the weighted metrics pass every --require, and is not (the command
// still succeeds, saying why) when they do not.
func TestAggregatePromotion(t *testing.T) {
	e := newFedEnv(t)
	e.goodUpdate("edge-1", 1, "", 100, 0.95)
	e.goodUpdate("edge-2", 1, "", 300, 0.85) // weighted accuracy 0.875

	res, stderr, err := e.aggregate("--round", "1", "--push", e.reg.Host()+"/models/m:r1", "--promote", "1.1.0",
		"--require", "metrics.accuracy >= 0.9")
	if err != nil {
		t.Fatalf("a failed requirement must not fail the command: %v\n%s", err, stderr)
	}
	if res.Promoted || !strings.Contains(res.Reason, "fails metrics.accuracy >= 0.9") {
		t.Errorf("promoted=%v reason %q, want not promoted because accuracy 0.875 < 0.9", res.Promoted, res.Reason)
	}
	if _, err := e.repo.Resolve(context.Background(), "1.1.0"); err == nil {
		t.Error("1.1.0 was tagged although the requirement failed")
	}

	res, stderr, err = e.aggregate("--round", "1", "--push", e.reg.Host()+"/models/m:r1", "--promote", "1.1.0",
		"--require", "metrics.accuracy >= 0.85", "--require", "metadata.task == 'image-classification'")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !res.Promoted || res.Version != "1.1.0" {
		t.Errorf("promoted=%v version %q reason %q, want promoted to 1.1.0", res.Promoted, res.Version, res.Reason)
	}
	desc, err := e.repo.Resolve(context.Background(), "1.1.0")
	if err != nil || string(desc.Digest) != res.Digest {
		t.Errorf("1.1.0 is %s (%v), want the aggregated %s", desc.Digest, err, res.Digest)
	}

	if _, _, err := e.aggregate("--round", "1", "--push", e.reg.Host()+"/models/m:r1", "--promote", "1.1.0", "--require", "metrics.accuracy >"); err == nil {
		t.Error("a --require that does not compile was accepted")
	}
}

// TestAggregateOutputInAnotherRepository: as in a TrainingModel's first
// round, the base is in the artifact's repository while the nodes upload
// their updates to the output repository, where the new model goes.
func TestAggregateOutputInAnotherRepository(t *testing.T) {
	e := newFedEnv(t)
	out, err := remote.NewRepository(e.reg.Host() + "/models/out")
	if err != nil {
		t.Fatal(err)
	}
	out.PlainHTTP, out.SkipReferrersGC = true, true
	e.out = out
	u1 := e.goodUpdate("edge-1", 1, "run-a", 100, 0.5)
	u2 := e.goodUpdate("edge-2", 1, "run-a", 300, 0.7)

	for _, args := range [][]string{
		{"--round", "1", "--run", "run-a", "--push", e.reg.Host() + "/models/out:r1"},
		{"--round", "1", "--run", "run-a", "--update", string(u1.desc.Digest), "--update", e.reg.Host() + "/models/out@" + string(u2.desc.Digest), "--push", e.reg.Host() + "/models/out:r1b"},
	} {
		res, stderr, err := e.aggregate(args...)
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if len(res.Updates) != 2 || res.Samples != 400 {
			t.Errorf("averaged %+v, want both updates", res.Updates)
		}
		if _, err := out.Resolve(context.Background(), res.Tag); err != nil {
			t.Errorf("%s is not in models/out: %v", res.Tag, err)
		}
	}
}
