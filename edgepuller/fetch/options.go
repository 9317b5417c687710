package fetch

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bargeml/barge/artifact"
	"oras.land/oras-go/v2/registry/remote"
)

// Options configures Pull and FetchBlob. The zero value is what production wants.
type Options struct {
	// Concurrency is how many layers are fetched at once; if <= 0, 4 is used.
	Concurrency int
	// LimitRate caps the bytes per second received over all layers of one
	// Pull (or one FetchBlob); 0 means unlimited.
	LimitRate int64
	// Limiter, if set, caps the rate of this Pull together with every other
	// Pull given the same Limiter, such as all the pulls of one node; it
	// takes the place of LimitRate.
	Limiter *Limiter
	// Mirrors are registry hosts (host[:port]; prefix http:// for plain
	// HTTP) tried in order before the origin, like containerd's hosts.toml,
	// for blobs and manifests by digest. Tags are always resolved at the
	// origin, so a stale mirror cannot change which version is pulled. A
	// mirror that fails (cannot connect, 404, 5xx after a few attempts, a
	// Retry-After) falls through to the next one, then to the origin.
	Mirrors []string
	// Peers are other nodes of the site (Peer.Addr is host:port of their
	// puller's peer server) tried in order before the mirrors and the
	// origin, for blobs and manifests by digest, over mutual TLS with
	// PeerTLS; without PeerTLS they are not used. A peer may be fetching
	// the blob itself: it serves the bytes it has and follows its own
	// download, so a node follows its seed at LAN speed. Every byte is
	// verified against its digest: a peer that serves wrong bytes, stalls
	// or cannot be reached is dropped for the rest of the pull (see
	// Result.Dropped) and the next source continues.
	Peers []Peer
	// PeerTLS is the client side of the site's mutual TLS: the peers'
	// CA, this node's certificate, and the peer server name (see package
	// peer).
	PeerTLS *tls.Config
	// Announce, if set, is told about every blob (the manifest first, then
	// the config and the layers once the manifest is known) before it is
	// fetched; the done func it returns is called when the pull no longer
	// fetches it, whether it succeeded or not. The node's peer server uses
	// it to hold a peer's request for a blob this node is about to fetch,
	// rather than answer 404. The manifest of a pull by digest is announced
	// first before anything is known of it but its digest (Size -1), then
	// again, with its size, once resolved; it is in the store once its
	// bytes are verified (a manifest is stored whole).
	Announce func(ocispec.Descriptor) (done func())
	// PlainHTTP reaches the origin over plain HTTP instead of HTTPS.
	PlainHTTP bool
	// Client sends every request and carries credentials. If nil, an
	// auth.Client over retry.DefaultClient is used. Blob downloads use the
	// same client without oras-go's retry.Transport when it is visible (an
	// *auth.Client whose http.Client has one): Fetch retries blobs itself,
	// resuming with Range, and a second retry loop underneath would
	// multiply MaxAttempts and restart cut bodies from their first byte.
	Client remote.Client
	// MaxAttempts bounds the attempts per blob and source without progress:
	// an attempt that received bytes before failing resets the count, so a
	// long download over a link that drops every few minutes still
	// completes. If <= 0, 8 is used. A mirror gets at most 3.
	MaxAttempts int
	// Backoff is the wait before retry number attempt (1 for the first
	// retry) when the registry gives no Retry-After. If nil, an exponential
	// backoff from 200ms to 10s with full jitter is used.
	Backoff func(attempt int) time.Duration
	// StallTimeout is how long a request may go without receiving a byte
	// (response headers or body) before it counts as cut and is resumed.
	// If <= 0, 30s is used.
	StallTimeout time.Duration
	// RequestTimeout bounds every other request, from sending it to reading
	// its body, retries and the token request it needs included: tag and
	// digest lookups (HEAD) and manifests. A registry that accepts the
	// connection and never answers fails the request after it.
	// If <= 0, 1m is used (a 4 MiB manifest at 1 Mbit/s takes 34s).
	RequestTimeout time.Duration
	// Timeout bounds a whole Pull or FetchBlob, whatever the registry does;
	// a pull it cuts keeps its partial downloads and the next pull resumes
	// them. If <= 0, 6h is used: about 2.5 GiB at 1 Mbit/s.
	Timeout time.Duration
	// Check, if set, sees the artifact once its manifest and config are in
	// the store, before any layer is fetched; an error stops the pull there,
	// so that what the caller refuses (an image, say) costs no layer bytes.
	Check func(*artifact.Artifact) error
	// Verify, if set, is asked with the manifest's descriptor as soon as
	// the manifest's bytes match its digest, before the config or any layer
	// is fetched: a signature check that refuses a digest costs no layer
	// bytes on a slow link.
	Verify func(ctx context.Context, manifest ocispec.Descriptor) error
	// Segments is how many Range requests at once one large blob may be
	// downloaded with from the origin, as aria2 and hf_transfer do: one
	// TCP stream over a long link is limited by its window, not by the
	// link. A blob is split only when at least 128 MiB of it is left, into
	// segments of at least 64 MiB, only while fewer than Concurrency
	// streams run in the pull (the layers of a model already fill a
	// link), never from a peer or mirror, never with Announce set (a
	// peer following this node's ingest would read its holes), and not
	// again in a pull once the origin ignored a Range. If <= 0, 4 is used;
	// 1 turns it off.
	Segments int
	// Progress, if set, receives events about every blob. It is called
	// from many goroutines at once and must not block for long.
	Progress func(Event)
}

const (
	defaultConcurrency  = 4
	defaultSegments     = 4
	defaultMaxAttempts  = 8
	defaultStallTimeout = 30 * time.Second
	// DefaultRequestTimeout and DefaultTimeout are the defaults of
	// Options.RequestTimeout and Options.Timeout.
	DefaultRequestTimeout = time.Minute
	DefaultTimeout        = 6 * time.Hour
	// mirrorAttempts caps the attempts without progress on a mirror: it is
	// a shortcut, not the source of truth, and the origin is one step away.
	mirrorAttempts = 3
	// maxRetryAfter caps a registry's Retry-After, so that a bogus "come
	// back tomorrow" does not freeze a node; ctx can always end it sooner.
	maxRetryAfter = 2 * time.Minute
)

func (o Options) limiter() *Limiter {
	if o.Limiter != nil {
		return o.Limiter
	}
	return NewLimiter(o.LimitRate)
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = defaultConcurrency
	}
	if o.Segments <= 0 {
		o.Segments = defaultSegments
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = defaultMaxAttempts
	}
	if o.Backoff == nil {
		o.Backoff = DefaultBackoff
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = defaultStallTimeout
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return o
}

// DefaultBackoff waits a random time between 0 and 200ms·2^(attempt-1),
// capped at 10s ("full jitter"): edge nodes that lost the link together do
// not come back in lockstep.
func DefaultBackoff(attempt int) time.Duration {
	const base, ceiling = 200 * time.Millisecond, 10 * time.Second
	d := ceiling
	if attempt < 16 {
		d = min(ceiling, base<<max(attempt-1, 0))
	}
	return rand.N(d + 1)
}

// EventKind says what happened to a blob.
type EventKind int

const (
	// Started: the download begins; Offset is where (non-zero when resumed).
	Started EventKind = iota + 1
	// Progress: Offset bytes of Total are in the store's ingest.
	Progress
	// Resumed: a partial left by an earlier pull is continued at Offset.
	Resumed
	// Retrying: an attempt failed with Err; the next continues at Offset.
	Retrying
	// Done: the blob is verified and committed.
	Done
	// Skipped: the blob was already in the store (dedup).
	Skipped
	// Failed: the blob could not be fetched; Err says why.
	Failed
)

func (k EventKind) String() string {
	switch k {
	case Started:
		return "started"
	case Progress:
		return "progress"
	case Resumed:
		return "resumed"
	case Retrying:
		return "retrying"
	case Done:
		return "done"
	case Skipped:
		return "skipped"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports progress on one blob.
type Event struct {
	Digest digest.Digest
	// Name is the layer's file title (org.opencontainers.image.title), if any.
	Name   string
	Kind   EventKind
	Offset int64
	Total  int64
	Err    error
}

// Peer is a node of the site that serves its store.
type Peer struct {
	Node string // node name, for reports
	Addr string // host:port of its peer server
}

// DroppedPeer is a peer a pull stopped using, and why.
type DroppedPeer struct {
	Node   string
	Reason string // PeerCorrupt, PeerStalled, PeerUnreachable or PeerRefused
	Err    error
}

// Why a peer is dropped (DroppedPeer.Reason).
const (
	// PeerCorrupt: it served bytes that did not match their digest.
	PeerCorrupt = "Corrupt"
	// PeerStalled: it sent nothing for StallTimeout.
	PeerStalled = "Stalled"
	// PeerUnreachable: it could not be connected to.
	PeerUnreachable = "Unreachable"
	// PeerRefused: the TLS handshake failed, or it refused the request
	// (an HTTP error other than 404 and 5xx).
	PeerRefused = "Refused"
)

// Result sums up what a Pull or FetchBlob did.
type Result struct {
	// Fetched is the bytes received from the network: manifest, config and
	// blob bodies, including bytes received and then discarded. It is
	// FromOrigin + FromPeers + FromMirrors.
	Fetched int64
	// FromOrigin, FromPeers and FromMirrors split Fetched by source.
	FromOrigin, FromPeers, FromMirrors int64
	// Dropped lists the peers this pull stopped using.
	Dropped []DroppedPeer
	// Reused is the bytes of blobs that were already in the store.
	Reused int64
	// Resumed counts blobs continued from a partial left by an earlier pull.
	Resumed int
	// Retries counts attempts after the first, over all blobs.
	Retries int
}

// ParseBytes reads a byte count or rate as people write it: 2M, 500K,
// 1.5G, 10Gi (binary units).
func ParseBytes(s string) (int64, error) {
	num := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	num = strings.TrimSuffix(num, "I") // 2Mi
	mult := int64(1)
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			num = num[:n-1]
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%q is not a size: write bytes with an optional K, M, G or T suffix, such as 2M", s)
	}
	return int64(f * float64(mult)), nil
}
