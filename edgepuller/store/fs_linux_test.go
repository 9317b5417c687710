package store

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestRenameFlushes: the state file's own fsync is skipped on ext4 only;
// tmpfs (and anything else) keeps it.
func TestRenameFlushes(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if got, want := renameFlushes(dir), st.Type == unix.EXT4_SUPER_MAGIC; got != want {
		t.Errorf("renameFlushes(%s) = %v on filesystem type %#x, want %v", dir, got, st.Type, want)
	}
	if err := unix.Statfs("/dev/shm", &st); err == nil && st.Type == unix.TMPFS_MAGIC && renameFlushes("/dev/shm") {
		t.Error("renameFlushes(/dev/shm) = true on tmpfs")
	}
	if renameFlushes("/does/not/exist") {
		t.Error("renameFlushes of a missing directory = true")
	}
}
