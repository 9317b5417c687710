package agent

import (
	"fmt"
	"os"
	"slices"

	"github.com/bargeml/barge/safetensors"
)

// sameTensors checks that the update's safetensors file has the base
// file's tensors, each with its dtype and shape, and no other: what FedAvg
// can average. Only the headers are read.
func sameTensors(update, base string) error {
	u, closeU, err := openTensors(update)
	if err != nil {
		return fmt.Errorf("not a safetensors file: %w", err)
	}
	defer closeU()
	b, closeB, err := openTensors(base)
	if err != nil {
		return fmt.Errorf("the base model's file cannot be read: %w", err)
	}
	defer closeB()
	for _, bt := range b.Tensors {
		ut, ok := u.Tensor(bt.Name)
		switch {
		case !ok:
			return fmt.Errorf("tensor %q of the base model is missing", bt.Name)
		case ut.DType != bt.DType || !slices.Equal(ut.Shape, bt.Shape):
			return fmt.Errorf("tensor %q is %s %v; the base model's is %s %v", bt.Name, ut.DType, ut.Shape, bt.DType, bt.Shape)
		}
	}
	for _, ut := range u.Tensors {
		if _, ok := b.Tensor(ut.Name); !ok {
			return fmt.Errorf("tensor %q is not in the base model", ut.Name)
		}
	}
	return nil
}

func openTensors(path string) (*safetensors.File, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		var st *safetensors.File
		if st, err = safetensors.Open(f, fi.Size()); err == nil {
			return st, f.Close, nil
		}
	}
	f.Close()
	return nil, nil, err
}
