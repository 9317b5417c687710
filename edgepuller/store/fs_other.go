//go:build !linux

package store

// renameFlushes is false where we do not know the filesystem: every
// checkpoint's state file is fsynced.
func renameFlushes(string) bool { return false }
