package agent

import (
	"fmt"
	"io"
	"net/http"
	"sync"

	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/upload"
)

// What the node's uplink sees of the uploads: a cap on their rate, apart
// from the downloads', and a log line for each interruption, so that an
// operator can tell a resumed upload from one that started over.

// uploadHTTPClient is the push client's HTTP client: oras-go's retrying
// one, pacing every request body by limit when it is set. The pacing sits
// under the retry transport, which the resumable uploader drops (it must
// not resend a chunk the registry partly kept), so that both keep it.
func uploadHTTPClient(limit *fetch.Limiter) *http.Client {
	if limit == nil {
		return retry.DefaultClient
	}
	return &http.Client{Transport: retry.NewTransport(&pacedTransport{base: http.DefaultTransport, limit: limit})}
}

// pacedTransport paces request bodies: what the node sends.
type pacedTransport struct {
	base  http.RoundTripper
	limit *fetch.Limiter
}

func (t *pacedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return t.base.RoundTrip(req)
	}
	paced := req.Clone(req.Context())
	paced.Body = t.pace(req, req.Body)
	if get := req.GetBody; get != nil {
		paced.GetBody = func() (io.ReadCloser, error) {
			b, err := get()
			if err != nil {
				return nil, err
			}
			return t.pace(req, b), nil
		}
	}
	return t.base.RoundTrip(paced)
}

func (t *pacedTransport) pace(req *http.Request, body io.ReadCloser) io.ReadCloser {
	return struct {
		io.Reader
		io.Closer
	}{t.limit.Reader(req.Context(), body), body}
}

// uploadNote is the message of an upload in progress: what costs it time
// or bytes, for the operator reading status.upload; empty while nothing
// has happened.
type uploadNote struct {
	mu  sync.Mutex
	msg string
}

func (n *uploadNote) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.msg
}

// noteUploadEvent logs an event that costs the upload time or bytes (a
// resume where the registry stopped, after a restart; a retry after a cut;
// a session the registry lost, which sends the blob again) and notes the
// resume and the loss in n. It reports whether n changed, which is worth a
// status report at once.
func (w *worker) noteUploadEvent(n *uploadNote, e upload.Event) bool {
	attrs := []any{"artifact", w.d.Name, "round", w.d.Upload.Round, "blob", e.Digest, "offset", e.Offset, "size", e.Total}
	var msg string
	switch e.Kind {
	case upload.Resumed:
		w.a.log.Info("update upload resumed where the registry stopped", attrs...)
		msg = fmt.Sprintf("resumed %s at %s of %s, where the registry stopped", e.Digest.Encoded()[:12], mebibytes(e.Offset), mebibytes(e.Total))
	case upload.Retrying:
		w.a.log.Info("update upload interrupted; continuing at the registry's offset", append(attrs, "err", e.Err)...)
		return false
	case upload.Restarted:
		w.a.log.Warn("the registry lost the update's upload session; sending the blob again", append(attrs, "why", e.Err)...)
		msg = fmt.Sprintf("the registry lost the upload of %s: sending it again", e.Digest.Encoded()[:12])
	default:
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	changed := n.msg != msg
	n.msg = msg
	return changed
}

func mebibytes(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
