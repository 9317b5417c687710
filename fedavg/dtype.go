package fedavg

import (
	"encoding/binary"
	"math"

	"github.com/x448/float16"

	"github.com/bargeml/barge/safetensors"
)

// codec reads one dtype's little-endian elements into float64 and writes
// them back, a slice at a time so that the inner loops stay tight.
type codec struct {
	size int
	// load sets dst[i] to element i of src.
	load func(dst []float64, src []byte)
	// store writes v[i] as element i of dst.
	store func(dst []byte, v []float64)
}

// codecs are the dtypes FedAvg averages. Accumulating in float64 and
// rounding once keeps the mean as exact as the dtype allows; float64 to
// float32 to a 16-bit float is still correctly rounded, since float32 has
// more than twice their precision plus two bits.
var codecs = map[safetensors.DType]codec{
	safetensors.F64: {8,
		func(dst []float64, src []byte) {
			for i := range dst {
				dst[i] = math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:]))
			}
		},
		func(dst []byte, v []float64) {
			for i, x := range v {
				binary.LittleEndian.PutUint64(dst[8*i:], math.Float64bits(x))
			}
		}},
	safetensors.F32: {4,
		func(dst []float64, src []byte) {
			for i := range dst {
				dst[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
			}
		},
		func(dst []byte, v []float64) {
			for i, x := range v {
				binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(float32(x)))
			}
		}},
	safetensors.F16: {2,
		func(dst []float64, src []byte) {
			for i := range dst {
				dst[i] = float64(float16.Frombits(binary.LittleEndian.Uint16(src[2*i:])).Float32())
			}
		},
		func(dst []byte, v []float64) {
			for i, x := range v {
				binary.LittleEndian.PutUint16(dst[2*i:], float16.Fromfloat32(float32(x)).Bits())
			}
		}},
	safetensors.BF16: {2,
		func(dst []float64, src []byte) {
			for i := range dst {
				dst[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16))
			}
		},
		func(dst []byte, v []float64) {
			for i, x := range v {
				binary.LittleEndian.PutUint16(dst[2*i:], bfloat16(float32(x)))
			}
		}},
}

// Averaged reports whether FedAvg averages tensors of dtype d; tensors of
// other dtypes are taken from the base unchanged.
func Averaged(d safetensors.DType) bool {
	_, ok := codecs[d]
	return ok
}

// bfloat16 rounds f to the nearest bfloat16, ties to even.
func bfloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40 // stay a (quiet) NaN
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
