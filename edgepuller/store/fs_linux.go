package store

import "golang.org/x/sys/unix"

// renameFlushes reports a filesystem that writes out a file's data before
// a rename of it over an existing file is committed: ext4 with
// auto_da_alloc, its default (the mount option is not visible in statfs;
// noauto_da_alloc is rare, and even there an unreadable state file only
// restarts its ingest from 0). Others, XFS among them, are taken not to.
func renameFlushes(root string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return false
	}
	return st.Type == unix.EXT4_SUPER_MAGIC
}
