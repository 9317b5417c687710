package peer

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/store"
)

// Options configures a Server. The zero value serves with the defaults,
// but Serve needs TLS.
type Options struct {
	// TLS is the server side of the site's mutual TLS (see LoadTLS). Serve
	// refuses to run without it, or with one that does not require and
	// verify client certificates.
	TLS *tls.Config
	// Hold is how long a request for a digest this node neither holds nor
	// fetches waits for a pull to announce it before the answer is 404:
	// the seed and its followers start their pulls at about the same time,
	// and a follower that asks first should follow, not fall through to
	// the origin. If <= 0, 3s is used.
	Hold time.Duration
	// Log receives a line per stream cut short and, at debug level, per
	// request. If nil, nothing is logged.
	Log *slog.Logger
	// Metrics, if set, registers barge_edgepuller_peer_served_bytes_total
	// and barge_edgepuller_peer_requests_total{code}.
	Metrics prometheus.Registerer
}

// DefaultHold is the default of Options.Hold.
const DefaultHold = 3 * time.Second

// Server serves a node's store to its site's peers. It is safe for
// concurrent use.
type Server struct {
	st      *store.Store
	opts    Options
	log     *slog.Logger
	metrics *metrics

	mu        sync.Mutex
	announced map[digest.Digest]*announcement
	changed   chan struct{} // closed and replaced on every announcement change
}

// announcement is a blob one or more of this node's pulls are fetching.
type announcement struct {
	desc ocispec.Descriptor
	refs int
}

// New returns a server for st. It fails only if Options.Metrics refuses
// its series (registered twice).
func New(st *store.Store, opts Options) (*Server, error) {
	if opts.Hold <= 0 {
		opts.Hold = DefaultHold
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, fmt.Errorf("peer server: register metrics: %w", err)
	}
	return &Server{st: st, opts: opts, log: log, metrics: m,
		announced: map[digest.Digest]*announcement{}, changed: make(chan struct{})}, nil
}

// Announce tells the server that this node is about to fetch desc, so that
// a peer asking for it is held and then follows the download rather than
// told 404; done withdraws it, once the pull no longer fetches the blob.
// It has the signature of fetch.Options.Announce. A blob announced by
// several pulls stays announced until each has called its done.
//
// A negative desc.Size means the size is not known yet (a manifest pulled
// by digest): such a blob is served once committed, and a request for it
// waits for that, past Hold, as long as it stays announced.
func (s *Server) Announce(desc ocispec.Descriptor) (done func()) {
	if desc.Digest.Algorithm() != digest.SHA256 || desc.Digest.Validate() != nil {
		return func() {}
	}
	desc.Size = max(desc.Size, -1)
	s.mu.Lock()
	a := s.announced[desc.Digest]
	if a == nil {
		a = &announcement{desc: desc}
		s.announced[desc.Digest] = a
	} else if a.desc.Size < 0 {
		a.desc = desc // the size may be known now
	}
	a.refs++
	s.notifyLocked()
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if a.refs--; a.refs == 0 {
				delete(s.announced, desc.Digest)
			}
			s.notifyLocked()
		})
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// announcement returns the announced descriptor of d, if any, and a
// channel closed at the next change of announcements.
func (s *Server) announcement(d digest.Digest) (ocispec.Descriptor, bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.announced[d]; a != nil {
		return a.desc, true, s.changed
	}
	return ocispec.Descriptor{}, false, s.changed
}

// Serve serves peers on ln over mutual TLS until ctx ends; streams still
// running are cut then, and their clients resume elsewhere.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.opts.TLS == nil || s.opts.TLS.ClientAuth != tls.RequireAndVerifyClientCert || s.opts.TLS.ClientCAs == nil {
		return errors.New("peer server: peers are served only over mutual TLS: give Options.TLS from LoadTLS")
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second, // also bounds the TLS handshake
		IdleTimeout:       2 * time.Minute,
		// Refused handshakes land here: a peer without a certificate of
		// the site, or a scanner on the LAN.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelInfo),
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(tls.NewListener(ln, s.opts.TLS))
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("peer server on %s: %w", ln.Addr(), err)
}

// Handler is the peer protocol without the listener, for a server the
// caller runs with Options.TLS. It refuses every request that did not come
// over TLS with a verified client certificate.
func (s *Server) Handler() http.Handler { return s }

// ServeHTTP answers one request of the peer protocol.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w}
	start := time.Now()
	defer func() {
		s.metrics.requests.WithLabelValues(strconv.Itoa(rec.status())).Inc()
		s.log.Debug("peer request", "method", r.Method, "path", r.URL.Path, "code", rec.status(),
			"bytes", rec.written, "from", r.RemoteAddr, "took", time.Since(start).Round(time.Millisecond))
	}()
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		writeError(rec, http.StatusUnauthorized, "UNAUTHORIZED", "a peer must present a certificate signed by the site CA")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rec.Header().Set("Allow", "GET, HEAD")
		writeError(rec, http.StatusMethodNotAllowed, "UNSUPPORTED", "peers serve their store read-only: GET and HEAD only")
		return
	}
	rt, d, err := parsePath(r.URL.Path)
	switch {
	case rt == routeNone:
		writeError(rec, http.StatusNotFound, "UNSUPPORTED", "not part of the peer protocol: blobs and manifests by digest only")
	case rt == routeBase:
		rec.Header().Set("Content-Type", "application/json")
		rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		io.WriteString(rec, "{}")
	case err != nil:
		writeError(rec, http.StatusNotFound, unknownCode(rt), err.Error())
	default:
		s.serveDigest(rec, r, rt, d)
	}
}

// serveDigest answers for blob or manifest d: from the committed blob, or
// from its download still running, or 404 once Hold passed without either.
func (s *Server) serveDigest(w *recorder, r *http.Request, rt route, d digest.Digest) {
	committed, desc, err := s.find(r.Context(), d)
	if err != nil {
		if errors.Is(err, errUnknown) {
			writeError(w, http.StatusNotFound, unknownCode(rt), fmt.Sprintf("%s: this node neither holds nor fetches it", d))
		}
		return // the client is gone
	}
	if rt == routeManifest && desc.Size > artifact.MaxManifestBytes {
		writeError(w, http.StatusNotFound, unknownCode(rt), fmt.Sprintf("%s: %d bytes is no manifest", d, desc.Size))
		return
	}
	if committed {
		s.serveCommitted(w, r, rt, desc)
		return
	}
	s.serveArriving(w, r, rt, desc)
}

var errUnknown = errors.New("digest unknown")

// commitPoll is how often a held request looks for a blob committed
// without an announcement (by another process sharing the store).
const commitPoll = 200 * time.Millisecond

// find waits up to Hold for d to be committed or announced, and past it
// while d is announced without a size, for its commit. For a committed
// blob, desc has the size of its file.
func (s *Server) find(ctx context.Context, d digest.Digest) (committed bool, desc ocispec.Descriptor, err error) {
	hold := time.NewTimer(s.opts.Hold)
	defer hold.Stop()
	tick := time.NewTicker(commitPoll)
	defer tick.Stop()
	held := false
	for {
		if size, ok := s.committedSize(d); ok {
			return true, ocispec.Descriptor{Digest: d, Size: size}, nil
		}
		desc, announced, changed := s.announcement(d)
		switch {
		case announced && desc.Size >= 0:
			return false, desc, nil
		case held && !announced:
			return false, ocispec.Descriptor{}, errUnknown
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-hold.C:
			held = true
		case <-ctx.Done():
			return false, ocispec.Descriptor{}, ctx.Err()
		}
	}
}

func (s *Server) committedSize(d digest.Digest) (int64, bool) {
	fi, err := os.Stat(s.st.BlobPath(d))
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	return fi.Size(), true
}

// serveCommitted serves a verified blob from the store, with every Range
// form http.ServeContent knows. Exists hashes the blob again only if its
// file changed since it was verified (a workload wrote through a hard
// link): a node never serves a blob it knows to be damaged.
func (s *Server) serveCommitted(w *recorder, r *http.Request, rt route, desc ocispec.Descriptor) {
	ctx := r.Context()
	if ok, err := s.st.Exists(ctx, desc); err != nil || !ok {
		if err != nil && ctx.Err() == nil {
			s.log.Warn("peer: cannot check a blob", "digest", desc.Digest, "err", err)
		}
		writeError(w, http.StatusNotFound, unknownCode(rt), fmt.Sprintf("%s: this node no longer holds it", desc.Digest))
		return
	}
	rc, err := s.st.Fetch(ctx, desc)
	if err != nil {
		writeError(w, http.StatusNotFound, unknownCode(rt), fmt.Sprintf("%s: this node no longer holds it", desc.Digest))
		return
	}
	defer rc.Close()
	f := rc.(*os.File) // documented by Store.Fetch
	mt := "application/octet-stream"
	if rt == routeManifest {
		// At most artifact.MaxManifestBytes (checked above).
		b, err := io.ReadAll(io.NewSectionReader(f, 0, desc.Size))
		if err != nil {
			writeError(w, http.StatusInternalServerError, "UNKNOWN", fmt.Sprintf("%s: read it: %v", desc.Digest, err))
			return
		}
		mt = artifact.ManifestMediaType(b)
	}
	w.Header().Set("Content-Type", mt)
	w.Header().Set("Docker-Content-Digest", desc.Digest.String())
	w.served = s.metrics.served
	http.ServeContent(w, r, "", time.Time{}, f)
}

// serveArriving serves a blob this node is downloading, as it arrives.
func (s *Server) serveArriving(w *recorder, r *http.Request, rt route, desc ocispec.Descriptor) {
	start, end, partial, err := parseRange(r.Header.Get("Range"), desc.Size)
	if err != nil {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", desc.Size))
		writeError(w, http.StatusRequestedRangeNotSatisfiable, "BLOB_UNKNOWN",
			fmt.Sprintf("%s: range %q is beyond its %d bytes", desc.Digest, r.Header.Get("Range"), desc.Size))
		return
	}
	mt := "application/octet-stream"
	if rt == routeManifest {
		mt = desc.MediaType
		if mt == "" {
			mt = ocispec.MediaTypeImageManifest
		}
	}
	h := w.Header()
	h.Set("Content-Type", mt)
	h.Set("Docker-Content-Digest", desc.Digest.String())
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(end-start, 10))
	code := http.StatusOK
	if partial {
		code = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, desc.Size))
	}
	w.WriteHeader(code)
	if r.Method == http.MethodHead {
		return
	}
	w.served = s.metrics.served
	if err := s.follow(r.Context(), w, desc.Digest, start, end); err != nil && r.Context().Err() == nil {
		// Returning short of Content-Length closes the connection: the
		// client sees a cut body and resumes where it got to.
		s.log.Info("peer: cut a stream short", "digest", desc.Digest, "at", start+w.written, "want", end, "to", r.RemoteAddr, "why", err)
	}
}

// unknownCode is the OCI error code for a digest not served on route rt.
func unknownCode(rt route) string {
	if rt == routeManifest {
		return "MANIFEST_UNKNOWN"
	}
	return "BLOB_UNKNOWN"
}

// writeError answers with an OCI distribution error body.
func writeError(w http.ResponseWriter, code int, ociCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": ociCode, "message": msg}}})
}

// recorder remembers the status code and counts the body bytes.
type recorder struct {
	http.ResponseWriter
	code    int
	written int64
	// served, if set, counts the body bytes: set for blob and manifest
	// bodies, not for error bodies.
	served prometheus.Counter
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.written += int64(n)
	if r.served != nil {
		r.served.Add(float64(n))
	}
	return n, err
}

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}

// Unwrap lets http.ResponseController reach Flush.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
