package fedavg

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/bargeml/barge/safetensors"
)

// BenchmarkAverage averages 3 updates of a 64 MiB F32 tensor in memory;
// bytes/s are of updates read.
func BenchmarkAverage(b *testing.B) {
	const elems = 16 << 20
	spec := []safetensors.Tensor{{Name: "w", DType: safetensors.F32, Shape: []int64{elems}}}
	file := func(v float32) *safetensors.File {
		data := make([]byte, 0, 4*elems)
		for i := 0; i < elems; i++ {
			data = safetensors.AppendF32(data, v+float32(i%13))
		}
		var buf bytes.Buffer
		if err := safetensors.Encode(&buf, nil, spec, [][]byte{data}); err != nil {
			b.Fatal(err)
		}
		f, err := safetensors.Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			b.Fatal(err)
		}
		return f
	}
	base := file(0)
	updates := []Update{{Node: "a", Samples: 1, File: file(1)}, {Node: "b", Samples: 2, File: file(2)}, {Node: "c", Samples: 3, File: file(3)}}
	b.SetBytes(3 * 4 * elems)
	b.ResetTimer()
	for range b.N {
		if err := Average(context.Background(), io.Discard, base, updates, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
