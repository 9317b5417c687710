package unpack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	mtRaw   = "application/vnd.cncf.model.weight.v1.raw"
	mtTar   = "application/vnd.cncf.model.code.v1.tar"
	mtTarGz = "application/vnd.cncf.model.weight.v1.tar+gzip"
)

// dirStore is a blob store laid out like the real one: one read-only file
// per committed blob.
type dirStore struct{ dir string }

func newStore(t testing.TB) *dirStore {
	return &dirStore{dir: t.TempDir()}
}

func (s *dirStore) BlobPath(d digest.Digest) string {
	return filepath.Join(s.dir, "blobs", string(d.Algorithm()), d.Encoded())
}

func (s *dirStore) put(t testing.TB, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	p := s.BlobPath(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err == nil {
		return d
	}
	if err := os.WriteFile(p, data, 0o444); err != nil {
		t.Fatal(err)
	}
	return d
}

// testLayer is a layer before it is stored.
type testLayer struct {
	mediaType   string
	title       string // empty: no title annotation
	annotations map[string]string
	data        []byte
	sizeDelta   int64 // descriptor size lies by this much
}

func raw(title, content string) testLayer {
	return testLayer{mediaType: mtRaw, title: title, data: []byte(content)}
}

func tarLayer(title string, entries ...entry) testLayer {
	return testLayer{mediaType: mtTar, title: title, data: makeTar(entries...)}
}

func tarGzLayer(title string, entries ...entry) testLayer {
	return testLayer{mediaType: mtTarGz, title: title, data: gz(makeTar(entries...))}
}

// orasDir is a directory packed the way oras push packs one.
func orasDir(title string, entries ...entry) testLayer {
	l := tarGzLayer(title, entries...)
	l.annotations = map[string]string{AnnotationUnpack: "true"}
	return l
}

func (s *dirStore) descs(t testing.TB, ls ...testLayer) []ocispec.Descriptor {
	t.Helper()
	var out []ocispec.Descriptor
	for _, l := range ls {
		ann := map[string]string{}
		for k, v := range l.annotations {
			ann[k] = v
		}
		if l.title != "" {
			ann[ocispec.AnnotationTitle] = l.title
			ann[AnnotationFilepath] = l.title
		}
		out = append(out, ocispec.Descriptor{
			MediaType:   l.mediaType,
			Digest:      s.put(t, l.data),
			Size:        int64(len(l.data)) + l.sizeDelta,
			Annotations: ann,
		})
	}
	return out
}

// entry is one tar entry; typ 0 means a regular file.
type entry struct {
	name string
	typ  byte
	body string
	link string
	mode int64
	size int64 // header size when no body is written (a lying header)
}

func file(name, body string) entry        { return entry{name: name, body: body} }
func dir(name string) entry               { return entry{name: name, typ: tar.TypeDir} }
func symlink(name, target string) entry   { return entry{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) entry  { return entry{name: name, typ: tar.TypeLink, link: target} }
func special(name string, typ byte) entry { return entry{name: name, typ: typ} }

func makeTar(entries ...entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.size > 0 {
			// Header only: the archive ends before the promised bytes.
			h.Size = e.size
			if err := tw.WriteHeader(h); err != nil {
				panic(err)
			}
			tw.Flush()
			return buf.Bytes()
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// snapshot describes every path under dir: type, mode, size, content hash
// or link target. Two equal snapshots mean nothing under dir changed.
func snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d %x", len(b), sha256.Sum256(b))
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(before, after map[string]string) string {
	var d []string
	for k, v := range before {
		if w, ok := after[k]; !ok {
			d = append(d, "removed "+k)
		} else if w != v {
			d = append(d, fmt.Sprintf("changed %s: %s -> %s", k, v, w))
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			d = append(d, "added "+k)
		}
	}
	return strings.Join(d, "\n")
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
