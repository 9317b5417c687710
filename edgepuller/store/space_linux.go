package store

import "golang.org/x/sys/unix"

// Available is how many bytes the filesystem holding the store still
// gives to an unprivileged writer (statfs f_bavail), or -1 if unknown.
func (s *Store) Available() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.root, &st); err != nil {
		return -1, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
