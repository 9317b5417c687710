package agent

import (
	"context"
	"reflect"

	"github.com/opencontainers/go-digest"

	"github.com/bargeml/barge/edgepuller/fetch"
)

// Source delivers the desired artifacts: a file in standalone mode, the
// node's NodeArtifacts in the Kubernetes mode.
type Source interface {
	// Watch calls set with the full desired list when it first knows it and
	// whenever it changes, until ctx ends. set does not block. An error
	// that ends Watch early is logged; the agent goes on with the last list.
	Watch(ctx context.Context, set func([]Desired)) error
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, set func([]Desired)) error

// Watch calls f.
func (f SourceFunc) Watch(ctx context.Context, set func([]Desired)) error { return f(ctx, set) }

// Reporter receives the status of each artifact whenever it changes, and
// during a pull about once a second. It is called from several goroutines
// at once and must not block for long: a reporter that talks to a server
// queues.
type Reporter interface {
	Report(Status)
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(Status)

// Report calls f.
func (f ReporterFunc) Report(s Status) { f(s) }

// Phase is where an artifact stands.
type Phase string

const (
	// Pending: known, not being pulled yet (waiting for a free slot, or
	// nothing tried yet).
	Pending Phase = "Pending"
	// Pulling: bytes are on their way.
	Pulling Phase = "Pulling"
	// Ready: the desired version is current.
	Ready Phase = "Ready"
	// Failed: the last attempt failed; it is retried with backoff. An
	// older version may still be current (see Status.Digest).
	Failed Phase = "Failed"
)

// Phases lists every phase, in the order above.
var Phases = []Phase{Pending, Pulling, Ready, Failed}

// Status is one artifact's state on this node.
type Status struct {
	Name      string
	Reference string
	Phase     Phase
	// Digest is the manifest digest of the version current on disk, if any:
	// during a rollout or after a failure it is the version still served.
	Digest digest.Digest
	// Path is the directory workloads read, root/artifacts/<name>/current,
	// set once a version is current. It is a symlink switched atomically;
	// a reader needing several files from one version resolves it once.
	Path string
	// BytesDone and BytesTotal are the progress of the pull under way,
	// blobs already in the store included.
	BytesDone, BytesTotal int64
	// Message says why, for Pending and Failed, or notes something, such as
	// a registry that cannot be reached while the current version is served.
	Message string
	// Upload is the upload of the entry's Desired.Upload; zero when it asks
	// for none. Every report of such an entry carries it, so a reporter that
	// keeps only the latest status keeps both.
	Upload UploadStatus
	// Sources counts the bytes the last pull received, by where they came
	// from, once it has ended (succeeded or failed); nil until then, and
	// again while the next pull runs. DroppedPeers are the site peers that
	// pull stopped using. Every report carries them, as Upload.
	Sources      *ByteSources
	DroppedPeers []DroppedPeer
}

// Equal reports whether two statuses say the same.
func (s Status) Equal(o Status) bool { return reflect.DeepEqual(s, o) }

// ByteSources counts received bytes by source.
type ByteSources struct {
	Origin, Peers, Mirrors int64
}

// DroppedPeer is a site peer a pull stopped using: Reason is Corrupt,
// Stalled, Unreachable or Refused (see fetch.DroppedPeer).
type DroppedPeer struct {
	Node, Reason, Message string
}

// sourcesOf is what res says of the sources of a pull.
func sourcesOf(res fetch.Result) (*ByteSources, []DroppedPeer) {
	var dropped []DroppedPeer
	for _, d := range res.Dropped {
		msg := ""
		if d.Err != nil {
			msg = d.Err.Error()
		}
		dropped = append(dropped, DroppedPeer{Node: d.Node, Reason: d.Reason, Message: msg})
	}
	return &ByteSources{Origin: res.FromOrigin, Peers: res.FromPeers, Mirrors: res.FromMirrors}, dropped
}

// UploadPhase is where the upload of a round's update stands.
type UploadPhase string

const (
	// UploadWaiting: the base model is not Ready yet, or the trainer has
	// not written DONE.
	UploadWaiting UploadPhase = "Waiting"
	// UploadUploading: the update's blobs are being pushed.
	UploadUploading UploadPhase = "Uploading"
	// UploadUploaded: the update's manifest is in the repository.
	UploadUploaded UploadPhase = "Uploaded"
	// UploadFailed: the update is malformed and refused (it is checked
	// again when the trainer rewrites it), or the push failed (retried
	// with backoff).
	UploadFailed UploadPhase = "Failed"
)

// UploadStatus is the upload of one round's update.
type UploadStatus struct {
	Round int
	Phase UploadPhase
	// Digest is the update's manifest digest, once Uploaded.
	Digest digest.Digest
	// Samples is what the trainer's update.json says.
	Samples int64
	// BytesDone of BytesTotal, the update's files, are in the repository.
	BytesDone, BytesTotal int64
	// Message says what is awaited, or what is wrong and with which file.
	Message string
}
