package fedavg

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/bargeml/barge/safetensors"
)

// Update is one node's safetensors file of a round.
type Update struct {
	// Node and ID (such as the update's digest, optional) name the
	// update in errors.
	Node, ID string
	// Samples the node trained on: the update's weight.
	Samples int64
	File    *safetensors.File
}

// name is how errors start: "update from node edge-2" or, with an ID,
// "update sha256:ab12… from node edge-2".
func (u Update) name() string {
	if u.ID != "" {
		return "update " + u.ID + " from node " + u.Node
	}
	return "update from node " + u.Node
}

// Options tune Average. The zero value works.
type Options struct {
	// ChunkBytes is how much of a tensor is read from each update at a
	// time; memory is a few times this. If <= 0, 1 MiB is used.
	ChunkBytes int
}

const defaultChunkBytes = 1 << 20

// Check refuses an update whose tensors differ from the base's in name,
// shape or dtype, naming the node and the tensor.
func Check(base *safetensors.File, u Update) error {
	if u.Samples <= 0 {
		return fmt.Errorf("%s: %d samples: an update must have trained on at least 1", u.name(), u.Samples)
	}
	for _, bt := range base.Tensors {
		ut, ok := u.File.Tensor(bt.Name)
		switch {
		case !ok:
			return fmt.Errorf("%s: tensor %s is missing, the base has it (%s %v)", u.name(), bt.Name, bt.DType, bt.Shape)
		case ut.DType != bt.DType:
			return fmt.Errorf("%s: tensor %s has dtype %s, the base has %s", u.name(), bt.Name, ut.DType, bt.DType)
		case !slices.Equal(ut.Shape, bt.Shape):
			return fmt.Errorf("%s: tensor %s has shape %v, the base has %v", u.name(), bt.Name, ut.Shape, bt.Shape)
		}
	}
	if len(u.File.Tensors) != len(base.Tensors) {
		for _, ut := range u.File.Tensors {
			if _, ok := base.Tensor(ut.Name); !ok {
				return fmt.Errorf("%s: tensor %s is not in the base model", u.name(), ut.Name)
			}
		}
	}
	return nil
}

// Average writes to w a safetensors file with the base's tensors, layout
// and metadata, each floating-point tensor (F64, F32, F16, BF16) replaced
// by the mean of the updates' weighted by their samples. Tensors of other
// dtypes (integers, booleans, 8-bit floats) are copied from the base: a
// step counter or a mask is not something to average. An update that does
// not match the base, or holds a NaN or an infinity, is refused by node and
// tensor.
func Average(ctx context.Context, w io.Writer, base *safetensors.File, updates []Update, opts Options) error {
	if len(updates) == 0 {
		return fmt.Errorf("fedavg: no updates to average")
	}
	var total int64
	for _, u := range updates {
		if err := Check(base, u); err != nil {
			return err
		}
		if total+u.Samples < total {
			return fmt.Errorf("fedavg: the sample counts overflow")
		}
		total += u.Samples
	}
	chunk := opts.ChunkBytes
	if chunk <= 0 {
		chunk = defaultChunkBytes
	}
	sw, err := safetensors.NewWriter(w, base.Metadata, base.Tensors)
	if err != nil {
		return err
	}
	a := newAverager(updates, total, chunk)
	for _, t := range sw.Tensors() {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, ok := codecs[t.DType]
		if !ok {
			if _, err := io.Copy(sw, base.Data(t)); err != nil {
				return fmt.Errorf("copy tensor %s from the base: %w", t.Name, err)
			}
			continue
		}
		if err := a.tensor(ctx, sw, t, c); err != nil {
			return err
		}
	}
	return sw.Close()
}

// averager holds the buffers one chunk needs; they are reused for every
// chunk of every tensor.
type averager struct {
	updates []Update
	// weights are the sample counts and total their sum: Σ n·x is exact
	// for float32 values and counts below 2^29 (when the values' exponents
	// are close), so the one division that follows rounds the exact mean.
	weights []float64
	total   float64
	chunk   int
	raw     []byte
	acc     []float64
}

func newAverager(updates []Update, total int64, chunk int) *averager {
	a := &averager{updates: updates, chunk: chunk, raw: make([]byte, chunk), total: float64(total)}
	for _, u := range updates {
		a.weights = append(a.weights, float64(u.Samples))
	}
	return a
}

// tensor streams one tensor's weighted mean to w, chunk by chunk.
func (a *averager) tensor(ctx context.Context, w io.Writer, t safetensors.Tensor, c codec) error {
	per := a.chunk / c.size
	if per == 0 {
		per = 1
	}
	if cap(a.acc) < per {
		a.acc = make([]float64, per)
	}
	if len(a.raw) < per*c.size {
		a.raw = make([]byte, per*c.size)
	}
	n := t.Elements()
	for first := int64(0); first < n; first += int64(per) {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := int(min(int64(per), n-first))
		acc, raw := a.acc[:k], a.raw[:k*c.size]
		clear(acc)
		for i, u := range a.updates {
			ut, _ := u.File.Tensor(t.Name)
			// A ReaderAt may return io.EOF along with the last bytes.
			if n, err := u.File.Data(ut).ReadAt(raw, first*int64(c.size)); n < len(raw) {
				return fmt.Errorf("%s: tensor %s: read: %w", u.name(), t.Name, err)
			}
			if j := c.add(acc, raw, a.weights[i]); j >= 0 {
				v := c.value(raw[j*c.size:])
				return fmt.Errorf("%s: tensor %s has %v at element %d: a diverged update must not poison the model", u.name(), t.Name, v, first+int64(j))
			}
		}
		for j := range acc {
			acc[j] /= a.total
		}
		c.store(raw, acc)
		if _, err := w.Write(raw); err != nil {
			return fmt.Errorf("write tensor %s: %w", t.Name, err)
		}
	}
	return nil
}
