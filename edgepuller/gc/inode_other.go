//go:build !unix

package gc

import "io/fs"

// fileID identifies a file; without inode numbers, hard links count twice.
type fileID struct {
	path string
}

func idOf(path string, fi fs.FileInfo) fileID { return fileID{path: path} }
