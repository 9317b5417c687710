package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxHeaderSize bounds the JSON header, as the reference implementation
// does: a hostile length cannot make Open allocate more.
const MaxHeaderSize = 100_000_000

// MetadataKey is the header entry that holds free-form string metadata
// instead of a tensor.
const MetadataKey = "__metadata__"

// ErrInvalid is wrapped by every error about a malformed file.
var ErrInvalid = errors.New("invalid safetensors file")

// Tensor describes one tensor of a file.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	// Begin and End are the header's data_offsets: the tensor's bytes,
	// relative to the start of the data that follows the header.
	Begin, End int64
}

// Elements is the product of the shape (1 for a scalar).
func (t Tensor) Elements() int64 {
	n, _ := elements(t.Shape)
	return n
}

// Size is the tensor's length in bytes.
func (t Tensor) Size() int64 { return t.End - t.Begin }

// File is a parsed header over the file's bytes.
type File struct {
	// Metadata is the header's __metadata__, nil when it has none.
	Metadata map[string]string
	// Tensors in the order of their data in the file.
	Tensors []Tensor

	r         io.ReaderAt
	size      int64
	dataStart int64
	byName    map[string]int
}

// Open reads and validates the header of the size bytes in r: a known dtype
// for each tensor, a byte length that matches its shape, and data offsets
// that cover the data after the header exactly, without gap or overlap, as
// the reference implementation requires. It reads no tensor data.
func Open(r io.ReaderAt, size int64) (*File, error) {
	if size < 8 {
		return nil, invalidf("%d bytes, shorter than the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if err := readFull(r, lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("read safetensors header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, invalidf("header is %d bytes, more than the %d limit", n, MaxHeaderSize)
	}
	if n == 0 {
		return nil, invalidf("header is empty")
	}
	if n > uint64(size-8) {
		return nil, invalidf("header is %d bytes but the file has only %d after the length: truncated?", n, size-8)
	}
	header := make([]byte, n)
	if err := readFull(r, header, 8); err != nil {
		return nil, fmt.Errorf("read safetensors header: %w", err)
	}
	f, err := parseHeader(header)
	if err != nil {
		return nil, err
	}
	f.r, f.size, f.dataStart = r, size, 8+int64(n)
	if err := f.checkLayout(); err != nil {
		return nil, err
	}
	return f, nil
}

// readFull reads len(p) bytes at off. A ReaderAt may return io.EOF with
// all the bytes when they end the input.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Tensor finds a tensor by name.
func (f *File) Tensor(name string) (Tensor, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return f.Tensors[i], true
}

// Data returns a reader of t's bytes (t as listed in f.Tensors).
func (f *File) Data(t Tensor) *io.SectionReader {
	return io.NewSectionReader(f.r, f.dataStart+t.Begin, t.Size())
}

// DataStart is where the tensor data begins in the file, after the header.
func (f *File) DataStart() int64 { return f.dataStart }

// rawTensor is a tensor entry as the JSON spells it; pointers tell a
// missing field from an empty one.
type rawTensor struct {
	DType       *string   `json:"dtype"`
	Shape       *[]uint64 `json:"shape"`
	DataOffsets *[]uint64 `json:"data_offsets"`
}

func parseHeader(header []byte) (*File, error) {
	if !utf8.Valid(header) {
		return nil, invalidf("header is not valid UTF-8")
	}
	if !bytes.HasPrefix(header, []byte("{")) {
		return nil, invalidf("header does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	if _, err := dec.Token(); err != nil {
		return nil, invalidf("header: %v", err)
	}
	f := &File{byName: map[string]int{}}
	seenMetadata := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, invalidf("header: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, invalidf("header: expected a name, got %v", tok)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, invalidf("header: entry %q: %v", name, err)
		}
		if name == MetadataKey {
			if seenMetadata {
				return nil, invalidf("header has %s twice", MetadataKey)
			}
			seenMetadata = true
			if err := strictUnmarshal(raw, &f.Metadata); err != nil {
				return nil, invalidf("header: %s must map names to strings: %v", MetadataKey, err)
			}
			continue
		}
		if _, dup := f.byName[name]; dup {
			return nil, invalidf("header has tensor %q twice", name)
		}
		t, err := parseTensor(name, raw)
		if err != nil {
			return nil, err
		}
		f.byName[name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}
	if _, err := dec.Token(); err != nil {
		return nil, invalidf("header: %v", err)
	}
	// The reference writer pads the header with spaces to align the data.
	if rest := bytes.TrimRight(header[dec.InputOffset():], " \t\r\n"); len(rest) != 0 {
		return nil, invalidf("header has data after its JSON object")
	}
	return f, nil
}

func parseTensor(name string, raw json.RawMessage) (Tensor, error) {
	var rt rawTensor
	if err := strictUnmarshal(raw, &rt); err != nil {
		return Tensor{}, invalidf("tensor %q: %v", name, err)
	}
	if rt.DType == nil || rt.Shape == nil || rt.DataOffsets == nil {
		return Tensor{}, invalidf("tensor %q: needs dtype, shape and data_offsets", name)
	}
	t := Tensor{Name: name, DType: DType(*rt.DType)}
	if !t.DType.Known() {
		return Tensor{}, invalidf("tensor %q: unknown dtype %q", name, *rt.DType)
	}
	for _, d := range *rt.Shape {
		if d > math.MaxInt64 {
			return Tensor{}, invalidf("tensor %q: dimension %d is too large", name, d)
		}
		t.Shape = append(t.Shape, int64(d))
	}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	offs := *rt.DataOffsets
	if len(offs) != 2 {
		return Tensor{}, invalidf("tensor %q: data_offsets has %d numbers, not 2", name, len(offs))
	}
	if offs[0] > offs[1] || offs[1] > math.MaxInt64 {
		return Tensor{}, invalidf("tensor %q: data_offsets [%d, %d] are not an ascending range", name, offs[0], offs[1])
	}
	t.Begin, t.End = int64(offs[0]), int64(offs[1])
	want, err := byteLen(t.DType, t.Shape)
	if err != nil {
		return Tensor{}, invalidf("tensor %q: %v", name, err)
	}
	if t.Size() != want {
		return Tensor{}, invalidf("tensor %q: %s %v needs %d bytes, data_offsets give %d", name, t.DType, t.Shape, want, t.Size())
	}
	return t, nil
}

// checkLayout sorts the tensors by data offset and checks that they tile
// the data region exactly.
func (f *File) checkLayout() error {
	slices.SortStableFunc(f.Tensors, func(a, b Tensor) int {
		if a.Begin != b.Begin {
			return cmp.Compare(a.Begin, b.Begin)
		}
		if a.End != b.End {
			return cmp.Compare(a.End, b.End)
		}
		return strings.Compare(a.Name, b.Name)
	})
	var at int64
	for i, t := range f.Tensors {
		f.byName[t.Name] = i
		if t.Begin != at {
			if t.Begin < at {
				return invalidf("tensor %q at bytes [%d, %d] overlaps the tensor before it", t.Name, t.Begin, t.End)
			}
			return invalidf("tensor %q starts at byte %d, leaving a gap after byte %d", t.Name, t.Begin, at)
		}
		at = t.End
	}
	if data := f.size - f.dataStart; at != data {
		if at > data {
			return invalidf("tensors need %d bytes of data, the file has %d: truncated?", at, data)
		}
		return invalidf("the file has %d bytes of data, the tensors cover %d", data, at)
	}
	return nil
}

func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// elements multiplies the shape, refusing overflow.
func elements(shape []int64) (int64, error) {
	n := uint64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d", d)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n = lo
	}
	return int64(n), nil
}

// byteLen is the number of bytes a tensor of dtype and shape takes.
func byteLen(dtype DType, shape []int64) (int64, error) {
	n, err := elements(shape)
	if err != nil {
		return 0, err
	}
	b := dtype.Bits()
	if b == 0 {
		return 0, fmt.Errorf("unknown dtype %q", dtype)
	}
	hi, lo := bits.Mul64(uint64(n), uint64(b))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("shape %v has too many elements", shape)
	}
	if lo%8 != 0 {
		return 0, fmt.Errorf("%d elements of %s do not fill whole bytes", n, dtype)
	}
	return int64(lo / 8), nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
