package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing data[off:off+n] to disk
// without waiting, so that the fsync of the next checkpoint or of the commit
// finds it done instead of writing a whole interval at once.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
