package safetensors_test

import (
	"bytes"
	"fmt"
	"io"

	"github.com/bargeml/barge/safetensors"
)

// A trainer writes its weights; a reader opens the file without loading
// the tensors and reads one of them.
func Example() {
	var buf bytes.Buffer
	tensors := []safetensors.Tensor{
		{Name: "fc.weight", DType: safetensors.F32, Shape: []int64{2, 2}},
		{Name: "fc.bias", DType: safetensors.F32, Shape: []int64{2}},
	}
	data := [][]byte{
		safetensors.AppendF32(nil, 0.5, -1, 2, 0),
		safetensors.AppendF32(nil, 0.1, 0.2),
	}
	if err := safetensors.Encode(&buf, map[string]string{"format": "pt"}, tensors, data); err != nil {
		panic(err)
	}

	f, err := safetensors.Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		panic(err)
	}
	for _, t := range f.Tensors {
		fmt.Println(t.Name, t.DType, t.Shape, t.Size(), "bytes")
	}
	bias, _ := f.Tensor("fc.bias")
	b, _ := io.ReadAll(f.Data(bias))
	fmt.Println(safetensors.F32s(b))
	// Output:
	// fc.weight F32 [2 2] 16 bytes
	// fc.bias F32 [2] 8 bytes
	// [0.1 0.2]
}
