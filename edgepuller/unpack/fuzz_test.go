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
// gzipped under a declared size, and under tight path and entry limits.
// Whatever the bytes, extraction must not panic, write outside its
// directory, write more than the limit, or leave a tree past the limits.
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
	f.Add(makeTar(file("a/b/c/d/e", "deep"), file("0123456789/0123456789/0123456789/x", "long")))
	f.Add(makeTar(dir("a/"), dir("a/"), file("a/b/c", "1"), file("a/b/d", "2"), symlink("a/l", "b/c")))

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
		// A declared size raises nothing: the cap is the smaller one.
		declaredLimit := min(4096, int64(len(declared.data))*100)
		tight := Options{MaxPathDepth: 3, MaxPathLength: 24, MaxEntries: 6}
		for _, v := range []struct {
			name  string
			layer testLayer
			limit int64
			opts  Options
		}{
			{"tar", testLayer{mediaType: mtTar, title: "t", data: data}, limit, Options{}},
			{"tar+gzip", testLayer{mediaType: mtTarGz, title: "g", data: data}, limit, Options{}},
			{"gzipped, declared size", declared, declaredLimit, Options{}},
			{"tar, tight path and entry limits", testLayer{mediaType: mtTar, title: "t", data: data}, limit, tight},
		} {
			out := filepath.Join(work, "out")
			var st stats
			opts := v.opts
			opts.stats, opts.noSync = &st, true
			err := Build(context.Background(), s, s.descs(t, v.layer), out, opts)
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
				checkTree(t, out, v.limit, v.opts)
				if err := os.RemoveAll(out); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// checkTree: the distinct files in out hold at most limit bytes, every
// symlink that resolves lands inside out, and no path is deeper or longer,
// nor are there more of them, than opts allow.
func checkTree(t *testing.T, out string, limit int64, opts Options) {
	t.Helper()
	var total int64
	inodes := map[uint64]bool{}
	paths := 0
	filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if rel, _ := filepath.Rel(out, p); rel != "." {
			paths++
			if strings.Count(rel, "/")+1 > opts.maxPathDepth() || len(rel) > opts.maxPathLength() {
				t.Fatalf("%s is past the path limits", rel)
			}
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
	if paths > opts.maxEntries() {
		t.Fatalf("tree holds %d paths, limit %d", paths, opts.maxEntries())
	}
}
