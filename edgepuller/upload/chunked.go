package upload

// How distribution v3 (the embedded registry, and the chart's) answers,
// read in registry/handlers/blobupload.go and registry/storage/blobwriter.go
// of v3.1.2, and what this file does about it:
//
//   - A PATCH body is copied straight into the upload's data file, hashed as
//     it goes. When the body is cut midway, the bytes that arrived stay: the
//     handler closes the writer, which saves the hash state, and the upload's
//     size is now somewhere inside the chunk. So after a cut the registry's
//     offset, not the last acknowledged one, is where to continue, and only
//     GET on the upload URL tells it (204, Range: 0-<last byte>).
//   - Every Location carries a signed _state with the offset it was issued
//     at. A PATCH or PUT whose _state offset differs from the upload's size
//     is refused with 416 RANGE_INVALID, so the Location saved after the
//     last acknowledged chunk is stale once a cut kept partial bytes. GET
//     does not check _state (it resumes by the UUID in the path) and answers
//     with a fresh Location; a resume therefore always GETs first and
//     continues with the Location that GET returned.
//   - A _state signed by another secret (a registry restarted without a
//     fixed http.secret) is refused with 404 BLOB_UPLOAD_INVALID on PATCH,
//     but GET still works for the same reason: that answer, like a 416,
//     is followed by a GET, not by a new session.
//   - An upload the registry no longer has (purged after uploadpurging's
//     age, 168h by default, or cancelled) answers 404 BLOB_UPLOAD_UNKNOWN:
//     start again with a new POST.
//   - Range "0-0" means an empty upload or a one-byte one (see parseRange).
//   - A PUT whose digest does not match the bytes is refused with 400
//     DIGEST_INVALID, and the upload is cancelled.
//
// Registries that keep nothing of a cut chunk (they buffer each PATCH)
// answer GET with the offset of the last whole chunk; the same code then
// resends that chunk, which Options.ChunkSize bounds.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// upload is one blob's chunked upload, across requests, cuts and sessions.
type upload struct {
	r     *Repository
	opts  Options
	desc  ocispec.Descriptor
	src   source
	repo  string // host/name, for messages and the state key
	files stateFiles

	loc      *url.URL // the session's current URL, with the registry's latest _state
	off      int64    // bytes the registry holds
	resumed  bool     // the session came from StateDir
	fromZero bool     // a resumed session failed its digest check and was started again
	restarts int
	failures int  // consecutive failed requests without progress
	stuck    int  // consecutive 416s at the offset the registry itself reported
	probe    bool // the offset comes from a GET: ask before sending the next body
}

// maxStuck bounds the 416s at the registry's own offset before a new
// session is started.
const maxStuck = 4

func newUpload(r *Repository, desc ocispec.Descriptor, src source) *upload {
	repo := r.Reference.Host() + "/" + r.Reference.Repository
	return &upload{r: r, opts: r.opts, desc: desc, src: src, repo: repo, files: newStateFiles(r.opts.StateDir, repo, desc.Digest)}
}

// errDone ends the loop early: the registry has the blob already.
var errDone = errors.New("the registry has the blob")

// attemptKind says what to do after a failed request.
type attemptKind int

const (
	transient   attemptKind = iota // back off, ask the registry's offset, continue
	outOfSync                      // 416: ask the registry's offset at once
	gone                           // the session is lost: start a new one
	unsupported                    // the registry takes no PATCH: one monolithic PUT
	fatal                          // retrying cannot help
)

type attemptError struct {
	kind attemptKind
	err  error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

func failed(kind attemptKind, err error) error { return &attemptError{kind: kind, err: err} }

func kindOf(err error) attemptKind {
	var ae *attemptError
	if errors.As(err, &ae) {
		return ae.kind
	}
	return fatal
}

func (u *upload) emit(kind EventKind, err error) {
	if u.opts.Progress != nil {
		u.opts.Progress(Event{Digest: u.desc.Digest, Kind: kind, Offset: u.off, Total: u.desc.Size, Err: err})
	}
}

func (u *upload) run(ctx context.Context) error {
	err := u.open(ctx)
	for err == nil {
		if u.off == u.desc.Size {
			err = u.commit(ctx)
			if err == nil {
				break
			}
		} else {
			err = u.patch(ctx)
		}
		if err != nil {
			err = u.recover(ctx, err)
		}
	}
	if err != nil && !errors.Is(err, errDone) {
		return err
	}
	if rerr := u.files.remove(); rerr != nil {
		u.opts.Log.Debug("upload done, but its state file stays", "digest", u.desc.Digest, "err", rerr)
	}
	u.off = u.desc.Size
	u.emit(Done, nil)
	return nil
}

// open resumes the session StateDir has for this blob, or starts one.
func (u *upload) open(ctx context.Context) error {
	st, ok, why := u.files.load(u.repo, u.desc.Digest, u.desc.Size)
	if why != "" {
		u.opts.Log.Debug("upload state unusable, starting again", "digest", u.desc.Digest, "repository", u.repo, "why", why)
	}
	if !ok {
		return u.start(ctx)
	}
	loc, err := location(u.uploadsURL(), st.Location)
	if err != nil {
		u.opts.Log.Debug("upload state unusable, starting again", "digest", u.desc.Digest, "repository", u.repo, "why", err)
		return u.start(ctx)
	}
	u.loc, u.resumed = loc, true
	for {
		err := u.status(ctx)
		if err == nil {
			u.opts.Log.Debug("resuming upload", "digest", u.desc.Digest, "repository", u.repo, "offset", u.off, "saved", st.Offset)
			u.emit(Resumed, nil)
			return nil
		}
		switch kindOf(err) {
		case gone:
			// Purged, cancelled, or completed by a PUT whose process died
			// before it could remove the state: restart checks for the blob.
			return u.restart(ctx, err)
		case fatal:
			return err
		}
		if err := u.retry(ctx, err); err != nil {
			return err
		}
	}
}

// recover decides what follows a failed request, and returns nil to go on
// or the error that ends the upload.
func (u *upload) recover(ctx context.Context, err error) error {
	switch kindOf(err) {
	case gone:
		return u.restart(ctx, err)
	case unsupported:
		return u.monolithic(ctx)
	case fatal:
		return err
	}
	tried := u.off
	if err := u.retry(ctx, err); err != nil {
		return err
	}
	for {
		serr := u.status(ctx)
		switch {
		case serr == nil && kindOf(err) == outOfSync && u.off == tried:
			// The registry refuses the offset it reports itself. Either it
			// is still writing a cut body (GET answers while the cut PATCH
			// is being copied) and will move on, or the offset is the
			// ambiguous "0-0": wait a little, and start a new session only
			// if it does not move.
			u.stuck++
			if u.stuck >= maxStuck {
				u.stuck = 0
				return u.restart(ctx, err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("interrupted at offset %d of %d, the next push resumes there: %w", u.off, u.desc.Size, ctx.Err())
			case <-time.After(u.opts.Backoff(u.stuck)):
			}
			return nil
		case serr == nil:
			return nil
		case kindOf(serr) == gone:
			return u.restart(ctx, serr)
		case kindOf(serr) == fatal:
			return serr
		}
		if err := u.retry(ctx, serr); err != nil {
			return err
		}
	}
}

// retry counts a failed attempt and waits before the next one (not after
// a 416, which asks for the registry's offset at once), or gives up.
func (u *upload) retry(ctx context.Context, err error) error {
	u.failures++
	if u.failures >= u.opts.MaxAttempts {
		return fmt.Errorf("gave up after %d attempts without progress at offset %d of %d: %w; the next push resumes there",
			u.failures, u.off, u.desc.Size, err)
	}
	u.emit(Retrying, err)
	if kindOf(err) == outOfSync {
		return nil
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("interrupted at offset %d of %d, the next push resumes there: %w", u.off, u.desc.Size, ctx.Err())
	case <-time.After(u.opts.Backoff(u.failures)):
		return nil
	}
}

// restart begins a new session after the registry lost the old one; if
// the registry meanwhile has the blob (a PUT that completed but whose
// answer was lost), there is nothing left to do.
func (u *upload) restart(ctx context.Context, why error) error {
	if ok, err := u.r.Exists(ctx, u.desc); err == nil && ok {
		return errDone
	}
	u.restarts++
	if u.restarts > maxRestarts {
		return fmt.Errorf("the registry lost the upload session %d times: %w", maxRestarts, why)
	}
	u.opts.Log.Debug("upload session gone, starting again", "digest", u.desc.Digest, "repository", u.repo, "offset", u.off, "why", why)
	u.emit(Restarted, why)
	u.resumed = false
	return u.start(ctx)
}

func (u *upload) uploadsURL() *url.URL {
	scheme := "https"
	if u.r.PlainHTTP {
		scheme = "http"
	}
	return &url.URL{Scheme: scheme, Host: u.r.Reference.Host(), Path: "/v2/" + u.r.Reference.Repository + "/blobs/uploads/"}
}

// start opens a new session (POST) at offset 0 and saves it.
func (u *upload) start(ctx context.Context) error {
	for {
		err := u.post(ctx)
		if err == nil {
			break
		}
		if kindOf(err) != transient {
			return err
		}
		if err := u.retry(ctx, err); err != nil {
			return err
		}
	}
	u.off = 0
	u.emit(Started, nil)
	return u.save()
}

func (u *upload) post(ctx context.Context) error {
	base := u.uploadsURL()
	resp, err := u.do(ctx, http.MethodPost, base, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return classify(resp)
	}
	loc, err := location(resp.Request.URL, resp.Header.Get("Location"))
	if err != nil {
		return failed(fatal, err)
	}
	u.loc = loc
	return nil
}

// status asks the registry how many bytes the session holds (GET on its
// URL) and takes the fresh Location it answers with.
func (u *upload) status(ctx context.Context) error {
	resp, err := u.do(ctx, http.MethodGet, u.loc, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return classify(resp)
	}
	off, err := parseRange(resp.Header.Get("Range"))
	if err != nil {
		return failed(gone, fmt.Errorf("upload status: %w", err))
	}
	if off > u.desc.Size {
		return failed(gone, fmt.Errorf("upload status: the registry holds %d bytes of a %d-byte blob", off, u.desc.Size))
	}
	if err := u.follow(resp); err != nil {
		return err
	}
	if off > u.off {
		u.failures, u.stuck = 0, 0
	}
	u.off, u.probe = off, true
	return u.save()
}

// follow takes the session URL an answer gives, if any.
func (u *upload) follow(resp *http.Response) error {
	if resp.Header.Get("Location") == "" {
		return nil
	}
	loc, err := location(resp.Request.URL, resp.Header.Get("Location"))
	if err != nil {
		return failed(fatal, err)
	}
	u.loc = loc
	return nil
}

func (u *upload) save() error {
	err := u.files.save(sessionState{
		Repository: u.repo, Digest: u.desc.Digest, Size: u.desc.Size,
		Location: u.loc.String(), Offset: u.off, Updated: time.Now().UTC(),
	})
	if err != nil {
		return failed(fatal, err)
	}
	return nil
}

// patch sends the next chunk.
func (u *upload) patch(ctx context.Context) error {
	n := min(u.opts.ChunkSize, u.desc.Size-u.off)
	b, err := u.src.chunk(u.off, n)
	if err != nil {
		return failed(fatal, fmt.Errorf("read bytes %d-%d: %w", u.off, u.off+n-1, err))
	}
	h := http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Content-Range": {fmt.Sprintf("%d-%d", u.off, u.off+n-1)},
	}
	if u.probe {
		// The first chunk after a GET may be refused (416): right after a
		// cut the registry can still be writing the cut body, and answers
		// GET with an offset it passes a moment later. With 100-continue
		// a refusal costs no body; a registry that ignores it gets the
		// body after the transport's ExpectContinueTimeout (1s by default).
		h.Set("Expect", "100-continue")
	}
	// The transport may still read a request's body after Do returns (a
	// cut, a cancel, an early answer: the RoundTripper contract), while
	// the source refills its buffer for the next chunk: each PATCH sends
	// its own copy.
	resp, err := u.do(ctx, http.MethodPatch, u.loc, h, bytes.Clone(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		if u.off == 0 && (statusIs(resp, http.StatusMethodNotAllowed, http.StatusNotImplemented)) {
			return failed(unsupported, errorResponse(resp))
		}
		return classify(resp)
	}
	next := u.off + n
	if h := resp.Header.Get("Range"); h != "" {
		got, err := parseRange(h)
		if err != nil || got < u.off || got > next {
			return failed(outOfSync, fmt.Errorf("the registry answered a chunk of bytes %d-%d with Range %q", u.off, next-1, h))
		}
		next = got
	}
	if err := u.follow(resp); err != nil {
		return err
	}
	u.off, u.failures, u.stuck, u.probe = next, 0, 0, false
	u.emit(Progress, nil)
	return u.save()
}

// commit completes the session (PUT ?digest=); the registry checks the
// digest of all it received.
func (u *upload) commit(ctx context.Context) error {
	loc := *u.loc
	q := loc.Query()
	q.Set("digest", u.desc.Digest.String())
	loc.RawQuery = q.Encode()
	resp, err := u.do(ctx, http.MethodPut, &loc, http.Header{"Content-Type": {"application/octet-stream"}}, []byte{})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		return u.checkCreated(resp)
	}
	err = classify(resp)
	if !hasCode(err, errcode.ErrorCodeDigestInvalid) {
		return err
	}
	if u.resumed && !u.fromZero {
		// Part of these bytes came from an earlier process; send them all
		// again once before blaming the file.
		u.fromZero = true
		return failed(gone, fmt.Errorf("the registry refused the digest of a resumed upload, sending it all again: %w", err))
	}
	u.files.remove()
	return failed(fatal, fmt.Errorf("%w: the registry computed another digest over the %d bytes sent: %w", content.ErrMismatchedDigest, u.desc.Size, err))
}

func (u *upload) checkCreated(resp *http.Response) error {
	if d := resp.Header.Get("Docker-Content-Digest"); d != "" && d != u.desc.Digest.String() {
		return failed(fatal, fmt.Errorf("%w: the registry stored the upload as %s", content.ErrMismatchedDigest, d))
	}
	return nil
}

// monolithic sends the whole blob in one PUT to a registry that takes no
// PATCH. It cannot resume: a cut starts it again from 0.
func (u *upload) monolithic(ctx context.Context) error {
	u.opts.Log.Debug("the registry refuses chunked uploads, sending the blob in one request", "digest", u.desc.Digest, "repository", u.repo)
	for {
		err := u.putAll(ctx)
		if err == nil {
			return errDone
		}
		if kindOf(err) != transient && kindOf(err) != gone {
			if hasCode(err, errcode.ErrorCodeDigestInvalid) {
				return fmt.Errorf("%w: %w", content.ErrMismatchedDigest, err)
			}
			return err
		}
		if err := u.retry(ctx, err); err != nil {
			return err
		}
		if err := u.post(ctx); err != nil && kindOf(err) != transient {
			return err
		}
	}
}

func (u *upload) putAll(ctx context.Context) error {
	body, err := u.src.rest(0)
	if err != nil {
		return failed(fatal, err)
	}
	loc := *u.loc
	q := loc.Query()
	q.Set("digest", u.desc.Digest.String())
	loc.RawQuery = q.Encode()
	resp, err := u.doReader(ctx, http.MethodPut, &loc, http.Header{"Content-Type": {"application/octet-stream"}}, body, u.desc.Size)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return classify(resp)
	}
	return u.checkCreated(resp)
}

// classify turns an unexpected answer into an attemptError.
func classify(resp *http.Response) error {
	err := errorResponse(resp)
	switch {
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return failed(outOfSync, err)
	case hasCode(err, errcode.ErrorCodeBlobUploadInvalid):
		// A _state the registry cannot use (another secret, after a
		// restart): GET still finds the session by its UUID.
		return failed(outOfSync, err)
	case resp.StatusCode == http.StatusNotFound &&
		(hasCode(err, errcode.ErrorCodeBlobUploadUnknown) || len(err.(*errcode.ErrorResponse).Errors) == 0):
		return failed(gone, err)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode/100 == 5:
		return failed(transient, err)
	case hasCode(err, errcode.ErrorCodeUnsupported):
		return failed(unsupported, err)
	}
	return failed(fatal, err)
}

// errStalled cancels a request that sent nothing, or heard nothing, for
// StallTimeout.
var errStalled = errors.New("stalled")

// do sends one request of the upload with the repository's credentials.
// A network error or a stall is transient: the registry's offset tells
// what arrived.
func (u *upload) do(ctx context.Context, method string, target *url.URL, h http.Header, body []byte) (*http.Response, error) {
	if body == nil {
		return u.doReader(ctx, method, target, h, nil, 0)
	}
	return u.doReader(ctx, method, target, h, bytes.NewReader(body), int64(len(body)))
}

func (u *upload) doReader(ctx context.Context, method string, target *url.URL, h http.Header, body io.Reader, size int64) (*http.Response, error) {
	ctx = auth.AppendRepositoryScope(ctx, u.r.Reference, auth.ActionPull, auth.ActionPush)
	rctx, cancel := context.WithCancelCause(ctx)
	var answered atomic.Bool
	stall := time.AfterFunc(u.opts.StallTimeout, func() {
		if !answered.Load() {
			cancel(errStalled)
		}
	})
	req, err := http.NewRequestWithContext(rctx, method, target.String(), nil)
	if err != nil {
		stall.Stop()
		cancel(nil)
		return nil, failed(fatal, err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if body != nil {
		req.ContentLength = size
		sr := &stallReader{r: body, t: stall, d: u.opts.StallTimeout}
		req.Body = io.NopCloser(sr)
		if br, ok := body.(*bytes.Reader); ok {
			// The auth client sends the body again after a 401 challenge.
			req.GetBody = func() (io.ReadCloser, error) {
				br.Seek(0, io.SeekStart)
				return io.NopCloser(sr), nil
			}
		}
		if size == 0 {
			req.Body, req.GetBody = http.NoBody, nil
		}
	}
	resp, err := u.r.client.Do(req)
	answered.Store(true)
	stall.Stop()
	if err != nil {
		cancel(nil)
		if ctx.Err() != nil {
			return nil, failed(fatal, fmt.Errorf("interrupted at offset %d of %d, the next push resumes there: %w", u.off, u.desc.Size, ctx.Err()))
		}
		if errors.Is(context.Cause(rctx), errStalled) {
			return nil, failed(transient, fmt.Errorf("%s %s: nothing moved for %s", method, u.repo, u.opts.StallTimeout))
		}
		if errors.Is(err, auth.ErrBasicCredentialNotFound) {
			return nil, failed(fatal, err)
		}
		return nil, failed(transient, fmt.Errorf("%s %s at offset %d: %w", method, u.repo, u.off, err))
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// stallReader pushes the stall deadline back on every read of a body.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.t.Reset(s.d)
	return s.r.Read(p)
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel(nil)
	return err
}
