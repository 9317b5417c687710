package fedavg

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/bargeml/barge/safetensors"
)

// precision is each averaged dtype's significand bits, for rounding
// independently of the package with math/big.
var precision = map[safetensors.DType]uint{
	safetensors.F64: 53, safetensors.F32: 24, safetensors.F16: 11, safetensors.BF16: 8,
}

// roundTo rounds x to the dtype's precision, ties to even (values stay in
// the normal range in these tests).
func roundTo(d safetensors.DType, x *big.Float) float64 {
	f, _ := new(big.Float).SetMode(big.ToNearestEven).SetPrec(precision[d]).Set(x).Float64()
	return f
}

// encodeElems writes values already representable in d.
func encodeElems(t testing.TB, d safetensors.DType, v []float64) []byte {
	t.Helper()
	var b []byte
	for _, x := range v {
		switch d {
		case safetensors.F64:
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
		case safetensors.F32:
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(x)))
		case safetensors.BF16:
			b = binary.LittleEndian.AppendUint16(b, uint16(math.Float32bits(float32(x))>>16))
		case safetensors.F16:
			b = binary.LittleEndian.AppendUint16(b, half(x))
		default:
			t.Fatalf("no encoder for %s", d)
		}
	}
	return b
}

// half encodes a normal float16 value exactly, by hand.
func half(x float64) uint16 {
	if x == 0 {
		return 0
	}
	var sign uint16
	if x < 0 {
		sign, x = 0x8000, -x
	}
	frac, exp := math.Frexp(x) // x = frac * 2^exp, frac in [0.5, 1)
	mant := uint16(math.Round((frac*2 - 1) * 1024))
	return sign | uint16(exp-1+15)<<10 | mant
}

func decodeElems(d safetensors.DType, b []byte) []float64 {
	var v []float64
	for len(b) > 0 {
		switch d {
		case safetensors.F64:
			v, b = append(v, math.Float64frombits(binary.LittleEndian.Uint64(b))), b[8:]
		case safetensors.F32:
			v, b = append(v, float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))), b[4:]
		case safetensors.BF16:
			v, b = append(v, float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b))<<16))), b[2:]
		case safetensors.F16:
			h := binary.LittleEndian.Uint16(b)
			m := float64(h&0x3ff)/1024 + 1
			x := math.Ldexp(m, int(h>>10&0x1f)-15)
			if h&0x3ff == 0 && h>>10&0x1f == 0 {
				x = 0
			}
			if h&0x8000 != 0 {
				x = -x
			}
			v, b = append(v, x), b[2:]
		}
	}
	return v
}

type tensorSpec struct {
	name  string
	dtype safetensors.DType
	shape []int64
}

func openBytes(t testing.TB, b []byte) *safetensors.File {
	t.Helper()
	f, err := safetensors.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// model builds a file whose float tensors hold random values representable
// in their dtype, and returns them.
func model(t testing.TB, rng *rand.Rand, specs []tensorSpec) ([]byte, [][]float64) {
	t.Helper()
	var tensors []safetensors.Tensor
	var data [][]byte
	var values [][]float64
	for _, s := range specs {
		tt := safetensors.Tensor{Name: s.name, DType: s.dtype, Shape: s.shape}
		tensors = append(tensors, tt)
		n := tt.Elements()
		if _, ok := precision[s.dtype]; !ok {
			b := make([]byte, n*s.dtype.Bits()/8)
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			data, values = append(data, b), append(values, nil)
			continue
		}
		v := make([]float64, n)
		for i := range v {
			v[i] = roundTo(s.dtype, big.NewFloat((rng.Float64()*2-1)*4))
			if v[i] == 0 || math.Abs(v[i]) < 1e-3 {
				v[i] = 0.5
			}
		}
		data, values = append(data, encodeElems(t, s.dtype, v)), append(values, v)
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, map[string]string{"format": "pt"}, tensors, data); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), values
}

var specs = []tensorSpec{
	{"fc.weight", safetensors.F32, []int64{10, 5}},
	{"fc.bias", safetensors.F32, []int64{10}},
	{"half.weight", safetensors.F16, []int64{7, 3}},
	{"brain.weight", safetensors.BF16, []int64{33}},
	{"double", safetensors.F64, []int64{}},
	{"steps", safetensors.I64, []int64{2}},
	{"mask", safetensors.BOOL, []int64{5}},
}

// TestAverageIsTheSampleWeightedMean checks every averaged dtype against the
// exact weighted mean (math/big), correctly rounded to the dtype, for chunk
// sizes from one element to whole tensors.
func TestAverageIsTheSampleWeightedMean(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	baseBytes, baseVals := model(t, rng, specs)
	base := openBytes(t, baseBytes)
	samples := []int64{1200, 300, 4500}
	var updates []Update
	var values [][][]float64
	for i, n := range samples {
		b, v := model(t, rng, specs)
		updates = append(updates, Update{Node: "edge-" + string(rune('1'+i)), Samples: n, File: openBytes(t, b)})
		values = append(values, v)
	}
	for _, chunk := range []int{0, 1, 6, 64, 1 << 20} {
		var out bytes.Buffer
		if err := Average(context.Background(), &out, base, updates, Options{ChunkBytes: chunk}); err != nil {
			t.Fatalf("chunk %d: %v", chunk, err)
		}
		got := openBytes(t, out.Bytes())
		if got.Metadata["format"] != "pt" {
			t.Errorf("metadata %v: the base's is lost", got.Metadata)
		}
		for ti, s := range specs {
			gt, ok := got.Tensor(s.name)
			if !ok || gt.DType != s.dtype || !equalShape(gt.Shape, s.shape) {
				t.Fatalf("chunk %d: tensor %s is %v, want %s %v", chunk, s.name, gt, s.dtype, s.shape)
			}
			b, _ := io.ReadAll(got.Data(gt))
			if baseVals[ti] == nil {
				bt, _ := base.Tensor(s.name)
				want, _ := io.ReadAll(base.Data(bt))
				if !bytes.Equal(b, want) {
					t.Errorf("chunk %d: %s %s not taken from the base", chunk, s.dtype, s.name)
				}
				continue
			}
			gotVals := decodeElems(s.dtype, b)
			for e := range gotVals {
				want := exactMean(s.dtype, samples, values, ti, e)
				if gotVals[e] != want {
					t.Fatalf("chunk %d: %s[%d] = %v, the weighted mean is %v", chunk, s.name, e, gotVals[e], want)
				}
			}
		}
	}
}

func exactMean(d safetensors.DType, samples []int64, values [][][]float64, tensor, elem int) float64 {
	sum := new(big.Float).SetPrec(256)
	var total int64
	for u, n := range samples {
		x := new(big.Float).SetPrec(256).SetFloat64(values[u][tensor][elem])
		sum.Add(sum, x.Mul(x, new(big.Float).SetInt64(n)))
		total += n
	}
	return roundTo(d, sum.Quo(sum, new(big.Float).SetPrec(256).SetInt64(total)))
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAverageRefusesMismatchedUpdates(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	base := []tensorSpec{{"fc.weight", safetensors.F32, []int64{10, 5}}, {"fc.bias", safetensors.F32, []int64{10}}}
	baseBytes, _ := model(t, rng, base)
	cases := []struct {
		name   string
		update []tensorSpec
		want   string
	}{
		{"shape", []tensorSpec{{"fc.weight", safetensors.F32, []int64{10, 4}}, base[1]},
			"update from node edge-2: tensor fc.weight has shape [10 4], the base has [10 5]"},
		{"missing", []tensorSpec{base[0]},
			"update from node edge-2: tensor fc.bias is missing"},
		{"dtype", []tensorSpec{base[0], {"fc.bias", safetensors.F16, []int64{10}}},
			"update from node edge-2: tensor fc.bias has dtype F16, the base has F32"},
		{"extra", []tensorSpec{base[0], base[1], {"fc.extra", safetensors.F32, []int64{1}}},
			"update from node edge-2: tensor fc.extra is not in the base model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			good, _ := model(t, rng, base)
			bad, _ := model(t, rng, c.update)
			updates := []Update{
				{Node: "edge-1", Samples: 10, File: openBytes(t, good)},
				{Node: "edge-2", Samples: 10, File: openBytes(t, bad)},
			}
			var out bytes.Buffer
			err := Average(context.Background(), &out, openBytes(t, baseBytes), updates, Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			if out.Len() != 0 {
				t.Errorf("wrote %d bytes before refusing", out.Len())
			}
		})
	}
}

func TestAverageRefusesNonFiniteValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	spec := []tensorSpec{{"fc.weight", safetensors.F32, []int64{4}}}
	baseBytes, _ := model(t, rng, spec)
	good, _ := model(t, rng, spec)
	var bad bytes.Buffer
	if err := safetensors.Encode(&bad, nil, []safetensors.Tensor{{Name: "fc.weight", DType: safetensors.F32, Shape: []int64{4}}},
		[][]byte{safetensors.AppendF32(nil, 1, 2, float32(math.NaN()), 4)}); err != nil {
		t.Fatal(err)
	}
	updates := []Update{
		{Node: "edge-1", Samples: 10, File: openBytes(t, good)},
		{Node: "edge-3", Samples: 10, File: openBytes(t, bad.Bytes())},
	}
	err := Average(context.Background(), io.Discard, openBytes(t, baseBytes), updates, Options{})
	if err == nil || !strings.Contains(err.Error(), "update from node edge-3: tensor fc.weight has NaN at element 2") {
		t.Fatalf("error %v, want the NaN refused by node and tensor", err)
	}
}

func TestAverageRefusesZeroSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	spec := []tensorSpec{{"w", safetensors.F32, []int64{4}}}
	b, _ := model(t, rng, spec)
	err := Average(context.Background(), io.Discard, openBytes(t, b), []Update{{Node: "edge-1", Samples: 0, File: openBytes(t, b)}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "node edge-1") {
		t.Fatalf("error %v, want the update refused by node", err)
	}
}

// TestAverageMemoryIsBoundedByChunks averages a 32 MiB tensor from three
// updates with 256 KiB chunks: what Average allocates stays a few chunks,
// far below one tensor.
func TestAverageMemoryIsBoundedByChunks(t *testing.T) {
	const elems = 8 << 20 // 32 MiB of F32
	spec := []safetensors.Tensor{{Name: "big", DType: safetensors.F32, Shape: []int64{elems}}}
	file := func(v float32) *safetensors.File {
		b := make([]byte, 0, 4*elems)
		for i := 0; i < elems; i++ {
			b = safetensors.AppendF32(b, v+float32(i%7))
		}
		var buf bytes.Buffer
		if err := safetensors.Encode(&buf, nil, spec, [][]byte{b}); err != nil {
			t.Fatal(err)
		}
		return openBytes(t, buf.Bytes())
	}
	base := file(0)
	updates := []Update{{"edge-1", 1, file(1)}, {"edge-2", 1, file(2)}, {"edge-3", 2, file(4)}}
	// (1 + 2 + 2*4) / 4 = 2.75, plus the i%7 every file shares.
	check := &meanChecker{t: t, want: func(i int64) float32 { return 2.75 + float32(i%7) }}

	const chunk = 256 << 10
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := Average(context.Background(), check, base, updates, Options{ChunkBytes: chunk}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*chunk {
		t.Errorf("Average allocated %d KiB for a %d MiB tensor; want at most %d KiB (8 chunks)", alloc>>10, 4*elems>>20, 8*chunk>>10)
	}
	if check.elems != elems {
		t.Errorf("checked %d elements, want %d", check.elems, elems)
	}
}

// meanChecker checks the averaged file as it streams past, without keeping
// it or allocating.
type meanChecker struct {
	t         *testing.T
	want      func(int64) float32
	pos       int64
	lenBuf    [8]byte
	dataStart int64
	elems     int64
}

func (c *meanChecker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		switch {
		case c.pos < 8:
			k := copy(c.lenBuf[c.pos:], p)
			c.pos, p = c.pos+int64(k), p[k:]
			c.dataStart = 8 + int64(binary.LittleEndian.Uint64(c.lenBuf[:]))
		case c.pos < c.dataStart:
			k := min(c.dataStart-c.pos, int64(len(p)))
			c.pos, p = c.pos+k, p[k:]
		default:
			if len(p)%4 != 0 {
				c.t.Fatalf("a write of %d bytes splits an element", len(p))
			}
			for ; len(p) > 0; p = p[4:] {
				got := math.Float32frombits(binary.LittleEndian.Uint32(p))
				if want := c.want(c.elems); got != want {
					c.t.Fatalf("element %d = %v, want %v", c.elems, got, want)
				}
				c.elems++
				c.pos += 4
			}
		}
	}
	return n, nil
}

func TestMetricsAreSampleWeighted(t *testing.T) {
	got := Metrics([]Report{
		{Samples: 100, Metrics: map[string]float64{"accuracy": 0.9, "loss": 0.2}},
		{Samples: 300, Metrics: map[string]float64{"accuracy": 0.5}},
		{Samples: 600, Metrics: map[string]float64{"accuracy": 0.8, "loss": 0.4}},
	})
	want := map[string]float64{
		"accuracy": (100*0.9 + 300*0.5 + 600*0.8) / 1000,
		"loss":     (100*0.2 + 600*0.4) / 700, // over those that report it
	}
	for k, w := range want {
		if math.Abs(got[k]-w) > 1e-12 {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("metrics %v, want %v", got, want)
	}
	if Metrics(nil) != nil {
		t.Error("no reports should give no metrics")
	}
}
