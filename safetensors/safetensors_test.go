package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func encode(t testing.TB, metadata map[string]string, tensors []Tensor, data [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Encode(&buf, metadata, tensors, data); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	tensors := []Tensor{
		{Name: "fc.weight", DType: F32, Shape: []int64{2, 3}},
		{Name: "fc.bias", DType: F16, Shape: []int64{2}},
		{Name: "step", DType: I64, Shape: []int64{}},
		{Name: "empty", DType: BF16, Shape: []int64{0, 4}},
		{Name: "mask", DType: BOOL, Shape: []int64{3}},
	}
	data := [][]byte{
		AppendF32(nil, 1, 2, 3, 4, 5, 6),
		{0x00, 0x3c, 0x00, 0x40},
		{7, 0, 0, 0, 0, 0, 0, 0},
		{},
		{1, 0, 1},
	}
	meta := map[string]string{"format": "pt", "round": "3"}
	b := encode(t, meta, tensors, data)
	if hl := binary.LittleEndian.Uint64(b); (8+hl)%8 != 0 {
		t.Errorf("data starts at %d, not aligned to 8", 8+hl)
	}
	f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Metadata, meta) {
		t.Errorf("metadata %v, want %v", f.Metadata, meta)
	}
	var names []string
	for _, tt := range f.Tensors {
		names = append(names, tt.Name)
	}
	// Data order is the order written, whatever the header's key order.
	if want := []string{"fc.weight", "fc.bias", "step", "empty", "mask"}; !reflect.DeepEqual(names, want) {
		t.Errorf("tensors in order %v, want %v", names, want)
	}
	for i, want := range tensors {
		got, ok := f.Tensor(want.Name)
		if !ok {
			t.Fatalf("tensor %s missing", want.Name)
		}
		if got.DType != want.DType || !reflect.DeepEqual(got.Shape, want.Shape) {
			t.Errorf("tensor %s: %s %v, want %s %v", want.Name, got.DType, got.Shape, want.DType, want.Shape)
		}
		d, err := io.ReadAll(f.Data(got))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d, data[i]) {
			t.Errorf("tensor %s data %v, want %v", want.Name, d, data[i])
		}
	}
	w, _ := f.Tensor("fc.weight")
	d, _ := io.ReadAll(f.Data(w))
	if got := F32s(d); !reflect.DeepEqual(got, []float32{1, 2, 3, 4, 5, 6}) {
		t.Errorf("F32s = %v", got)
	}
}

func TestEmptyFile(t *testing.T) {
	b := encode(t, nil, nil, nil)
	f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != 0 || f.Metadata != nil {
		t.Errorf("got %v %v, want nothing", f.Tensors, f.Metadata)
	}
}

// raw builds a file from a header string and data length.
func raw(header string, data int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

func TestOpenRefuses(t *testing.T) {
	huge := binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1)
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"too short", []byte{1, 2, 3}, "shorter than"},
		{"header beyond file", binary.LittleEndian.AppendUint64(nil, 100), "truncated"},
		{"empty header", binary.LittleEndian.AppendUint64(nil, 0), "header is empty"},
		{"header too large", append(huge, make([]byte, 16)...), "more than the"},
		{"not an object", raw(`[1]`, 0), "does not start with '{'"},
		{"bad json", raw(`{"a":`, 0), "header"},
		{"not utf8", raw("{\"\xff\":1}", 0), "UTF-8"},
		{"trailing data", raw(`{} {}`, 0), "after its JSON"},
		{"unknown dtype", raw(`{"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}`, 4), `unknown dtype "F31"`},
		{"missing shape", raw(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, 4), "needs dtype, shape and data_offsets"},
		{"extra field", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, 4), "unknown field"},
		{"negative dim", raw(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), "tensor \"a\""},
		{"length mismatch", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4), "needs 8 bytes"},
		{"descending offsets", raw(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, 4), "ascending"},
		{"three offsets", raw(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, 2), "not 2"},
		{"overflow", raw(`{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, 0), "too many elements"},
		{"overlap", raw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6), "overlaps"},
		{"gap", raw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}`, 8), "gap"},
		{"truncated data", raw(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, 5), "truncated"},
		{"extra data", raw(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, 9), "cover 8"},
		{"duplicate tensor", raw(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), "twice"},
		{"metadata not strings", raw(`{"__metadata__":{"a":1}}`, 0), "strings"},
		{"half byte", raw(`{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}`, 1), "whole bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(c.file), int64(len(c.file)))
			if err == nil {
				t.Fatalf("Open accepted it")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestOpenAcceptsHeaderOrderAndPadding(t *testing.T) {
	// Keys in any order, spaces after the object, a sub-byte dtype.
	b := raw(`{"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"__metadata__":null,"a":{"dtype":"F4","shape":[8],"data_offsets":[0,4]}}   `, 6)
	f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Tensors[0].Name != "a" || f.Tensors[1].Name != "b" {
		t.Errorf("tensors not in data order: %v", f.Tensors)
	}
}

func TestWriterRefuses(t *testing.T) {
	cases := []struct {
		name    string
		tensors []Tensor
		want    string
	}{
		{"no name", []Tensor{{DType: U8, Shape: []int64{1}}}, "no name"},
		{"metadata name", []Tensor{{Name: MetadataKey, DType: U8, Shape: []int64{1}}}, "reserved"},
		{"twice", []Tensor{{Name: "a", DType: U8}, {Name: "a", DType: U8}}, "twice"},
		{"unknown dtype", []Tensor{{Name: "a", DType: "F12"}}, "unknown dtype"},
		{"negative", []Tensor{{Name: "a", DType: U8, Shape: []int64{-1}}}, "negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewWriter(io.Discard, nil, c.tensors)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("NewWriter error %v, want one saying %q", err, c.want)
			}
		})
	}
	w, err := NewWriter(io.Discard, nil, []Tensor{{Name: "a", DType: F32, Shape: []int64{2}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Error("Close accepted 4 of 8 bytes")
	}
	if _, err := w.Write(make([]byte, 5)); err == nil {
		t.Error("Write accepted bytes beyond the last tensor")
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8))
	f.Add(raw(`{"__metadata__":{"k":"v"},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[0,2]},"c":{"dtype":"F4","shape":[2],"data_offsets":[2,3]}}`, 3))
	f.Add(raw(`{}`, 0))
	f.Add(raw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// An accepted file tiles its data exactly and reads back through
		// the writer to the same tensors.
		var at int64
		var data [][]byte
		for _, tt := range file.Tensors {
			if tt.Begin != at || tt.End < tt.Begin {
				t.Fatalf("tensor %q at [%d, %d], expected to start at %d", tt.Name, tt.Begin, tt.End, at)
			}
			at = tt.End
			d, err := io.ReadAll(file.Data(tt))
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, d)
		}
		if file.DataStart()+at != int64(len(b)) {
			t.Fatalf("tensors end at %d, file at %d", file.DataStart()+at, len(b))
		}
		var buf bytes.Buffer
		if err := Encode(&buf, file.Metadata, file.Tensors, data); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("re-open: %v", err)
		}
		if !reflect.DeepEqual(again.Tensors, file.Tensors) {
			t.Fatalf("tensors changed: %v, then %v", file.Tensors, again.Tensors)
		}
	})
}
