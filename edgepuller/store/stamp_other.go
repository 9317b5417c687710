//go:build !linux

package store

import "io/fs"

// stampOf falls back to size, mode and modification time where we have not
// wired up the platform's stat: a change that restores the mtime then goes
// unnoticed.
func stampOf(fi fs.FileInfo) fileStamp {
	return fileStamp{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), Mode: fi.Mode().Perm()}
}
