package unpack

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// FuzzExtract feeds arbitrary bytes as a tar layer, as a tar+gzip layer,
// and gzipped under a declared size. Whatever the bytes, extraction must not
// panic, write outside its directory, or write more than the limit.
func FuzzExtract(f *testing.F) {
	for _, tc := range evilCases() {
		for _, l := range tc.layers {
			if l.mediaType != mtRaw {
				f.Add(l.data)
			}
		}
	}
	f.Add(makeTar(dir("a/"), file("a/b", "hello"), symlink("a/c", "b"), hardlink("a/d", "a/b")))
	f.Add([]byte{})

	s := newStore(f) // blobs are content-addressed: sharing is harmless
	f.Fuzz(func(t *testing.T, data []byte) {
		// Gzip or not is told by magic bytes, whatever the media type says.
		limit := int64(len(data))
		if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
			limit *= 100
		}
		declared := testLayer{mediaType: mtTarGz, title: "z", data: gz(data),
			annotations: map[string]string{AnnotationUnpackedSize: "4096"}}
		// One sandbox per input, shared by the three variants: what a
		// variant leaves must be its own destination and nothing else.
		sandbox := t.TempDir()
		work := filepath.Join(sandbox, "a", "b", "c")
		if err := os.MkdirAll(work, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sandbox, "sentinel"), []byte("s"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, sandbox)
		for _, v := range []struct {
			name  string
			layer testLayer
			limit int64
		}{
			{"tar", testLayer{mediaType: mtTar, title: "t", data: data}, limit},
			{"tar+gzip", testLayer{mediaType: mtTarGz, title: "g", data: data}, limit},
			{"gzipped, declared size", declared, 4096},
		} {
			out := filepath.Join(work, "out")
			var st stats
			err := Build(context.Background(), s, s.descs(t, v.layer), out, Options{stats: &st, noSync: true})
			if st.written > v.limit {
				t.Fatalf("%s: wrote %d bytes, limit %d", v.name, st.written, v.limit)
			}
			after := snapshot(t, sandbox)
			for p := range after {
				if p == "a/b/c/out" || strings.HasPrefix(p, "a/b/c/out/") {
					if err != nil {
						t.Fatalf("%s: failed (%v) but left %s", v.name, err, p)
					}
					delete(after, p)
				}
			}
			if d := diffSnapshots(before, after); d != "" {
				t.Fatalf("%s: wrote outside the destination:\n%s", v.name, d)
			}
			if err == nil {
				checkTree(t, out, v.limit)
				if err := os.RemoveAll(out); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// checkTree: the distinct files in out hold at most limit bytes, and every
// symlink that resolves lands inside out.
func checkTree(t *testing.T, out string, limit int64) {
	t.Helper()
	var total int64
	inodes := map[uint64]bool{}
	filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			if r, err := filepath.EvalSymlinks(p); err == nil && r != out && !strings.HasPrefix(r, out+"/") {
				t.Fatalf("symlink %s resolves to %s, outside %s", p, r, out)
			}
		case fi.Mode().IsRegular():
			if ino := fi.Sys().(*syscall.Stat_t).Ino; !inodes[ino] {
				inodes[ino] = true
				total += fi.Size()
			}
		}
		return nil
	})
	if total > limit {
		t.Fatalf("tree holds %d bytes, limit %d", total, limit)
	}
}
