package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bargeml/barge/edgepuller/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// bufferSize is the fixed copy buffer of one download: memory stays
// bounded by Concurrency × bufferSize whatever the blob sizes.
const bufferSize = 1 << 20

// progressEvery throttles Progress events per blob.
const progressEvery = 200 * time.Millisecond

// FetchBlob downloads the blob desc of repo ("host[:port]/name") into st,
// trying opts.Mirrors first, resuming a partial left by an earlier call and
// verifying the digest. A blob already in st is not downloaded.
func FetchBlob(ctx context.Context, st *store.Store, repo string, desc ocispec.Descriptor, opts Options) (Result, error) {
	ref, err := registry.ParseReference(repo)
	if err != nil {
		return Result{}, fmt.Errorf("fetch blob %s from %s: %w", desc.Digest, repo, err)
	}
	ref.Reference = ""
	p, err := newPuller(st, ref, opts)
	if err != nil {
		return Result{}, err
	}
	ctx, cancel := withPullTimeout(ctx, p.opts)
	defer cancel()
	err = p.fetchBlob(ctx, desc, desc.Annotations[ocispec.AnnotationTitle])
	return p.result(), explainTimeout(ctx, p.opts, err)
}

// puller holds what the downloads of one Pull share: clients, sources,
// the bandwidth limit and the counters.
type puller struct {
	st    *store.Store
	ref   registry.Reference // the repository at the origin
	opts  Options
	srcs  []source // mirrors in order, then the origin
	meta  remote.Client
	blob  remote.Client
	limit *Limiter

	fetched, reused  atomic.Int64
	resumed, retries atomic.Int64

	mu   sync.Mutex
	down map[string]bool // mirrors that could not be reached during this pull
}

func newPuller(st *store.Store, ref registry.Reference, opts Options) (*puller, error) {
	opts = opts.withDefaults()
	srcs, err := sources(ref, opts)
	if err != nil {
		return nil, err
	}
	meta, blob := clients(opts.Client)
	meta = WithRequestTimeout(meta, opts.RequestTimeout)
	return &puller{
		st: st, ref: ref, opts: opts, srcs: srcs, meta: meta, blob: blob,
		limit: opts.limiter(),
		down:  map[string]bool{},
	}, nil
}

func (p *puller) result() Result {
	return Result{
		Fetched: p.fetched.Load(),
		Reused:  p.reused.Load(),
		Resumed: int(p.resumed.Load()),
		Retries: int(p.retries.Load()),
	}
}

func (p *puller) repoName() string { return p.ref.Host() + "/" + p.ref.Repository }

func (p *puller) emit(e Event) {
	if p.opts.Progress != nil {
		p.opts.Progress(e)
	}
}

// usable lists the sources to try, leaving out mirrors found down during
// this pull and those in skip.
func (p *puller) usable(skip map[string]bool) []source {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []source
	for _, s := range p.srcs {
		if s.mirror && (p.down[s.host] || skip[s.host]) {
			continue
		}
		out = append(out, s)
	}
	return out
}

func (p *puller) markDown(s source) {
	p.mu.Lock()
	p.down[s.host] = true
	p.mu.Unlock()
}

// fetchBlob makes desc present in the store, or says why it cannot.
func (p *puller) fetchBlob(ctx context.Context, desc ocispec.Descriptor, name string) error {
	ev := Event{Digest: desc.Digest, Name: name, Total: desc.Size}
	skipped := func() error {
		p.reused.Add(desc.Size)
		ev.Kind, ev.Offset = Skipped, desc.Size
		p.emit(ev)
		return nil
	}
	if ok, err := p.st.Exists(ctx, desc); err != nil {
		return p.failed(ev, err)
	} else if ok {
		return skipped()
	}
	var skip map[string]bool
	for try := 0; ; try++ {
		used, err := p.transfer(ctx, desc, name, skip)
		switch {
		case err == nil:
			ev.Kind, ev.Offset = Done, desc.Size
			p.emit(ev)
			return nil
		case errors.Is(err, errdef.ErrAlreadyExists):
			// Committed by another pull of the same digest while we waited
			// for its ingest lock.
			return skipped()
		case errors.Is(err, content.ErrMismatchedDigest) && try == 0:
			// The store has dropped the bad copy. Fetch once more from 0, so
			// that a single corrupted transfer does not fail the pull, but
			// not from a mirror that supplied any of the bad bytes.
			skip = map[string]bool{}
			for _, s := range used {
				if s.mirror {
					skip[s.host] = true
				}
			}
			p.retries.Add(1)
			ev.Kind, ev.Offset, ev.Err = Retrying, 0, err
			p.emit(ev)
			continue
		case errors.Is(err, content.ErrMismatchedDigest):
			return p.failed(ev, fmt.Errorf("fetch blob %s from %s: downloaded twice from byte 0 and both copies were corrupt, so the registry or a proxy on the way serves bad data; nothing was stored: %w",
				desc.Digest, p.repoName(), err))
		}
		return p.failed(ev, fmt.Errorf("fetch blob %s from %s: %w", desc.Digest, p.repoName(), err))
	}
}

func (p *puller) failed(ev Event, err error) error {
	ev.Kind, ev.Err = Failed, err
	p.emit(ev)
	return err
}

// transfer downloads desc into its ingest, from the sources not in skip,
// and commits it. It returns the sources that supplied bytes.
func (p *puller) transfer(ctx context.Context, desc ocispec.Descriptor, name string, skip map[string]bool) ([]source, error) {
	w, err := p.st.Writer(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer w.Close() // keeps the partial for the next pull; a no-op after Commit

	ev := Event{Digest: desc.Digest, Name: name, Total: desc.Size, Offset: w.Offset()}
	if w.Offset() > 0 {
		p.resumed.Add(1)
		ev.Kind = Resumed
		p.emit(ev)
	}
	ev.Kind = Started
	p.emit(ev)

	var used []source
	srcs := p.usable(skip)
	buf := make([]byte, min(bufferSize, desc.Size))
	dl := &download{p: p, desc: desc, name: name, w: w, buf: buf}
	for i, failures := 0, 0; w.Offset() < desc.Size; {
		src := srcs[i]
		before := w.Offset()
		aerr := dl.attempt(ctx, src)
		if w.Offset() > before {
			used = append(used, src)
			failures = 0 // progress: the link works, it is just flaky
		}
		if aerr == nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return used, fmt.Errorf("interrupted at offset %d of %d, the partial is kept: %w", w.Offset(), desc.Size, err)
		}
		failures++
		ev := Event{Digest: desc.Digest, Name: name, Kind: Retrying, Total: desc.Size, Err: aerr}
		// A mirror that asks us to come back later is not waited for: the
		// origin is the alternative.
		if src.mirror && (aerr.kind != transient || aerr.retryAfter > 0 || failures >= mirrorAttempts) {
			if aerr.kind == unreachable {
				p.markDown(src)
			}
			i, failures = i+1, 0
			p.retries.Add(1)
			ev.Offset, ev.Err = w.Offset(), fmt.Errorf("%w; trying the next source", aerr)
			p.emit(ev)
			continue
		}
		if aerr.kind == fatal || aerr.kind == notFound {
			return used, aerr
		}
		if failures >= p.opts.MaxAttempts {
			return used, fmt.Errorf("gave up after %d attempts without progress: %w; the partial (%d of %d bytes) is kept and the next pull resumes there",
				failures, aerr, w.Offset(), desc.Size)
		}
		wait := p.opts.Backoff(failures)
		if aerr.kind == restart {
			wait = 0 // the ingest was reset: nothing to wait for
		}
		if aerr.retryAfter > 0 {
			// A little jitter on top, so that nodes told the same time do
			// not all come back in the same instant.
			wait = aerr.retryAfter + time.Duration(float64(aerr.retryAfter)*0.1*rand.Float64())
		}
		p.retries.Add(1)
		ev.Offset = w.Offset()
		p.emit(ev)
		if err := sleep(ctx, wait); err != nil {
			return used, fmt.Errorf("interrupted at offset %d of %d, the partial is kept: %w", w.Offset(), desc.Size, err)
		}
	}
	return used, w.Commit(ctx)
}

// failure classifies a failed attempt.
type failure int

const (
	transient   failure = iota // retry here after a backoff: 5xx, 429, cuts, stalls
	restart                    // the ingest was reset to 0; retry here at once
	unreachable                // cannot connect: a mirror is skipped for the rest of the pull
	notFound                   // 404: a mirror falls through, the origin fails
	fatal                      // retrying cannot help: 401, 403, other 4xx, TLS, disk
)

type attemptError struct {
	kind       failure
	retryAfter time.Duration
	err        error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

func failf(kind failure, format string, args ...any) *attemptError {
	return &attemptError{kind: kind, err: fmt.Errorf(format, args...)}
}

// errStalled cancels a request that received nothing for StallTimeout.
var errStalled = errors.New("stalled")

// download is one blob being written to its ingest, across attempts.
type download struct {
	p        *puller
	desc     ocispec.Descriptor
	name     string
	w        *store.Writer
	buf      []byte
	lastEmit time.Time
}

// attempt sends one GET for the rest of the blob and writes what arrives.
//
// It issues its own request rather than using oras-go's Blobs().Fetch: that
// one starts with a GET of the whole blob and only seeks (with a second,
// Range request) afterwards, does not check the Content-Range start, and
// treats every status alike; here each response is judged on its own.
func (d *download) attempt(ctx context.Context, src source) *attemptError {
	p, desc, w := d.p, d.desc, d.w
	off := w.Offset()
	ref := p.ref
	ref.Reference = desc.Digest.String()

	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(p.opts.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()

	req, err := http.NewRequestWithContext(auth.AppendRepositoryScope(actx, ref, auth.ActionPull), http.MethodGet, src.blobURL(ref), nil)
	if err != nil {
		return failf(fatal, "%s: build request: %w", src, err)
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := p.blob.Do(req)
	stall.Stop()
	if err != nil {
		return d.networkError(actx, src, err)
	}
	defer resp.Body.Close()

	var discard int64
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != desc.Size {
			return failf(fatal, "%s sent %d bytes for a blob of %d bytes: it is not this blob", src, resp.ContentLength, desc.Size)
		}
		// The server ignored Range and sends the blob from byte 0. Read and
		// drop what the ingest already holds instead of resetting it: the
		// bytes cross the link either way, but this keeps the partial if
		// this body is cut before reaching it, and skips rewriting and
		// rehashing it. The store verifies the digest at commit anyway.
		discard = off
	case http.StatusPartialContent:
		cr, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err == nil && (cr.First != off || (cr.Total >= 0 && cr.Total != desc.Size)) {
			err = fmt.Errorf("Content-Range %q does not continue at %d of %d", resp.Header.Get("Content-Range"), off, desc.Size)
		}
		if err != nil {
			return d.reset(fmt.Errorf("%s answered Range bytes=%d- with %v; restarting the blob from 0", src, off, err))
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return d.reset(fmt.Errorf("%s refused Range bytes=%d- (HTTP 416): its blob is shorter than %d bytes; restarting from 0", src, off, desc.Size))
	default:
		return statusError(src, resp)
	}

	body := newMeter(actx, &stallReader{r: resp.Body, t: stall, d: p.opts.StallTimeout}, p.limit, func(n int) { p.fetched.Add(int64(n)) })
	for discard > 0 {
		n, err := body.Read(d.buf[:min(int64(len(d.buf)), discard)])
		discard -= int64(n)
		if err != nil {
			return d.cut(actx, src, err)
		}
	}
	for w.Offset() < desc.Size {
		n, rerr := body.Read(d.buf[:min(int64(len(d.buf)), desc.Size-w.Offset())])
		if n > 0 {
			if _, err := w.Write(d.buf[:n]); err != nil {
				return failf(fatal, "write to the blob store: %w", err)
			}
			d.progress()
		}
		if rerr != nil && w.Offset() < desc.Size {
			return d.cut(actx, src, rerr)
		}
	}
	return nil
}

func (d *download) reset(err error) *attemptError {
	if rerr := d.w.Reset(); rerr != nil {
		return failf(fatal, "%w: %w", err, rerr)
	}
	return &attemptError{kind: restart, err: err}
}

func (d *download) progress() {
	if now := time.Now(); now.Sub(d.lastEmit) >= progressEvery {
		d.lastEmit = now
		d.p.emit(Event{Digest: d.desc.Digest, Name: d.name, Kind: Progress, Offset: d.w.Offset(), Total: d.desc.Size})
	}
}

// cut describes a body that ended before the blob did.
func (d *download) cut(ctx context.Context, src source, err error) *attemptError {
	at := d.w.Offset()
	switch {
	case errors.Is(context.Cause(ctx), errStalled):
		return failf(transient, "%s sent nothing for %s at offset %d of %d", src, d.p.opts.StallTimeout, at, d.desc.Size)
	case err == io.EOF:
		return failf(transient, "%s ended the body at offset %d of %d", src, at, d.desc.Size)
	}
	return failf(transient, "%s: connection lost at offset %d of %d: %w", src, at, d.desc.Size, err)
}

func (d *download) networkError(ctx context.Context, src source, err error) *attemptError {
	if errors.Is(context.Cause(ctx), errStalled) {
		// A mirror that says nothing at all is not waited for again in
		// this pull: every blob would pay StallTimeout for it.
		kind := transient
		if src.mirror {
			kind = unreachable
		}
		return failf(kind, "%s did not answer within %s", src, d.p.opts.StallTimeout)
	}
	var (
		certErr *tls.CertificateVerificationError
		authErr x509.UnknownAuthorityError
		tokErr  *errcode.ErrorResponse
	)
	switch {
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return failf(fatal, "%s: %w; the registry wants credentials and none are configured for %s: give the puller pull credentials", src, err, src.host)
	case errors.As(err, &tokErr) && tokErr.StatusCode >= 400 && tokErr.StatusCode < 500 &&
		tokErr.StatusCode != http.StatusRequestTimeout && tokErr.StatusCode != http.StatusTooManyRequests:
		// The token server refused: retrying with the same credentials
		// cannot help.
		return failf(fatal, "%s: authentication failed: %w; check the pull credentials for %s", src, err, src.host)
	case errors.As(err, &certErr), errors.As(err, &authErr):
		return failf(fatal, "%s: TLS: %w; install the registry's CA on the node, or use plain HTTP if the registry has no TLS", src, err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return failf(fatal, "%s: %w; it serves plain HTTP: set PlainHTTP (or http:// for a mirror)", src, err)
	case isUnreachable(err):
		return failf(unreachable, "%s: cannot connect: %w", src, err)
	}
	return failf(transient, "%s: %w", src, err)
}

// isSilent reports a source that cannot be reached or did not answer
// within the request timeout: a mirror like that is skipped for the rest
// of the pull.
func isSilent(err error) bool {
	return isUnreachable(err) || errors.Is(err, errRequestTimeout)
}

// isUnreachable reports a failure to reach the host at all, as opposed to
// a connection lost on the way.
func isUnreachable(err error) bool {
	var (
		opErr  *net.OpError
		dnsErr *net.DNSError
	)
	return errors.As(err, &dnsErr) || errors.As(err, &opErr) && opErr.Op == "dial"
}

// statusError turns a response that carries no blob into an attemptError.
func statusError(src source, resp *http.Response) *attemptError {
	code := resp.StatusCode
	what := fmt.Sprintf("%s answered HTTP %d %s", src, code, http.StatusText(code))
	if msg := registryMessage(resp.Body); msg != "" {
		what += " (" + msg + ")"
	}
	switch {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		e := failf(transient, "%s", what)
		e.retryAfter, _ = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return e
	case code == http.StatusRequestTimeout || code >= 500:
		return failf(transient, "%s", what)
	case code == http.StatusNotFound:
		return failf(notFound, "%s: %w: the manifest refers to a blob this registry does not have; push the artifact again, or check that the registry (or mirror) is complete", what, errdef.ErrNotFound)
	case code == http.StatusUnauthorized:
		return failf(fatal, "%s: the registry did not accept the credentials; check the pull credentials for %s", what, src.host)
	case code == http.StatusForbidden:
		return failf(fatal, "%s: the credentials for %s may not pull this repository; ask its owner for pull access", what, src.host)
	}
	return failf(fatal, "%s", what)
}

// stallReader arms the stall timer while it waits for the network, and only
// then: time spent in the bandwidth limiter is not a stall.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.t.Reset(s.d)
	n, err := s.r.Read(p)
	s.t.Stop()
	return n, err
}
