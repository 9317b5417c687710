package store

import (
	"io/fs"
	"syscall"
)

func stampOf(fi fs.FileInfo) fileStamp {
	f := fileStamp{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), Mode: fi.Mode().Perm()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		f.Ino, f.Nlink = st.Ino, uint64(st.Nlink)
		f.CtimeNs = st.Ctim.Sec*1e9 + st.Ctim.Nsec
	}
	return f
}
