package artifact

import (
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every error about bad input: a directory that
// cannot be packed, a manifest that cannot be read, metrics that are not
// numbers.
var ErrInvalid = errors.New("invalid artifact")

type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return ErrInvalid }

func errorf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}
