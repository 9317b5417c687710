//go:build unix

package gc

import (
	"io/fs"
	"syscall"
)

// fileID identifies a file whatever name it is reached by.
type fileID struct {
	dev, ino uint64
	path     string
}

func idOf(path string, fi fs.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}
	}
	return fileID{path: path}
}
