package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/upload"
)

// UploadDir is where the trainer of round writes the update of the
// artifact name: root/uploads/<name>/round-<round>. For a NodeArtifact
// (name namespace/artifactName) it is v1alpha1.UploadDir under root.
func (a *Agent) UploadDir(name string, round int) string {
	return filepath.Join(a.opts.Root, "uploads", filepath.FromSlash(name), "round-"+strconv.Itoa(round))
}

// uploadRecord, beside the round's directory (not in it: the trainer
// owns that, and every file in it is uploaded), remembers an upload that
// succeeded, so that a restart reports it without pushing again.
type uploadRecord struct {
	Round      int           `json:"round"`
	Base       digest.Digest `json:"base"`
	Run        string        `json:"run,omitempty"`
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
	Samples    int64         `json:"samples"`
	Bytes      int64         `json:"bytes"`
}

func recordPath(dir string) string { return dir + ".uploaded.json" }

// uploaded reads the record of dir's upload, if it is of this base, run
// and repository.
func (w *worker) uploaded(dir string, base digest.Digest) (uploadRecord, bool) {
	b, err := os.ReadFile(recordPath(dir))
	if err != nil {
		return uploadRecord{}, false
	}
	var r uploadRecord
	u := w.d.Upload
	if json.Unmarshal(b, &r) != nil || r.Round != u.Round || r.Base != base || r.Run != u.Run || r.Repository != u.Repository || r.Digest == "" {
		return uploadRecord{}, false
	}
	return r, true
}

// upload waits for the trainer's DONE in the round's directory, checks the
// update and pushes it, until it is uploaded or ctx ends. The base model
// is Ready (current is base) when it is called.
func (w *worker) upload(ctx context.Context, base digest.Digest) {
	dir := w.a.UploadDir(w.d.Name, w.d.Upload.Round)
	if r, ok := w.uploaded(dir, base); ok {
		w.setUpload(UploadStatus{Phase: UploadUploaded, Digest: r.Digest, Samples: r.Samples, BytesDone: r.Bytes, BytesTotal: r.Bytes})
		w.report(Ready, base, "")
		return
	}
	failures := 0
	for {
		wait := w.a.opts.UploadPoll
		info, err := artifact.ReadUpdateDir(dir)
		if err == nil {
			err = w.checkUpdate(dir, base)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			w.setUpload(UploadStatus{Phase: UploadWaiting, Message: "waiting for the trainer to write " + artifact.UpdateDoneFile + " in " + dir})
		case err != nil:
			// Refused, never pushed; checked again at the next poll, as
			// the trainer may write it anew.
			w.setUpload(UploadStatus{Phase: UploadFailed, Samples: info.Samples, Message: "update refused: " + err.Error()})
		default:
			err = w.push(ctx, dir, base, info)
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				return
			}
			failures++
			wait = w.a.opts.Backoff(failures)
			w.setUpload(UploadStatus{Phase: UploadFailed, Samples: info.Samples,
				Message: fmt.Sprintf("%v (attempt %d; next in %s)", err, failures, wait.Round(100*time.Millisecond))})
		}
		w.report(Ready, base, "")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// push uploads the update in dir with progress reports, and records it.
func (w *worker) push(ctx context.Context, dir string, base digest.Digest, info artifact.UpdateInfo) error {
	u := w.d.Upload
	baseDesc, err := w.a.manifestDescriptor(base)
	if err != nil {
		return err
	}
	total, err := updateBytes(dir)
	if err != nil {
		return fmt.Errorf("update %s: %w", dir, err)
	}
	repo, _ := registry.ParseReference(u.Repository) // Validate accepted it
	counted := &countingStorage{done: map[digest.Digest]int64{}}
	note := &uploadNote{}
	progress := func() {
		w.setUpload(UploadStatus{Phase: UploadUploading, Samples: info.Samples, BytesDone: min(counted.bytes(), total), BytesTotal: total, Message: note.String()})
		w.report(Ready, base, "")
	}
	opts := w.a.opts.Upload
	opts.Progress = func(e upload.Event) {
		counted.event(e)
		if w.noteUploadEvent(note, e) {
			progress()
		}
	}
	counted.Storage = upload.New(&remote.Repository{Client: w.a.pushClient(repo.Registry), Reference: repo, PlainHTTP: w.d.Insecure}, opts)
	progress()
	pctx, stop := context.WithCancel(ctx)
	ticking := make(chan struct{})
	go func() {
		defer close(ticking)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
				progress()
			}
		}
	}()
	start := time.Now()
	desc, err := artifact.PackUpdate(ctx, counted, dir, artifact.Update{Node: w.a.opts.NodeName, Round: u.Round, Run: u.Run, Base: baseDesc})
	stop()
	<-ticking
	if err != nil {
		return fmt.Errorf("push update %s to %s: %w%s", dir, u.Repository, err, w.a.credentialHint(err, repo.Registry))
	}
	rec := uploadRecord{Round: u.Round, Base: base, Run: u.Run, Repository: u.Repository, Digest: desc.Digest, Samples: info.Samples, Bytes: total}
	if b, err := json.MarshalIndent(rec, "", "  "); err == nil {
		err = writeFileAtomic(recordPath(dir), append(b, '\n'))
		if err != nil {
			w.a.log.Warn("cannot remember the upload; a restart pushes it again (the same digest)", "artifact", w.d.Name, "err", err)
		}
	}
	w.a.log.Info("update uploaded", "artifact", w.d.Name, "round", u.Round, "repository", u.Repository, "digest", desc.Digest,
		"samples", info.Samples, "bytes", total, "took", time.Since(start).Round(time.Millisecond))
	w.setUpload(UploadStatus{Phase: UploadUploaded, Digest: desc.Digest, Samples: info.Samples, BytesDone: total, BytesTotal: total})
	w.report(Ready, base, "")
	return nil
}

// setUpload replaces the upload status that the worker's reports carry,
// logging a change of phase or message.
func (w *worker) setUpload(s UploadStatus) {
	s.Round = w.d.Upload.Round
	w.mu.Lock()
	prev := w.up
	w.up = s
	w.mu.Unlock()
	if prev.Phase == s.Phase && prev.Message == s.Message {
		return
	}
	attrs := []any{"artifact", w.d.Name, "round", s.Round, "phase", s.Phase}
	if s.Digest != "" {
		attrs = append(attrs, "digest", s.Digest)
	}
	if s.Message != "" {
		attrs = append(attrs, "message", s.Message)
	}
	if s.Phase == UploadFailed {
		w.a.log.Warn("update upload failed", attrs...)
	} else {
		w.a.log.Info("update "+string(s.Phase), attrs...)
	}
}

func (w *worker) uploadStatus() UploadStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up
}

// manifestDescriptor describes a manifest in the store: an update's
// subject.
func (a *Agent) manifestDescriptor(d digest.Digest) (ocispec.Descriptor, error) {
	b, err := os.ReadFile(a.st.BlobPath(d))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("read the base model's manifest %s: %w", d, err)
	}
	if len(b) > artifact.MaxManifestBytes {
		return ocispec.Descriptor{}, fmt.Errorf("base model's manifest %s is larger than %d bytes", d, artifact.MaxManifestBytes)
	}
	art, err := artifact.Parse(ocispec.Descriptor{Digest: d}, b)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("base model %s: %w", d, err)
	}
	return ocispec.Descriptor{MediaType: art.MediaType, Digest: d, Size: int64(len(b))}, nil
}

// pushClient reaches the upload repository's registry with the push
// credential, and gives it to no other host (a token realm elsewhere, say).
// It has no request timeout: a chunk on a slow link may take long, and the
// uploader has its own bound on a stalled request.
func (a *Agent) pushClient(host string) *auth.Client {
	c := &auth.Client{
		Client: uploadHTTPClient(a.upLimit),
		Header: http.Header{"User-Agent": {"barge-edgepuller"}},
		Cache:  a.pushCache,
	}
	if cred := a.opts.PushCredential; cred != nil {
		c.Credential = func(ctx context.Context, hostport string) (auth.Credential, error) {
			if hostport != host {
				return auth.EmptyCredential, nil
			}
			return cred(ctx, hostport)
		}
	}
	return c
}

// credentialHint says what to do when the registry wants a credential the
// puller lacks, or refuses the one it has.
func (a *Agent) credentialHint(err error, host string) string {
	var resp *errcode.ErrorResponse
	denied := errors.As(err, &resp) && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden)
	switch {
	case errors.Is(err, auth.ErrBasicCredentialNotFound) || (denied && a.opts.PushCredential == nil):
		return ": give the puller a push credential for " + host + " (--push-credentials; the chart's edgePuller.push.secretName)"
	case denied:
		return ": the push credential for " + host + " may not push there"
	}
	return ""
}

// updateBytes is the size of what PackUpdate uploads: every file but DONE.
func updateBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == filepath.Join(dir, artifact.UpdateDoneFile) {
			return err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		total += fi.Size()
		return nil
	})
	return total, err
}

// countingStorage counts, by blob, the bytes of the update the repository
// has: blobs it had (Exists), bytes read by pushes, offsets the chunked
// uploader's registry acknowledged.
type countingStorage struct {
	artifact.Storage
	mu   sync.Mutex
	done map[digest.Digest]int64
}

func (c *countingStorage) set(d digest.Digest, n int64) {
	c.mu.Lock()
	c.done[d] = n
	c.mu.Unlock()
}

func (c *countingStorage) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for _, v := range c.done {
		n += v
	}
	return n
}

// event takes the uploader's progress: where the registry stands.
func (c *countingStorage) event(e upload.Event) { c.set(e.Digest, e.Offset) }

func (c *countingStorage) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	ok, err := c.Storage.Exists(ctx, desc)
	if ok && err == nil && desc.MediaType != ocispec.MediaTypeImageManifest {
		c.set(desc.Digest, desc.Size)
	}
	return ok, err
}

// Push counts what is read; an io.Reader is all Push needs of it (a
// chunked push of a stream resumes from the chunk in flight, not by seeking).
func (c *countingStorage) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	return c.Storage.Push(ctx, desc, &countingReader{r: r, set: func(n int64) { c.set(desc.Digest, n) }})
}

// PushFile keeps the uploader's resume from a file: artifact packing uses
// it when the Storage has it.
func (c *countingStorage) PushFile(ctx context.Context, desc ocispec.Descriptor, path string) error {
	if fp, ok := c.Storage.(artifact.FilePusher); ok {
		return fp.PushFile(ctx, desc, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return c.Push(ctx, desc, f)
}

type countingReader struct {
	r   io.Reader
	n   int64
	set func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.set(c.n)
	return n, err
}
