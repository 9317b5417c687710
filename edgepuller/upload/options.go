package upload

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/opencontainers/go-digest"
)

// Options configures a Repository. The zero value uploads in 4 MiB chunks
// and resumes within one process only.
type Options struct {
	// StateDir holds one small file per unfinished chunked upload (its
	// session URL and the offset the registry acknowledged), so that
	// another process, after a kill or a reboot, resumes it. If empty,
	// an upload resumes after a cut within the same call only.
	StateDir string
	// ChunkSize is the body of one PATCH. A registry that drops a chunk
	// cut midway costs at most this much again. If <= 0, 4 MiB is used:
	// a cut at 50% of 256 MiB then costs at most 1.02x.
	ChunkSize int64
	// Threshold is the smallest blob sent in chunks; smaller ones go by
	// the repository's ordinary two-request push, as a restart costs
	// little. If <= 0, 2 × ChunkSize is used.
	Threshold int64
	// MaxAttempts bounds the attempts without progress on one blob: an
	// attempt that moved the registry's offset resets the count. If <= 0,
	// 8 is used.
	MaxAttempts int
	// Backoff is the wait before retry number attempt (1 for the first).
	// If nil, an exponential backoff from 200ms to 10s with full jitter
	// is used.
	Backoff func(attempt int) time.Duration
	// StallTimeout is how long one request may go without sending a body
	// byte or, once the body is sent, without an answer, before it counts
	// as cut. If <= 0, 60s is used.
	StallTimeout time.Duration
	// Log receives debug lines about resumes and restarts. If nil, they
	// are dropped.
	Log *slog.Logger
	// Progress, if set, receives events about every chunked upload. It is
	// called from the goroutines that upload and must not block for long.
	Progress func(Event)
}

const (
	defaultChunkSize    = 4 << 20
	defaultMaxAttempts  = 8
	defaultStallTimeout = 60 * time.Second
	// maxRestarts bounds how often one call starts a new session after
	// the registry lost the previous one.
	maxRestarts = 3
)

func (o Options) withDefaults() Options {
	if o.ChunkSize <= 0 {
		o.ChunkSize = defaultChunkSize
	}
	if o.Threshold <= 0 {
		o.Threshold = 2 * o.ChunkSize
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = defaultMaxAttempts
	}
	if o.Backoff == nil {
		o.Backoff = defaultBackoff
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = defaultStallTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// defaultBackoff waits a random time between 0 and 200ms·2^(attempt-1),
// capped at 10s, so that nodes that lost the link together do not come
// back in lockstep.
func defaultBackoff(attempt int) time.Duration {
	const base, ceiling = 200 * time.Millisecond, 10 * time.Second
	d := ceiling
	if attempt < 16 {
		d = min(ceiling, base<<max(attempt-1, 0))
	}
	return rand.N(d + 1)
}

// EventKind says what happened to an upload.
type EventKind int

const (
	// Started: a new upload session begins at Offset 0.
	Started EventKind = iota + 1
	// Resumed: a session left by an earlier call or process continues at
	// Offset, the registry's.
	Resumed
	// Progress: the registry acknowledged Offset bytes of Total.
	Progress
	// Retrying: a request failed with Err; the upload continues at the
	// registry's offset after a backoff.
	Retrying
	// Restarted: the registry lost the session (Err says how); a new one
	// begins at 0.
	Restarted
	// Done: the registry has the blob and verified its digest.
	Done
)

func (k EventKind) String() string {
	switch k {
	case Started:
		return "started"
	case Resumed:
		return "resumed"
	case Progress:
		return "progress"
	case Retrying:
		return "retrying"
	case Restarted:
		return "restarted"
	case Done:
		return "done"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports on one chunked upload.
type Event struct {
	Digest digest.Digest
	Kind   EventKind
	Offset int64
	Total  int64
	Err    error
}
