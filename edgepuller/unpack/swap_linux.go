package unpack

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// swap exchanges staging and dest in one step, then removes the old tree,
// which is at staging afterwards. Filesystems without RENAME_EXCHANGE get
// swapAside.
func swap(staging, dest string) error {
	err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, dest, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return swapAside(staging, dest)
	}
	if err != nil {
		return &os.LinkError{Op: "exchange", Old: staging, New: dest, Err: err}
	}
	return os.RemoveAll(staging)
}
