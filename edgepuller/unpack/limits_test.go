package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestPathAndEntryLimits: each limit refuses one past it, naming the layer
// and the entry, and accepts exactly its value.
func TestPathAndEntryLimits(t *testing.T) {
	// long is a path of n bytes made of names Linux accepts (<= 255 bytes).
	long := func(n int) string {
		var b strings.Builder
		for b.Len() < n {
			if b.Len() > 0 {
				b.WriteByte('/')
			}
			b.WriteString(strings.Repeat("n", min(200, n-b.Len())))
		}
		return b.String()[:n]
	}
	deep := func(levels int) string { return strings.Repeat("d/", levels-1) + "f" }
	files := func(n int) []entry {
		var es []entry
		for i := range n {
			es = append(es, file(fmt.Sprintf("f%03d", i), "x"))
		}
		return es
	}
	for _, tc := range []struct {
		name  string
		layer testLayer
		opts  Options
		msg   string // "" means accepted
	}{
		{"default depth, at the limit", tarLayer("t", file(deep(128), "x")), Options{}, ""},
		{"default depth, one past", tarLayer("t", file(deep(129), "x")), Options{}, "129 levels deep, more than the 128 allowed (MaxPathDepth)"},
		{"directory entry with a trailing slash at the limit", tarLayer("t", dir(deep(128)+"/")), Options{}, ""},
		{"default length, at the limit", tarLayer("t", file(long(4096), "x")), Options{}, ""},
		{"default length, one past", tarLayer("t", file(long(4097), "x")), Options{}, "4097 bytes long, more than the 4096 allowed (MaxPathLength)"},
		{"depth option", tarLayer("t", file("a/b/c/d", "x")), Options{MaxPathDepth: 3}, `entry "a/b/c/d": limit exceeded: path is 4 levels deep`},
		{"length option", tarLayer("t", file("abcdefghijk", "x")), Options{MaxPathLength: 10}, `entry "abcdefghijk": limit exceeded: path is 11 bytes long`},
		{"hard link target too deep", tarLayer("t", file("a", "x"), hardlink("h", "a/b/c/d")), Options{MaxPathDepth: 3}, `entry "h": hard link target "a/b/c/d": limit exceeded`},
		{"symlink target too long", tarLayer("t", symlink("s", "abcdefghijk")), Options{MaxPathLength: 10}, `entry "s": limit exceeded: symlink target is 11 bytes long`},
		{"raw title too deep", raw("a/b/c/d", "w"), Options{MaxPathDepth: 3}, `title "a/b/c/d": limit exceeded`},
		{"entries at the limit", tarLayer("t", files(10)...), Options{MaxEntries: 10}, ""},
		{"entries one past", tarLayer("t", files(11)...), Options{MaxEntries: 10}, `entry "f010": limit exceeded: the layer has more than 10 entries (MaxEntries)`},
		{"implied directories count", tarLayer("t", file("a/b/c/d", "x")), Options{MaxEntries: 3}, `entry "a/b/c/d": limit exceeded: the layer creates more than 3 paths (MaxEntries)`},
		{"a directory named twice is created once", tarLayer("t", dir("a/"), dir("a/"), file("a/x", "1")), Options{MaxEntries: 3}, ""},
		{"limits count per layer", tarLayer("t", file("a/x", "1"), file("a/y", "2")), Options{MaxEntries: 3}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			layers := []testLayer{tc.layer}
			if tc.name == "limits count per layer" {
				layers = append(layers, tarLayer("u", file("b/x", "1"), file("b/y", "2")))
			}
			out := filepath.Join(t.TempDir(), "out")
			err := Build(context.Background(), s, s.descs(t, layers...), out, tc.opts)
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(tc.msg, "limit exceeded") || strings.Contains(tc.msg, "allowed") {
				if !errors.Is(err, ErrLimit) {
					t.Errorf("err = %v, want ErrLimit", err)
				}
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "layer ") {
				t.Errorf("error %q does not name the layer and %q", err, tc.msg)
			}
			if _, serr := os.Lstat(out); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("refused build left %s", out)
			}
		})
	}
}

// TestDeepEntryIsLinear: one tar entry 4,000 levels deep took 117 s when
// each level was reached by walking down from the top. With the default
// limits it is refused before any directory is made; with limits raised to
// admit it, each directory is opened a bounded number of times.
func TestDeepEntryIsLinear(t *testing.T) {
	const depth = 4000
	name := strings.Repeat("a/", depth-1) + "f"
	s := newStore(t)
	descs := s.descs(t, tarLayer("deep", file(name, "x")))

	t.Run("refused by default", func(t *testing.T) {
		var st stats
		start := time.Now()
		err := Build(context.Background(), s, descs, filepath.Join(t.TempDir(), "out"), Options{stats: &st})
		took := time.Since(start)
		if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), `layer "deep"`) || !strings.Contains(err.Error(), "4000 levels deep") {
			t.Fatalf("err = %.300v, want ErrLimit naming the layer and the depth", err)
		}
		t.Log(err)
		if st.opens != 0 || st.written != 0 {
			t.Errorf("opened %d directories and wrote %d bytes before refusing", st.opens, st.written)
		}
		if took > 5*time.Second {
			t.Errorf("refusing took %v", took)
		}
	})

	for _, sync := range []bool{false, true} {
		t.Run(fmt.Sprintf("handled when admitted, fsync %v", sync), func(t *testing.T) {
			var st stats
			out := filepath.Join(t.TempDir(), "out")
			start := time.Now()
			err := Build(context.Background(), s, descs, out, Options{MaxPathDepth: depth, MaxPathLength: 2 * depth, stats: &st, noSync: !sync})
			took := time.Since(start)
			if err != nil {
				t.Fatalf("%.300v", err)
			}
			// Past PATH_MAX: only a walk one level at a time reaches it.
			f, err := os.OpenInRoot(out, name)
			if err != nil {
				t.Fatalf("%.300v", err)
			}
			got, err := io.ReadAll(f)
			f.Close()
			if err != nil || string(got) != "x" {
				t.Fatalf("deep file holds %q, %v", got, err)
			}
			// One open per level to build the chain, one more per level to
			// fsync it; a walk from the top per level would be depth²/2.
			limit := int64(depth)
			if sync {
				limit = 2 * depth
			}
			if st.opens > limit {
				t.Errorf("opened directories %d times for %d levels; want at most %d", st.opens, depth, limit)
			}
			// No bound on time here: it is mkdir on a shared disk, 1 s
			// idle and 10 s under load. The count above is the proof.
			t.Logf("%d levels, fsync %v: %d opens, %v", depth, sync, st.opens, took)
			os.RemoveAll(out)
		})
	}
}

// TestCancelStopsExtraction: a cancelled ctx stops Activate between entries
// and inside a file, the staging tree is removed, and current still points
// at the previous version with its files intact.
func TestCancelStopsExtraction(t *testing.T) {
	var many []entry
	for i := range 5000 {
		many = append(many, file(fmt.Sprintf("dir%02d/f%04d", i%50, i), "data"))
	}
	big := tarGzLayer("big", file("small", "s"), file("zeros", strings.Repeat("\x00", 64<<20)))
	for _, tc := range []struct {
		name  string
		layer testLayer
		// cancelAt arms the cancel; it runs with the stats so far.
		cancelAt func(st *stats, cancel func())
		check    func(t *testing.T, st *stats)
	}{
		{"between entries", tarLayer("many", many...),
			func(st *stats, cancel func()) {
				st.afterEntry = func() {
					if st.entries == 100 {
						cancel()
					}
				}
			},
			func(t *testing.T, st *stats) {
				if st.entries != 100 {
					t.Errorf("extracted %d entries; want it to stop right after the 100th", st.entries)
				}
			}},
		{"inside a file", big,
			func(st *stats, cancel func()) {
				st.afterRead = func() {
					if st.read > 1<<20 {
						cancel()
					}
				}
			},
			func(t *testing.T, st *stats) {
				if st.written > 2<<20 {
					t.Errorf("wrote %d bytes of 64 MiB after cancelling at 1 MiB", st.written)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			root := filepath.Join(t.TempDir(), "root")
			good := digest.FromString("good")
			if _, err := Activate(context.Background(), s, s.descs(t, raw("weights.bin", "good weights")), root, good, Options{}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st := &stats{}
			tc.cancelAt(st, cancel)
			_, err := Activate(ctx, s, s.descs(t, tc.layer), root, digest.FromString("new"), Options{stats: st, MaxExpansion: 10000})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			t.Log(err)
			tc.check(t, st)
			if cur, err := Current(root); err != nil || cur != good {
				t.Errorf("current = %s, %v; want the previous version", cur, err)
			}
			if got := readFile(t, filepath.Join(root, "current", "weights.bin")); got != "good weights" {
				t.Errorf("current/weights.bin = %q", got)
			}
			if vs, err := Versions(root); err != nil || len(vs) != 1 {
				t.Errorf("versions = %v, %v; want only the previous one", vs, err)
			}
			entries, _ := os.ReadDir(root)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".staging-") {
					t.Errorf("cancelled build left %s", e.Name())
				}
			}
		})
	}
}

// TestHugeExpansionRatio: a ratio so large that the caps overflow int64
// still extracts (the bound saturates) instead of failing or panicking.
func TestHugeExpansionRatio(t *testing.T) {
	s := newStore(t)
	l := tarGzLayer("g", file("a", "hello"))
	l.annotations = map[string]string{AnnotationUnpackedSize: "9223372036854775807"}
	out := filepath.Join(t.TempDir(), "out")
	if err := Build(context.Background(), s, s.descs(t, l), out, Options{MaxExpansion: 1 << 62}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(out, "a")); got != "hello" {
		t.Fatalf("a = %q", got)
	}
}
