package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Writer writes a safetensors file as a stream: NewWriter writes the header,
// then Write takes the tensors' bytes in the order they were given, and
// Close checks that all of them came.
type Writer struct {
	w       io.Writer
	tensors []Tensor
	total   int64
	written int64
}

// NewWriter writes the header of a file holding tensors, laid out in the
// order given (their Begin and End are computed; see Tensors), and
// metadata (may be nil).
func NewWriter(w io.Writer, metadata map[string]string, tensors []Tensor) (*Writer, error) {
	laid, total, err := layout(tensors)
	if err != nil {
		return nil, err
	}
	header, err := encodeHeader(metadata, laid)
	if err != nil {
		return nil, err
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(header)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return nil, fmt.Errorf("write safetensors header: %w", err)
	}
	if _, err := w.Write(header); err != nil {
		return nil, fmt.Errorf("write safetensors header: %w", err)
	}
	return &Writer{w: w, tensors: laid, total: total}, nil
}

// Tensors are the tensors as the header lays them out.
func (w *Writer) Tensors() []Tensor { return w.tensors }

// Write writes tensor data; it refuses bytes beyond the last tensor's end.
func (w *Writer) Write(p []byte) (int, error) {
	if int64(len(p)) > w.total-w.written {
		return 0, fmt.Errorf("safetensors: %d bytes more than the %d the header announces", int64(len(p))-(w.total-w.written), w.total)
	}
	n, err := w.w.Write(p)
	w.written += int64(n)
	return n, err
}

// Close checks that every tensor's bytes were written. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	if w.written != w.total {
		return fmt.Errorf("safetensors: %d bytes of tensor data written, the header announces %d", w.written, w.total)
	}
	return nil
}

// Encode writes a whole file whose tensors' bytes are in memory: data[i]
// holds tensors[i]'s. It suits small models; stream large ones through a
// Writer.
func Encode(w io.Writer, metadata map[string]string, tensors []Tensor, data [][]byte) error {
	if len(data) != len(tensors) {
		return fmt.Errorf("safetensors: %d tensors but %d data slices", len(tensors), len(data))
	}
	sw, err := NewWriter(w, metadata, tensors)
	if err != nil {
		return err
	}
	for i, t := range sw.Tensors() {
		if int64(len(data[i])) != t.Size() {
			return fmt.Errorf("safetensors: tensor %q: %s %v needs %d bytes, got %d", t.Name, t.DType, t.Shape, t.Size(), len(data[i]))
		}
		if _, err := sw.Write(data[i]); err != nil {
			return err
		}
	}
	return sw.Close()
}

func layout(tensors []Tensor) ([]Tensor, int64, error) {
	laid := make([]Tensor, len(tensors))
	seen := map[string]bool{}
	var at int64
	for i, t := range tensors {
		switch {
		case t.Name == "":
			return nil, 0, errors.New("safetensors: a tensor has no name")
		case t.Name == MetadataKey:
			return nil, 0, fmt.Errorf("safetensors: %q is reserved for metadata, not a tensor name", MetadataKey)
		case seen[t.Name]:
			return nil, 0, fmt.Errorf("safetensors: tensor %q given twice", t.Name)
		}
		seen[t.Name] = true
		n, err := byteLen(t.DType, t.Shape)
		if err != nil {
			return nil, 0, fmt.Errorf("safetensors: tensor %q: %w", t.Name, err)
		}
		t.Shape = append([]int64{}, t.Shape...)
		t.Begin, t.End = at, at+n
		if t.End < at {
			return nil, 0, errors.New("safetensors: the tensors are too large for one file")
		}
		at = t.End
		laid[i] = t
	}
	return laid, at, nil
}

// encodeHeader writes the JSON header with sorted names, padded with spaces
// to a multiple of 8 bytes so that the data is aligned, as the reference
// writer does.
func encodeHeader(metadata map[string]string, tensors []Tensor) ([]byte, error) {
	type entry struct {
		DType       DType    `json:"dtype"`
		Shape       []int64  `json:"shape"`
		DataOffsets [2]int64 `json:"data_offsets"`
	}
	obj := make(map[string]any, len(tensors)+1)
	if metadata != nil {
		obj[MetadataKey] = metadata
	}
	for _, t := range tensors {
		obj[t.Name] = entry{t.DType, t.Shape, [2]int64{t.Begin, t.End}}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(obj); err != nil {
		return nil, fmt.Errorf("safetensors: encode header: %w", err)
	}
	header := bytes.TrimRight(buf.Bytes(), "\n")
	if pad := (8 - len(header)%8) % 8; pad > 0 {
		header = append(header, bytes.Repeat([]byte(" "), pad)...)
	}
	if len(header) > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: header is %d bytes, more than the %d limit", len(header), MaxHeaderSize)
	}
	return header, nil
}
