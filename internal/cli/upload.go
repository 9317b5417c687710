package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/upload"
)

// uploadState is where `barge push` keeps its unfinished chunked uploads
// (a session URL and an offset per blob), so that the same push run again
// after a kill or a cut continues where the registry stopped. "" (no cache
// directory) still resumes after a cut within one run.
func uploadState() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "barge", "uploads")
}

// resumableStorage wraps repo for `barge push`: files go up in resumable
// chunks, with progress on p.
func resumableStorage(repo *remote.Repository, p progress) (*upload.Repository, progressStorage) {
	files := &fileProgress{p: p, files: map[digest.Digest]*fileTrack{}}
	up := upload.New(repo, upload.Options{StateDir: uploadState(), Progress: files.handle})
	return up, progressStorage{Storage: up, p: p, files: files}
}

// fileProgress routes the events of chunked uploads to the tracker of the
// file being pushed.
type fileProgress struct {
	p     progress
	mu    sync.Mutex
	files map[digest.Digest]*fileTrack
}

type fileTrack struct {
	name string
	t    tracker
}

func (f *fileProgress) track(d digest.Digest, name string, t tracker) func() {
	f.mu.Lock()
	f.files[d] = &fileTrack{name: name, t: t}
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.files, d)
		f.mu.Unlock()
	}
}

func (f *fileProgress) handle(e upload.Event) {
	f.mu.Lock()
	ft := f.files[e.Digest]
	f.mu.Unlock()
	if ft == nil {
		return
	}
	switch e.Kind {
	case upload.Resumed:
		f.p.note("Resuming", fmt.Sprintf("%s at %s", ft.name, humanBytes(e.Offset)), e.Total)
		ft.t.set(e.Offset)
	case upload.Restarted:
		f.p.note("Restarting", ft.name+": the registry lost the upload session", e.Total)
		ft.t.set(0)
	case upload.Progress:
		ft.t.set(e.Offset)
	}
}

// PushFile shows a file that goes up by path, as Push shows one read
// through a reader.
func (s progressStorage) PushFile(ctx context.Context, desc ocispec.Descriptor, path string) error {
	fp, ok := s.Storage.(artifact.FilePusher)
	if !ok {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return s.Push(ctx, desc, f)
	}
	name, file := fileName(desc)
	if !file || s.files == nil {
		return fp.PushFile(ctx, desc, path)
	}
	t := s.p.start("Uploaded", name, desc.Size)
	untrack := s.files.track(desc.Digest, name, t)
	err := fp.PushFile(ctx, desc, path)
	untrack()
	if err == nil {
		t.set(desc.Size)
	}
	t.done(err)
	return err
}
