package cli

import (
	"context"
	"fmt"
	"io"
	"sync"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/bargeml/barge/artifact"
)

// progress shows transfers: bars on a terminal, a line per file otherwise,
// nothing for -o json.
type progress interface {
	start(verb, name string, total int64) tracker
	// note prints a line about a file that needed no transfer.
	note(verb, name string, size int64)
	wait()
}

type tracker interface {
	add(n int)
	// set moves the tracker to an absolute offset, as when a download
	// resumes or restarts.
	set(offset int64)
	done(err error)
}

func newProgress(s streams, quiet bool) progress {
	switch {
	case quiet:
		return nopProgress{}
	case s.tty:
		return &barProgress{p: mpb.New(mpb.WithOutput(s.err), mpb.WithWidth(32)), w: s.err}
	}
	return &lineProgress{w: s.err}
}

type nopProgress struct{}

func (nopProgress) start(string, string, int64) tracker { return nopTracker{} }
func (nopProgress) note(string, string, int64)          {}
func (nopProgress) wait()                               {}

type nopTracker struct{}

func (nopTracker) add(int)    {}
func (nopTracker) set(int64)  {}
func (nopTracker) done(error) {}

type lineProgress struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineProgress) start(verb, name string, total int64) tracker {
	return &lineTracker{l: l, verb: verb, name: name, total: total}
}

func (l *lineProgress) note(verb, name string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%-11s %s (%s)\n", verb, name, humanBytes(size))
}

func (l *lineProgress) wait() {}

type lineTracker struct {
	l            *lineProgress
	verb, name   string
	total, sofar int64
}

func (t *lineTracker) add(n int)        { t.sofar += int64(n) }
func (t *lineTracker) set(offset int64) { t.sofar = offset }
func (t *lineTracker) done(err error) {
	if err != nil {
		t.l.note("Failed", t.name, t.sofar)
		return
	}
	t.l.note(t.verb, t.name, t.total)
}

type barProgress struct {
	p *mpb.Progress
	w io.Writer
}

func (b *barProgress) start(verb, name string, total int64) tracker {
	bar := b.p.AddBar(total,
		mpb.PrependDecorators(
			decor.Name(verb, decor.WCSyncSpaceR),
			decor.Name(name, decor.WCSyncSpaceR),
			decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
		),
		mpb.AppendDecorators(
			decor.OnComplete(decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace), "done"),
		),
	)
	return &barTracker{bar: bar}
}

func (b *barProgress) note(verb, name string, size int64) {
	bar := b.p.AddBar(size, mpb.PrependDecorators(
		decor.Name(verb, decor.WCSyncSpaceR),
		decor.Name(name, decor.WCSyncSpaceR),
		decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
	))
	bar.SetCurrent(size)
}

func (b *barProgress) wait() { b.p.Wait() }

type barTracker struct{ bar *mpb.Bar }

func (t *barTracker) add(n int)        { t.bar.IncrBy(n) }
func (t *barTracker) set(offset int64) { t.bar.SetCurrent(offset) }
func (t *barTracker) done(err error) {
	if err != nil {
		t.bar.Abort(false)
		return
	}
	t.bar.SetTotal(-1, true)
}

// countingReader reports bytes read to a tracker.
type countingReader struct {
	r io.Reader
	t tracker
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.t.add(n)
	return n, err
}

// fileName is what progress calls a blob: its title, if it has one.
func fileName(desc ocispec.Descriptor) (string, bool) {
	if desc.MediaType == ocispec.MediaTypeImageManifest || desc.MediaType == ocispec.MediaTypeImageIndex {
		return "", false
	}
	if t := desc.Annotations[artifact.AnnotationTitle]; t != "" {
		return t, true
	}
	return "", false
}

// progressStorage shows the files a push uploads and those the registry has
// already. Files pushed by path (PushFile, in upload.go) move their bar
// with the registry's acknowledged offset.
type progressStorage struct {
	artifact.Storage
	p     progress
	files *fileProgress // events of chunked uploads; nil if there are none
}

func (s progressStorage) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	ok, err := s.Storage.Exists(ctx, desc)
	if name, file := fileName(desc); ok && err == nil && file {
		s.p.note("Exists", name, desc.Size)
	}
	return ok, err
}

func (s progressStorage) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	name, file := fileName(desc)
	if !file {
		return s.Storage.Push(ctx, desc, r)
	}
	t := s.p.start("Uploaded", name, desc.Size)
	err := s.Storage.Push(ctx, desc, &countingReader{r: r, t: t})
	t.done(err)
	return err
}
