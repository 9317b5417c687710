package safetensors

import (
	"encoding/binary"
	"math"
)

// AppendF32 appends v as little-endian F32 tensor data, the format's byte
// order.
func AppendF32(b []byte, v ...float32) []byte {
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// F32s decodes little-endian F32 tensor data; a trailing partial element
// is ignored.
func F32s(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}
