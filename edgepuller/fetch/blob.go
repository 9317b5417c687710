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
// trying opts.Peers and opts.Mirrors first, resuming a partial left by an
// earlier call and verifying the digest. A blob already in st is not
// downloaded.
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
	defer p.close()
	ctx, cancel := withPullTimeout(ctx, p.opts)
	defer cancel()
	defer p.announce(desc)()
	err = p.fetchBlob(ctx, desc, desc.Annotations[ocispec.AnnotationTitle])
	return p.result(), explainTimeout(ctx, p.opts, err)
}

// puller holds what the downloads of one Pull share: clients, sources,
// the bandwidth limit and the counters.
type puller struct {
	st    *store.Store
	ref   registry.Reference // the repository at the origin
	opts  Options
	srcs  []source // peers in order, then mirrors in order, then the origin
	meta  remote.Client
	blob  remote.Client
	limit *Limiter
	// originLatency times the origin's answers to metadata requests:
	// segments are for a long link.
	originLatency *latency
	// peerMeta and peerBlob reach peers; peerTr is their transport, closed
	// with the pull. Nil without peers.
	peerMeta, peerBlob remote.Client
	peerTr             *http.Transport

	fetched, reused                    atomic.Int64
	fromOrigin, fromPeers, fromMirrors atomic.Int64
	resumed, retries                   atomic.Int64

	mu      sync.Mutex
	streams int                    // blob downloads running
	extra   int                    // segment streams running beyond the first of their blob
	pending int                    // layers of the pull not done yet, running or waiting
	noRange bool                   // the origin ignored a bounded Range: no segments
	down    map[string]bool        // mirrors that could not be reached during this pull
	dropped map[string]DroppedPeer // peers dropped during this pull, by node
	drops   []string               // their nodes, in the order they were dropped
}

func newPuller(st *store.Store, ref registry.Reference, opts Options) (*puller, error) {
	opts = opts.withDefaults()
	srcs, err := sources(ref, opts)
	if err != nil {
		return nil, err
	}
	meta, blob := clients(opts.Client)
	lat := &latency{c: WithRequestTimeout(meta, opts.RequestTimeout), host: ref.Host()}
	p := &puller{
		st: st, ref: ref, opts: opts, srcs: srcs, meta: lat, blob: blob, originLatency: lat,
		limit:   opts.limiter(),
		down:    map[string]bool{},
		dropped: map[string]DroppedPeer{},
	}
	if len(srcs) > 0 && srcs[0].peer {
		p.peerTr = newPeerTransport(opts.PeerTLS)
		pc := newPeerClient(p.peerTr)
		p.peerMeta, p.peerBlob = WithRequestTimeout(pc, opts.RequestTimeout), pc
	}
	return p, nil
}

// close lets go of the connections to peers.
func (p *puller) close() {
	if p.peerTr != nil {
		p.peerTr.CloseIdleConnections()
	}
}

// metaClient and blobClient are the clients for s: the registry client,
// with its credentials, for mirrors and the origin; the peer client, with
// none, for peers.
func (p *puller) metaClient(s source) remote.Client {
	if s.peer {
		return p.peerMeta
	}
	return p.meta
}

func (p *puller) blobClient(s source) remote.Client {
	if s.peer {
		return p.peerBlob
	}
	return p.blob
}

// received counts n bytes that arrived from s.
func (p *puller) received(s source, n int64) {
	p.fetched.Add(n)
	switch {
	case s.peer:
		p.fromPeers.Add(n)
	case s.mirror:
		p.fromMirrors.Add(n)
	default:
		p.fromOrigin.Add(n)
	}
}

func (p *puller) result() Result {
	p.mu.Lock()
	var dropped []DroppedPeer
	for _, node := range p.drops {
		dropped = append(dropped, p.dropped[node])
	}
	p.mu.Unlock()
	return Result{
		Fetched:     p.fetched.Load(),
		FromOrigin:  p.fromOrigin.Load(),
		FromPeers:   p.fromPeers.Load(),
		FromMirrors: p.fromMirrors.Load(),
		Dropped:     dropped,
		Reused:      p.reused.Load(),
		Resumed:     int(p.resumed.Load()),
		Retries:     int(p.retries.Load()),
	}
}

func (p *puller) repoName() string { return p.ref.Host() + "/" + p.ref.Repository }

func (p *puller) emit(e Event) {
	if p.opts.Progress != nil {
		p.opts.Progress(e)
	}
}

// announce tells Options.Announce about desc and returns its done func
// (a no-op without Announce).
func (p *puller) announce(desc ocispec.Descriptor) (done func()) {
	if p.opts.Announce == nil {
		return func() {}
	}
	if done := p.opts.Announce(desc); done != nil {
		return sync.OnceFunc(done)
	}
	return func() {}
}

// usable lists the sources to try, leaving out the peers dropped and the
// mirrors found down during this pull, and the mirrors in skip.
func (p *puller) usable(skip map[string]bool) []source {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []source
	for _, s := range p.srcs {
		if p.goneLocked(s) || s.mirror && skip[s.host] {
			continue
		}
		out = append(out, s)
	}
	return out
}

// gone reports a peer dropped or a mirror found down since the caller
// listed its sources: another blob of the pull found out.
func (p *puller) gone(s source) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.goneLocked(s)
}

func (p *puller) goneLocked(s source) bool {
	switch {
	case s.peer:
		_, ok := p.dropped[s.node]
		return ok
	case s.mirror:
		return p.down[s.host]
	}
	return false
}

func (p *puller) markDown(s source) {
	p.mu.Lock()
	p.down[s.host] = true
	p.mu.Unlock()
}

// drop stops using the peer s for the rest of the pull. A peer is listed
// once, with the first reason found, unless it turns out later that bytes
// it served before it stalled or went away were corrupt: that is what the
// operator needs to know.
func (p *puller) drop(s source, reason string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if was, ok := p.dropped[s.node]; ok {
		if reason == PeerCorrupt && was.Reason != PeerCorrupt {
			p.dropped[s.node] = DroppedPeer{Node: s.node, Reason: reason, Err: err}
		}
		return
	}
	p.dropped[s.node] = DroppedPeer{Node: s.node, Reason: reason, Err: err}
	p.drops = append(p.drops, s.node)
}

// dropOnError drops the peer s if err, from a manifest request, says that
// it should be (see peerReason); a 404 or a 5xx only passes to the next
// source.
func (p *puller) dropOnError(s source, err error) {
	if !s.peer {
		if s.mirror && isSilent(err) {
			p.markDown(s)
		}
		return
	}
	if reason := peerReason(err); reason != "" {
		p.drop(s, reason, fmt.Errorf("%s: %w", s, err))
	}
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
	skip := map[string]bool{}
	for originCopies := 0; ; {
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
		case errors.Is(err, content.ErrMismatchedDigest):
			// The store has dropped the bad copy; fetch again from 0, not
			// from a peer or mirror that supplied any of the bad bytes.
			// Each such copy rules out one more source, so a site of lying
			// peers ends at the origin. A copy the origin alone supplied is
			// fetched once more, so that a single corrupted transfer does
			// not fail the pull.
			if !p.blame(desc, used, skip) {
				if originCopies++; originCopies > 1 {
					return p.failed(ev, fmt.Errorf("fetch blob %s from %s: downloaded twice from byte 0 and both copies were corrupt, so the registry or a proxy on the way serves bad data; nothing was stored: %w",
						desc.Digest, p.repoName(), err))
				}
			}
			p.retries.Add(1)
			ev.Kind, ev.Offset, ev.Err = Retrying, 0, err
			p.emit(ev)
			continue
		}
		return p.failed(ev, fmt.Errorf("fetch blob %s from %s: %w", desc.Digest, p.repoName(), err))
	}
}

// blame rules out the peers and mirrors that supplied bytes of a copy of
// desc that did not match its digest: a peer is dropped for the pull, a
// mirror skipped for this blob. It reports whether any was.
func (p *puller) blame(desc ocispec.Descriptor, used []source, skip map[string]bool) bool {
	blamed := false
	for _, s := range used {
		switch {
		case s.peer:
			p.drop(s, PeerCorrupt, fmt.Errorf("%s served bytes of blob %s that did not match its digest", s, desc.Digest))
			blamed = true
		case s.mirror:
			skip[s.host] = true
			blamed = true
		}
	}
	return blamed
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

	p.mu.Lock()
	p.streams++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.streams--
		p.mu.Unlock()
	}()

	var used []source
	srcs := p.usable(skip)
	buf := make([]byte, min(bufferSize, desc.Size))
	dl := &download{p: p, desc: desc, name: name, w: w, buf: buf}
	for i, failures := 0, 0; w.Offset() < desc.Size; {
		src := srcs[i]
		if !src.origin() && p.gone(src) {
			i, failures = i+1, 0 // another blob of this pull found it out
			continue
		}
		before := w.Offset()
		var aerr *attemptError
		if n := dl.segmentsFor(src); n > 1 {
			aerr = dl.segmented(ctx, src, n)
			p.releaseExtra(n - 1)
		} else {
			aerr = dl.attempt(ctx, src)
		}
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
		if aerr.kind == local {
			return used, aerr
		}
		failures++
		ev := Event{Digest: desc.Digest, Name: name, Kind: Retrying, Total: desc.Size, Err: aerr}
		if p.passOn(src, aerr, failures) {
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
		if aerr.kind == restart || aerr.kind == fallback {
			wait = 0 // the ingest was reset, or one stream takes over: nothing to wait for
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

// passOn decides, after a failed attempt at a peer or a mirror, whether
// to go on to the next source, and drops the peer or marks the mirror down
// when the failure says so. The origin is never passed on: it is the last.
// A shortcut is not waited for: a mirror that asks us to come back later,
// or fails a few times, or a peer that does not hold the blob, and the
// next source takes over; a peer that misbehaves is dropped at once.
func (p *puller) passOn(src source, aerr *attemptError, failures int) bool {
	switch {
	case src.peer:
		if reason := aerr.peerReason(); reason != "" {
			p.drop(src, reason, aerr)
			return true
		}
	case src.mirror:
		if aerr.kind == unreachable {
			p.markDown(src)
		}
	default:
		return false
	}
	return aerr.kind != transient || aerr.retryAfter > 0 || failures >= mirrorAttempts
}

// failure classifies a failed attempt.
type failure int

const (
	transient   failure = iota // retry here after a backoff: 5xx, 429, cuts, stalls
	restart                    // the ingest was reset to 0; retry here at once
	fallback                   // segments do not work with this source; retry here at once with one stream
	unreachable                // cannot connect: a mirror is skipped, a peer dropped, for the rest of the pull
	notFound                   // 404: a peer or mirror falls through, the origin fails
	fatal                      // retrying cannot help: 401, 403, other 4xx, TLS
	local                      // this node's disk failed: no source can help
)

type attemptError struct {
	kind       failure
	retryAfter time.Duration
	// reason, for a peer, is why it is dropped when kind alone does not
	// say it (see peerReason).
	reason string
	err    error
}

// peerReason is why a peer that failed so is dropped for the pull, or ""
// if it is not: a 404 (it does not hold the blob) or a transient failure
// only passes to the next source.
func (e *attemptError) peerReason() string {
	switch {
	case e.reason != "":
		return e.reason
	case e.kind == unreachable:
		return PeerUnreachable
	case e.kind == fatal:
		return PeerRefused
	}
	return ""
}

// peerReason says why a peer whose manifest request failed with err is
// dropped, or "" if it is not (see attemptError.peerReason).
func peerReason(err error) string {
	var (
		aerr    *attemptError
		respErr *errcode.ErrorResponse
	)
	switch {
	case errors.As(err, &aerr):
		return aerr.peerReason()
	case errors.Is(err, content.ErrMismatchedDigest), errors.Is(err, content.ErrTrailingData):
		return PeerCorrupt
	case errors.Is(err, errRequestTimeout):
		return PeerStalled
	case isUnreachable(err):
		return PeerUnreachable
	case isTLSRefusal(err):
		return PeerRefused
	case errors.As(err, &respErr):
		if c := respErr.StatusCode; c == http.StatusNotFound || c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500 {
			return ""
		}
		return PeerRefused
	}
	return ""
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
		return failf(local, "%s: build request: %w", src, err)
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := p.blobClient(src).Do(req)
	stall.Stop()
	if err != nil {
		return d.networkError(actx, src, err)
	}
	defer resp.Body.Close()

	var discard int64
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != desc.Size {
			e := failf(fatal, "%s sent %d bytes for a blob of %d bytes: it is not this blob", src, resp.ContentLength, desc.Size)
			e.reason = PeerCorrupt
			return e
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

	body := newMeter(actx, &stallReader{r: resp.Body, t: stall, d: p.opts.StallTimeout}, p.limit, func(n int) { p.received(src, int64(n)) })
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
				return failf(local, "write to the blob store: %w", err)
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
		return failf(local, "%w: %w", err, rerr)
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
		e := failf(transient, "%s sent nothing for %s at offset %d of %d", src, d.p.opts.StallTimeout, at, d.desc.Size)
		e.reason = PeerStalled
		return e
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
		if !src.origin() {
			kind = unreachable
		}
		e := failf(kind, "%s did not answer within %s", src, d.p.opts.StallTimeout)
		e.reason = PeerStalled
		return e
	}
	if src.peer {
		return peerNetworkError(src, err)
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

// peerNetworkError classifies a request to a peer that got no response.
func peerNetworkError(src source, err error) *attemptError {
	switch {
	case isTLSRefusal(err):
		e := failf(fatal, "%s: TLS: %w; every puller of the site needs a certificate from the site CA (the chart's peer Secret)", src, err)
		e.reason = PeerRefused
		return e
	case isUnreachable(err):
		return failf(unreachable, "%s: cannot connect: %w", src, err)
	}
	return failf(transient, "%s: %w", src, err)
}

// isTLSRefusal reports a TLS handshake that failed on either side: a
// server certificate this node does not trust, a server that refused this
// node's certificate (its alert), or a server that speaks no TLS.
func isTLSRefusal(err error) bool {
	var (
		certErr *tls.CertificateVerificationError
		authErr x509.UnknownAuthorityError
		hostErr x509.HostnameError
		recErr  tls.RecordHeaderError
		opErr   *net.OpError
	)
	return errors.As(err, &certErr) || errors.As(err, &authErr) || errors.As(err, &hostErr) || errors.As(err, &recErr) ||
		errors.As(err, &opErr) && opErr.Op == "remote error" ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
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
	if src.peer {
		return peerStatusError(what, code)
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

// peerStatusError classifies a peer's answer that carries no blob: a peer
// that does not hold it passes to the next source, a busy one is not
// waited for, any other answer is a refusal.
func peerStatusError(what string, code int) *attemptError {
	switch {
	case code == http.StatusNotFound:
		return failf(notFound, "%s: it does not hold the blob: %w", what, errdef.ErrNotFound)
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable || code == http.StatusRequestTimeout || code >= 500:
		return failf(transient, "%s", what)
	}
	e := failf(fatal, "%s: the peer refused the request", what)
	e.reason = PeerRefused
	return e
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
