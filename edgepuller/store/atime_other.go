//go:build !linux

package store

import (
	"io/fs"
	"time"
)

// accessTime falls back to the modification time where we have not wired up
// the platform's stat: blobs then age from their commit.
func accessTime(fi fs.FileInfo) time.Time { return fi.ModTime() }
