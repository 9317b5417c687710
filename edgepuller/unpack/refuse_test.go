package unpack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

type evilCase struct {
	name   string
	layers []testLayer
	want   error
	msg    string // the error must contain it: the entry (or title) at fault
}

// bomb is a gzip bomb: a few KB that inflate to 4 MiB of file bytes.
func bomb() testLayer {
	var es []entry
	zeros := strings.Repeat("\x00", 128<<10)
	for i := range 32 {
		es = append(es, file(fmt.Sprintf("zeros-%02d", i), zeros))
	}
	return tarGzLayer("bomb", es...)
}

// declaredBomb is a bomb whose publisher declares its real size, as if that
// could lift the puller's cap.
func declaredBomb() testLayer {
	l := bomb()
	l.annotations = map[string]string{AnnotationUnpackedSize: "4194304"}
	return l
}

func evilCases() []evilCase {
	declared := tarLayer("sized", file("a", strings.Repeat("a", 600)), file("b", strings.Repeat("b", 600)))
	declared.annotations = map[string]string{AnnotationUnpackedSize: "1000"}
	lying := raw("weights.bin", "twelve bytes")
	lying.sizeDelta = 1
	return []evilCase{
		{"dotdot", []testLayer{tarLayer("t", file("../evil", "x"))}, ErrUnsafeEntry, `entry "../evil"`},
		{"absolute", []testLayer{tarLayer("t", file("/etc/passwd", "x"))}, ErrUnsafeEntry, `entry "/etc/passwd"`},
		{"dotdot inside a path", []testLayer{tarLayer("t", file("a/../../evil", "x"))}, ErrUnsafeEntry, `entry "a/../../evil"`},
		{"symlink to etc then a file through it",
			[]testLayer{tarLayer("t", symlink("link", "/etc"), file("link/passwd", "x"))}, ErrUnsafeEntry, `entry "link"`},
		{"file through a symlink that stays inside",
			[]testLayer{tarLayer("t", dir("sub/"), symlink("link", "sub"), file("link/passwd", "x"))}, ErrUnsafeEntry, `entry "link/passwd"`},
		{"raw layer through a symlink of an earlier layer",
			[]testLayer{tarLayer("t", dir("sub/"), symlink("link", "sub")), raw("link/weights.bin", "w")}, ErrUnsafeEntry, `title "link/weights.bin"`},
		{"symlink up and out", []testLayer{tarLayer("t", symlink("link", "../.."))}, ErrUnsafeEntry, `entry "link"`},
		{"symlink out of a subdirectory", []testLayer{tarLayer("t", symlink("a/b/link", "../../../x"))}, ErrUnsafeEntry, `entry "a/b/link"`},
		{"symlink out through another symlink",
			// x leads back to the top, so the ".." after it leaves the
			// artifact, though the text of y climbs one level of three.
			[]testLayer{tarLayer("t", symlink("p/q/r/s/t/x", "../../../../.."), symlink("p/q/r/y", "s/t/x/.."))}, ErrUnsafeEntry, `entry "p/q/r/y"`},
		{"hard link to etc passwd", []testLayer{tarLayer("t", hardlink("h", "/etc/passwd"))}, ErrUnsafeEntry, `entry "h"`},
		{"hard link up and out", []testLayer{tarLayer("t", hardlink("h", "../x"))}, ErrUnsafeEntry, `entry "h"`},
		{"hard link to a later entry", []testLayer{tarLayer("t", hardlink("h", "later"), file("later", "x"))}, ErrUnsafeEntry, `entry "h"`},
		{"char device", []testLayer{tarLayer("t", special("dev/null", tar.TypeChar))}, ErrUnsafeEntry, `entry "dev/null"`},
		{"block device", []testLayer{tarLayer("t", special("dev/sda", tar.TypeBlock))}, ErrUnsafeEntry, `entry "dev/sda"`},
		{"fifo", []testLayer{tarLayer("t", file("ok", "fine"), special("fifo", tar.TypeFifo))}, ErrUnsafeEntry, `entry "fifo"`},
		{"gzip bomb", []testLayer{bomb()}, ErrTooLarge, `entry "zeros-`},
		{"more than the declared unpacked size", []testLayer{declared}, ErrTooLarge, `entry "b"`},
		{"header promises more than the tar holds",
			[]testLayer{tarLayer("t", entry{name: "huge", size: 1 << 40})}, ErrTooLarge, `entry "huge"`},
		{"same path in two layers",
			[]testLayer{raw("weights.bin", "w1"), tarLayer("t", file("weights.bin", "w2"))}, ErrConflict, `entry "weights.bin"`},
		{"same path in two tar layers",
			[]testLayer{tarLayer("t1", file("a/x", "1")), tarGzLayer("t2", file("a/x", "2"))}, ErrConflict, `entry "a/x"`},
		{"same path twice in one layer", []testLayer{tarLayer("t", file("x", "1"), file("x", "2"))}, ErrConflict, `entry "x"`},
		{"file where another layer made a directory",
			[]testLayer{tarLayer("t1", file("a/x", "1")), raw("a", "2")}, ErrConflict, `title "a"`},
		{"oras directory layer with an entry outside its title",
			[]testLayer{orasDir("code", dir("code/"), file("code/a.py", "a"), file("other.py", "b"))}, ErrUnsafeEntry, `entry "other.py"`},
		{"raw title up and out", []testLayer{raw("../escape", "x")}, ErrUnsafeEntry, `title "../escape"`},
		{"blob size differs from descriptor", []testLayer{lying}, ErrSizeMismatch, `layer "weights.bin"`},
		{"path deeper than the default limit",
			[]testLayer{tarLayer("t", file(strings.Repeat("d/", 128)+"f", "x"))}, ErrLimit, `layer "t"`},
		{"path longer than the default limit",
			[]testLayer{tarLayer("t", file(strings.Repeat("n", 4097), "x"))}, ErrLimit, `entry "nnnn`},
		{"symlink target longer than the default limit",
			[]testLayer{tarLayer("t", symlink("link", strings.Repeat("n", 4097)))}, ErrLimit, `entry "link"`},
		{"raw title deeper than the default limit",
			[]testLayer{raw(strings.Repeat("d/", 128)+"w.bin", "w")}, ErrLimit, `title "d/d/`},
		{"annotation raising the cap of a gzip bomb", []testLayer{declaredBomb()}, ErrTooLarge, `entry "zeros-`},
	}
}

// TestRefusals feeds each malicious artifact to Build, ReplaceDir over a
// previous pull, and Activate over a current version. Each must fail naming
// the entry at fault and leave every file around it as it was.
func TestRefusals(t *testing.T) {
	good := []testLayer{raw("weights.bin", "good weights"), tarLayer("code", file("src/main.py", "print(1)"))}
	modes := []struct {
		name string
		// prepare lays out a previous good state; run tries the evil one.
		prepare func(t *testing.T, s *dirStore, work string)
		run     func(s *dirStore, ls []testLayer, work string, t *testing.T) error
		check   func(t *testing.T, work string)
	}{
		{
			name:    "Build",
			prepare: func(*testing.T, *dirStore, string) {},
			run: func(s *dirStore, ls []testLayer, work string, t *testing.T) error {
				return Build(context.Background(), s, s.descs(t, ls...), filepath.Join(work, "out"), Options{})
			},
			check: func(t *testing.T, work string) {
				if _, err := os.Lstat(filepath.Join(work, "out")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("destination left behind: %v", err)
				}
			},
		},
		{
			name: "ReplaceDir",
			prepare: func(t *testing.T, s *dirStore, work string) {
				if err := ReplaceDir(context.Background(), s, s.descs(t, good...), filepath.Join(work, "out"), Options{}); err != nil {
					t.Fatal(err)
				}
			},
			run: func(s *dirStore, ls []testLayer, work string, t *testing.T) error {
				return ReplaceDir(context.Background(), s, s.descs(t, ls...), filepath.Join(work, "out"), Options{})
			},
			check: func(t *testing.T, work string) {
				if got := readFile(t, filepath.Join(work, "out", "weights.bin")); got != "good weights" {
					t.Errorf("previous pull changed: %q", got)
				}
			},
		},
		{
			name: "Activate",
			prepare: func(t *testing.T, s *dirStore, work string) {
				if _, err := Activate(context.Background(), s, s.descs(t, good...), filepath.Join(work, "root"), digest.FromString("good"), Options{}); err != nil {
					t.Fatal(err)
				}
			},
			run: func(s *dirStore, ls []testLayer, work string, t *testing.T) error {
				_, err := Activate(context.Background(), s, s.descs(t, ls...), filepath.Join(work, "root"), digest.FromString("evil"), Options{})
				return err
			},
			check: func(t *testing.T, work string) {
				root := filepath.Join(work, "root")
				if cur, err := Current(root); err != nil || cur != digest.FromString("good") {
					t.Errorf("current = %s, %v; want the good version", cur, err)
				}
				if got := readFile(t, filepath.Join(root, "current", "weights.bin")); got != "good weights" {
					t.Errorf("current/weights.bin = %q", got)
				}
			},
		},
	}
	for _, tc := range evilCases() {
		for _, m := range modes {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				s := newStore(t)
				// Deep enough that every ".." in the corpus lands inside sandbox.
				sandbox := t.TempDir()
				work := filepath.Join(sandbox, "a", "b", "c", "d")
				if err := os.MkdirAll(work, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(sandbox, "sentinel"), []byte("s"), 0o644); err != nil {
					t.Fatal(err)
				}
				m.prepare(t, s, work)
				before := snapshot(t, sandbox)

				err := m.run(s, tc.layers, work, t)
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				t.Log(err)
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("error %q does not name %s", err, tc.msg)
				}
				if d := diffSnapshots(before, snapshot(t, sandbox)); d != "" {
					t.Errorf("files changed by a refused artifact:\n%s", d)
				}
				m.check(t, work)
			})
		}
	}
}

// TestGzipBombStopsEarly proves the bomb is refused after reading a small
// part of it, not after inflating all of it.
func TestGzipBombStopsEarly(t *testing.T) {
	s := newStore(t)
	l := bomb()
	if len(l.data) > 8<<10 {
		t.Fatalf("bomb is %d bytes compressed; want a few KB", len(l.data))
	}
	const total = 32 * 128 << 10
	limit := int64(len(l.data)) * 100
	var st stats
	err := Build(context.Background(), s, s.descs(t, l), filepath.Join(t.TempDir(), "out"), Options{stats: &st})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if st.written > limit {
		t.Errorf("wrote %d bytes, limit %d", st.written, limit)
	}
	if st.read > total/4 {
		t.Errorf("inflated %d of %d bytes before stopping; want far fewer", st.read, total)
	}
	t.Logf("compressed %d B, limit %d B, inflated %d B, written %d B: %v", len(l.data), limit, st.read, st.written, err)
}

// TestMaxExpansion: the ratio is an option, and a stream of tiny entries
// (headers, no file bytes) is bounded too.
func TestMaxExpansion(t *testing.T) {
	var many []entry
	for i := range 1000 {
		many = append(many, dir(fmt.Sprintf("d%04d/", i)))
	}
	headers := tarGzLayer("dirs", many...)
	for _, tc := range []struct {
		name  string
		layer testLayer
		ratio int64
		want  error
	}{
		{"bomb passes with a large ratio", bomb(), 2000, nil},
		{"bomb fails with the default", bomb(), 0, ErrTooLarge},
		{"headers only, within the default", headers, 0, nil},
		{"headers only, past a small ratio", headers, 5, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			err := Build(context.Background(), s, s.descs(t, tc.layer), filepath.Join(t.TempDir(), "out"), Options{MaxExpansion: tc.ratio})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
