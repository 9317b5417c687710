package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"github.com/bargeml/barge/safetensors"
)

// modelFile is the model's one weight file: FedAvg averages it tensor by
// tensor, so its names, shapes and dtypes never change.
const modelFile = "model.safetensors"

// Model is a softmax classifier: class scores are Weight·x + Bias.
type Model struct {
	Features, Classes int
	Weight            []float64 // Classes rows of Features, row-major
	Bias              []float64 // one per class
}

// NewModel is the zero model, where FedAvg starts: every class equally likely.
func NewModel(features, classes int) *Model {
	return &Model{Features: features, Classes: classes,
		Weight: make([]float64, features*classes), Bias: make([]float64, classes)}
}

// probabilities writes the softmax of x's class scores into p.
func (m *Model) probabilities(x, p []float64) {
	top := math.Inf(-1)
	for c := range m.Classes {
		z := m.Bias[c]
		for f, v := range x {
			z += m.Weight[c*m.Features+f] * v
		}
		p[c] = z
		top = max(top, z)
	}
	var sum float64
	for c := range p {
		p[c] = math.Exp(p[c] - top) // shifted, so exp never overflows
		sum += p[c]
	}
	for c := range p {
		p[c] /= sum
	}
}

// Evaluate returns the share of d classified right and the mean
// cross-entropy loss.
func (m *Model) Evaluate(d Dataset) (accuracy, loss float64) {
	if d.Len() == 0 {
		return 0, 0
	}
	p := make([]float64, m.Classes)
	right := 0
	for i, x := range d.X {
		m.probabilities(x, p)
		if argmax(p) == d.Y[i] {
			right++
		}
		loss -= math.Log(max(p[d.Y[i]], 1e-12))
	}
	n := float64(d.Len())
	return float64(right) / n, loss / n
}

func argmax(p []float64) int {
	best := 0
	for i, v := range p {
		if v > p[best] {
			best = i
		}
	}
	return best
}

// SGD trains on d: cfg.Epochs passes, each in a new random order, one step
// per mini-batch down the gradient of the mean cross-entropy.
func (m *Model) SGD(d Dataset, cfg Config, rng *rand.Rand) {
	order := make([]int, d.Len())
	for i := range order {
		order[i] = i
	}
	p := make([]float64, m.Classes)
	gw, gb := make([]float64, len(m.Weight)), make([]float64, len(m.Bias))
	for range cfg.Epochs {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for batch := range slices.Chunk(order, cfg.BatchSize) {
			clear(gw)
			clear(gb)
			for _, i := range batch {
				x := d.X[i]
				m.probabilities(x, p)
				p[d.Y[i]]-- // d(loss)/d(score) = p - onehot(y)
				for c, e := range p {
					gb[c] += e
					for f, v := range x {
						gw[c*m.Features+f] += e * v
					}
				}
			}
			step := cfg.LearningRate / float64(len(batch))
			for k := range m.Weight {
				m.Weight[k] -= step * gw[k]
			}
			for c := range m.Bias {
				m.Bias[c] -= step * gb[c]
			}
		}
	}
}

// LoadModel reads a model.safetensors: "weight" [C,F] and "bias" [C], F32.
func LoadModel(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st, err := safetensors.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w, err := tensor(st, "weight", 2)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	bias, err := tensor(st, "bias", 1)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	wt, _ := st.Tensor("weight")
	classes, features := int(wt.Shape[0]), int(wt.Shape[1])
	if len(bias) != classes {
		return nil, fmt.Errorf("%s: bias has %d classes, weight %d", path, len(bias), classes)
	}
	return &Model{Features: features, Classes: classes, Weight: w, Bias: bias}, nil
}

// tensor reads the F32 tensor name of rank dims as float64s.
func tensor(st *safetensors.File, name string, dims int) ([]float64, error) {
	t, ok := st.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("no tensor %q", name)
	}
	if t.DType != safetensors.F32 || len(t.Shape) != dims {
		return nil, fmt.Errorf("tensor %q is %s %v; want F32 of rank %d", name, t.DType, t.Shape, dims)
	}
	b, err := io.ReadAll(st.Data(t))
	if err != nil {
		return nil, err
	}
	out := make([]float64, 0, t.Elements())
	for _, v := range safetensors.F32s(b) {
		out = append(out, float64(v))
	}
	return out, nil
}

// Save writes the model as path, whole or not at all: a half-written file
// must never meet the DONE marker.
func (m *Model) Save(path string) error {
	tensors := []safetensors.Tensor{
		{Name: "weight", DType: safetensors.F32, Shape: []int64{int64(m.Classes), int64(m.Features)}},
		{Name: "bias", DType: safetensors.F32, Shape: []int64{int64(m.Classes)}},
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, nil, tensors, [][]byte{f32(m.Weight), f32(m.Bias)}); err != nil {
		return err
	}
	return writeFile(path, buf.Bytes())
}

func f32(v []float64) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = safetensors.AppendF32(b, float32(x))
	}
	return b
}

// writeFile writes b to path through a temporary file and a rename.
func writeFile(path string, b []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
