package safetensors

// DType is a tensor's element type as the header spells it ("F32").
type DType string

// The element types of the format. F4 and F6 types pack elements below a
// byte; a tensor of them must fill whole bytes.
const (
	BOOL   DType = "BOOL"
	U8     DType = "U8"
	I8     DType = "I8"
	F8E5M2 DType = "F8_E5M2"
	F8E4M3 DType = "F8_E4M3"
	F8E8M0 DType = "F8_E8M0"
	I16    DType = "I16"
	U16    DType = "U16"
	F16    DType = "F16"
	BF16   DType = "BF16"
	I32    DType = "I32"
	U32    DType = "U32"
	F32    DType = "F32"
	F64    DType = "F64"
	I64    DType = "I64"
	U64    DType = "U64"
	C64    DType = "C64"
	F4     DType = "F4"
	F6E2M3 DType = "F6_E2M3"
	F6E3M2 DType = "F6_E3M2"
)

var dtypeBits = map[DType]int64{
	BOOL: 8, U8: 8, I8: 8, F8E5M2: 8, F8E4M3: 8, F8E8M0: 8,
	I16: 16, U16: 16, F16: 16, BF16: 16,
	I32: 32, U32: 32, F32: 32,
	F64: 64, I64: 64, U64: 64, C64: 64,
	F4: 4, F6E2M3: 6, F6E3M2: 6,
}

// Bits is the size of one element in bits, 0 for a type the format does
// not define.
func (d DType) Bits() int64 { return dtypeBits[d] }

// Known reports whether the format defines d.
func (d DType) Known() bool { return dtypeBits[d] != 0 }
