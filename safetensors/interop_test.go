package safetensors_test

import (
	"bytes"
	"io"
	"reflect"
	"testing"

	upstream "github.com/nlpodyssey/safetensors"

	"github.com/bargeml/barge/safetensors"
)

// interopTensors covers every dtype both implementations know, with scalar,
// empty and multi-dimensional shapes.
var interopTensors = []struct {
	name  string
	dtype safetensors.DType
	shape []int64
}{
	{"layer.0.weight", safetensors.F32, []int64{3, 4}},
	{"layer.0.bias", safetensors.F32, []int64{4}},
	{"half", safetensors.F16, []int64{2, 2}},
	{"brain", safetensors.BF16, []int64{5}},
	{"double", safetensors.F64, []int64{}},
	{"i64", safetensors.I64, []int64{2}},
	{"i32", safetensors.I32, []int64{1, 3}},
	{"i16", safetensors.I16, []int64{3}},
	{"i8", safetensors.I8, []int64{7}},
	{"u8", safetensors.U8, []int64{0}},
	{"mask", safetensors.BOOL, []int64{2, 1}},
	{"u16", safetensors.U16, []int64{2}},
	{"u32", safetensors.U32, []int64{2}},
	{"u64", safetensors.U64, []int64{1}},
}

func interopData(i int, n int64) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*31 + j*7 + 1)
	}
	return b
}

func elementsOf(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

func TestUpstreamReadsOurFiles(t *testing.T) {
	var tensors []safetensors.Tensor
	var data [][]byte
	for i, it := range interopTensors {
		tensors = append(tensors, safetensors.Tensor{Name: it.name, DType: it.dtype, Shape: it.shape})
		data = append(data, interopData(i, elementsOf(it.shape)*it.dtype.Bits()/8))
	}
	meta := map[string]string{"format": "pt"}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, meta, tensors, data); err != nil {
		t.Fatal(err)
	}
	st, err := upstream.Deserialize(buf.Bytes())
	if err != nil {
		t.Fatalf("nlpodyssey/safetensors refuses our file: %v", err)
	}
	if st.Len() != len(interopTensors) {
		t.Errorf("upstream sees %d tensors, want %d", st.Len(), len(interopTensors))
	}
	for i, it := range interopTensors {
		v, ok := st.Tensor(it.name)
		if !ok {
			t.Fatalf("upstream does not see tensor %s", it.name)
		}
		if v.DType().String() != string(it.dtype) || !reflect.DeepEqual(toInt64(v.Shape()), it.shape) {
			t.Errorf("upstream reads %s as %s %v, want %s %v", it.name, v.DType(), v.Shape(), it.dtype, it.shape)
		}
		if !bytes.Equal(v.Data(), data[i]) {
			t.Errorf("upstream reads %s's data as %v, want %v", it.name, v.Data(), data[i])
		}
	}
	_, md, err := upstream.ReadMetadata(buf.Bytes())
	if err != nil || !reflect.DeepEqual(md.Metadata(), meta) {
		t.Errorf("upstream reads metadata %v (%v), want %v", md.Metadata(), err, meta)
	}
}

func TestWeReadUpstreamFiles(t *testing.T) {
	views := map[string]upstream.TensorView{}
	want := map[string][]byte{}
	var written []int
	for i, it := range interopTensors {
		if len(it.shape) == 0 {
			// upstream's NewTensorView counts a scalar as 0 elements.
			continue
		}
		written = append(written, i)
		dt, err := upstream.ParseDType(string(it.dtype))
		if err != nil {
			t.Fatal(err)
		}
		d := interopData(i, elementsOf(it.shape)*it.dtype.Bits()/8)
		v, err := upstream.NewTensorView(dt, toUint64(it.shape), d)
		if err != nil {
			t.Fatal(err)
		}
		views[it.name] = v
		want[it.name] = d
	}
	meta := map[string]string{"framework": "upstream"}
	b, err := upstream.Serialize(views, meta)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Open refuses nlpodyssey/safetensors' file: %v", err)
	}
	if !reflect.DeepEqual(f.Metadata, meta) {
		t.Errorf("metadata %v, want %v", f.Metadata, meta)
	}
	if len(f.Tensors) != len(written) {
		t.Errorf("%d tensors, want %d", len(f.Tensors), len(written))
	}
	for _, i := range written {
		it := interopTensors[i]
		got, ok := f.Tensor(it.name)
		if !ok {
			t.Fatalf("tensor %s missing", it.name)
		}
		if got.DType != it.dtype || !reflect.DeepEqual(got.Shape, it.shape) {
			t.Errorf("%s: %s %v, want %s %v", it.name, got.DType, got.Shape, it.dtype, it.shape)
		}
		d, err := io.ReadAll(f.Data(got))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d, want[it.name]) {
			t.Errorf("%s data %v, want %v", it.name, d, want[it.name])
		}
	}
}

func toUint64(s []int64) []uint64 {
	out := make([]uint64, len(s))
	for i, d := range s {
		out[i] = uint64(d)
	}
	return out
}

func toInt64(s []uint64) []int64 {
	out := make([]int64, len(s))
	for i, d := range s {
		out[i] = int64(d)
	}
	return out
}
