package unpack

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestBuildMixedLayers: raw, tar and oras-style tar+gzip layers together,
// with nested paths, links and modes as a workload will see them.
func TestBuildMixedLayers(t *testing.T) {
	s := newStore(t)
	layers := s.descs(t,
		raw("models/resnet/weights.bin", "weights"),
		tarLayer("code",
			dir("src/"),
			entry{name: "src/pre/run.py", body: "run", mode: 0o700},
			entry{name: "src/pre/notes.txt", body: "notes", mode: 0o600},
			entry{name: "src/pre/suid", body: "suid", mode: 0o6755 | 0o1000},
			symlink("src/latest", "pre"),
			symlink("src/pre/w", "../../models/resnet/weights.bin"),
			hardlink("src/pre/run2.py", "src/pre/run.py"),
		),
		orasDir("data", dir("data/"), file("data/x/y.csv", "a,b\n")),
	)
	dest := filepath.Join(t.TempDir(), "out")
	if err := Build(context.Background(), s, layers, dest, Options{}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		path, content string
		mode          fs.FileMode
	}{
		{"models/resnet/weights.bin", "weights", 0o444},
		{"src/pre/run.py", "run", 0o755},
		{"src/pre/run2.py", "run", 0o755},
		{"src/pre/notes.txt", "notes", 0o644},
		{"src/pre/suid", "suid", 0o755}, // setuid, setgid, sticky stripped
		{"src/latest/run.py", "run", 0o755},
		{"src/pre/w", "weights", 0o444},
		{"data/x/y.csv", "a,b\n", 0o644},
	} {
		p := filepath.Join(dest, tc.path)
		if got := readFile(t, p); got != tc.content {
			t.Errorf("%s = %q, want %q", tc.path, got, tc.content)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tc.mode {
			t.Errorf("%s mode = %v, want %v", tc.path, fi.Mode(), tc.mode)
		}
	}
	a, _ := os.Stat(filepath.Join(dest, "src/pre/run.py"))
	b, _ := os.Stat(filepath.Join(dest, "src/pre/run2.py"))
	if !os.SameFile(a, b) {
		t.Error("tar hard link is a copy")
	}
	for _, d := range []string{".", "models", "models/resnet", "src", "src/pre", "data", "data/x"} {
		fi, err := os.Lstat(filepath.Join(dest, d))
		if err != nil || fi.Mode() != fs.ModeDir|0o755 {
			t.Errorf("%s: %v, %v; want a 0755 directory", d, fi.Mode(), err)
		}
	}
}

// TestRawLayerSharesStoreInode: a raw layer costs no space, and is read-only
// in both places.
func TestRawLayerSharesStoreInode(t *testing.T) {
	s := newStore(t)
	layers := s.descs(t, raw("weights.bin", "weights"))
	if err := os.Chmod(s.BlobPath(layers[0].Digest), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if err := Build(context.Background(), s, layers, dest, Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := os.Stat(filepath.Join(dest, "weights.bin"))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := os.Stat(s.BlobPath(layers[0].Digest))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(got, blob) {
		t.Error("weights.bin is not a hard link to the store's blob")
	}
	if got.Mode() != 0o444 || blob.Mode() != 0o444 {
		t.Errorf("modes: file %v, blob %v; want 0444", got.Mode(), blob.Mode())
	}
}

// TestLinkFallback: where a hard link cannot be made, the blob is copied;
// other link errors fail the artifact instead of hiding a broken store.
func TestLinkFallback(t *testing.T) {
	for _, tc := range []struct {
		name    string
		linkErr error
		copied  bool
	}{
		{"other filesystem", syscall.EXDEV, true},
		{"protected_hardlinks", syscall.EPERM, true},
		{"too many links", syscall.EMLINK, true},
		{"io error", syscall.EIO, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			layers := s.descs(t, raw("a/weights.bin", "weights"), raw("b/tokenizer.json", "{}"))
			calls := 0
			opts := Options{link: func(oldname, newname string) error {
				calls++
				return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: tc.linkErr}
			}}
			dest := filepath.Join(t.TempDir(), "out")
			err := Build(context.Background(), s, layers, dest, opts)
			if !tc.copied {
				if !errors.Is(err, tc.linkErr) {
					t.Fatalf("err = %v, want %v", err, tc.linkErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if calls != 2 {
				t.Errorf("link called %d times, want 2", calls)
			}
			for i, name := range []string{"a/weights.bin", "b/tokenizer.json"} {
				p := filepath.Join(dest, name)
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				blob, _ := os.Stat(s.BlobPath(layers[i].Digest))
				if os.SameFile(fi, blob) {
					t.Errorf("%s is linked, want a copy", name)
				}
				if fi.Mode() != 0o444 {
					t.Errorf("%s mode = %v, want 0444", name, fi.Mode())
				}
			}
			if got := readFile(t, filepath.Join(dest, "a/weights.bin")); got != "weights" {
				t.Errorf("copy = %q", got)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	s := newStore(t)
	good := s.descs(t, raw("w", "w"))
	missing := ocispec.Descriptor{MediaType: mtRaw, Digest: "sha256:" + "00000000000000000000000000000000000000000000000000000000000000aa", Size: 1,
		Annotations: map[string]string{ocispec.AnnotationTitle: "gone"}}
	untitled := s.descs(t, testLayer{mediaType: mtRaw, data: []byte("x")})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tc := range []struct {
		name   string
		ctx    context.Context
		layers []ocispec.Descriptor
		exists bool
		want   error
	}{
		{"destination exists", context.Background(), good, true, fs.ErrExist},
		{"blob missing from store", context.Background(), []ocispec.Descriptor{missing}, false, fs.ErrNotExist},
		{"tar blob missing from store", context.Background(), []ocispec.Descriptor{{MediaType: mtTar, Digest: missing.Digest, Size: 1}}, false, fs.ErrNotExist},
		{"cancelled", cancelled, good, false, context.Canceled},
		{"raw layer without a title", context.Background(), untitled, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out")
			if tc.exists {
				if err := os.Mkdir(dest, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dest, "mine"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := Build(tc.ctx, s, tc.layers, dest, Options{})
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			t.Log(err)
			_, serr := os.Stat(filepath.Join(dest, "mine"))
			if tc.exists != (serr == nil) {
				t.Errorf("destination: exists=%v, want %v", serr == nil, tc.exists)
			}
		})
	}
}

// noPaths is a store that knows no blob: the real one answers "" for a
// digest it cannot hold.
type noPaths struct{}

func (noPaths) BlobPath(digest.Digest) string { return "" }

func TestBuildStoreWithoutPath(t *testing.T) {
	s := newStore(t)
	for _, l := range []testLayer{raw("w", "w"), tarLayer("t", file("a", "a"))} {
		err := Build(context.Background(), noPaths{}, s.descs(t, l), filepath.Join(t.TempDir(), "out"), Options{})
		if err == nil || !strings.Contains(err.Error(), "blob not in store") {
			t.Errorf("%s: err = %v, want blob not in store", l.mediaType, err)
		}
	}
}

// TestUnpackedSizeAnnotation: the declared size is a limit, not a target,
// and it comes from the publisher, so it may lower the puller's cap but
// never raise it: a bomb that declares its real size is still refused.
func TestUnpackedSizeAnnotation(t *testing.T) {
	const size = 32 * 128 << 10 // what bomb() inflates to
	for _, tc := range []struct {
		name     string
		declared string
		ratio    int64
		want     error
	}{
		{"declared size past the default cap is refused", strconv.Itoa(size), 0, ErrTooLarge},
		{"a huge declared size raises nothing", strconv.Itoa(1 << 62), 0, ErrTooLarge},
		{"declared size within a cap the puller raised", strconv.Itoa(size), 2000, nil},
		{"declared size lowers a cap the puller raised", strconv.Itoa(size - 1), 2000, ErrTooLarge},
		{"malformed", "not a number", 2000, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			l := bomb()
			l.annotations = map[string]string{AnnotationUnpackedSize: tc.declared}
			var st stats
			err := Build(context.Background(), s, s.descs(t, l), filepath.Join(t.TempDir(), "out"), Options{MaxExpansion: tc.ratio, stats: &st})
			if tc.declared == "not a number" {
				if err == nil || !strings.Contains(err.Error(), AnnotationUnpackedSize) {
					t.Fatalf("err = %v, want one naming the malformed annotation", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			declared, _ := strconv.ParseInt(tc.declared, 10, 64)
			if limit := min(declared, int64(len(l.data))*max(tc.ratio, 100)); st.written > limit {
				t.Errorf("wrote %d bytes past the limit of %d", st.written, limit)
			}
		})
	}
}

func TestIsTar(t *testing.T) {
	for mt, want := range map[string]bool{
		"application/vnd.cncf.model.code.v1.tar":    true,
		"application/vnd.cncf.model.dataset.v1.tar": true,
		// What plain `oras push` gives a file: oras pull writes it as a
		// file unless the unpack annotation says otherwise; so does Barge.
		"application/vnd.oci.image.layer.v1.tar":               false,
		"application/vnd.oci.image.layer.v1.tar+gzip":          false,
		"application/vnd.docker.image.rootfs.diff.tar.gzip":    false,
		"application/x-tar":                                    false, // no ".tar" suffix: a file named by its title
		"application/vnd.example+tar":                          true,
		"application/vnd.example.tar.gz":                       true,
		"application/vnd.cncf.model.weight.v1.raw":             false,
		"application/vnd.cncf.model.weight.config.v1.raw":      false,
		"application/vnd.oci.image.layer.v1.tar+zstd":          false,
		"application/vnd.cncf.model.weight.v1.raw+gzip":        false,
		"application/vnd.barge.dataset.config.v1+json":         false,
		"application/vnd.cncf.model.code.v1.tar.with.a.suffix": false,
	} {
		if got := isTar(ocispec.Descriptor{MediaType: mt}); got != want {
			t.Errorf("isTar(%s) = %v, want %v", mt, got, want)
		}
	}
	if !isTar(ocispec.Descriptor{MediaType: "application/octet-stream", Annotations: map[string]string{AnnotationUnpack: "true"}}) {
		t.Error("the oras unpack annotation does not make a layer a tar")
	}
}

// TestPlainTarWithUnpackAnnotation: with the oras annotation, compression is
// told by magic bytes, not by media type.
func TestPlainTarWithUnpackAnnotation(t *testing.T) {
	s := newStore(t)
	l := tarLayer("code", file("code/a.py", "a"))
	l.mediaType = "application/octet-stream"
	l.annotations = map[string]string{AnnotationUnpack: "true"}
	dest := filepath.Join(t.TempDir(), "out")
	if err := Build(context.Background(), s, s.descs(t, l), dest, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dest, "code/a.py")); got != "a" {
		t.Errorf("code/a.py = %q", got)
	}
}
