package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"oras.land/oras-go/v2/registry/remote"
)

// A registry, a mirror or a token server that accepts the connection and
// then says nothing must not hold a pull, its download slot or its ingest
// lock for ever. Blob downloads are bounded by StallTimeout (headers and
// body); everything else (manifests, HEADs, the token requests made for
// them) by the request timeout below; a whole pull by Options.Timeout.

// WithRequestTimeout returns c with every request bounded by d, from
// sending it (retries and a token request included) to closing its body;
// if d <= 0, the default of Options.RequestTimeout is used. The edge puller
// wraps the client it resolves tags with in it.
func WithRequestTimeout(c remote.Client, d time.Duration) remote.Client {
	if d <= 0 {
		d = DefaultRequestTimeout
	}
	return timeoutClient{c: c, d: d}
}

type timeoutClient struct {
	c remote.Client
	d time.Duration
}

// errRequestTimeout is the cause of a request cut by the request timeout.
var errRequestTimeout = errors.New("request timeout")

func (t timeoutClient) Do(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeoutCause(req.Context(), t.d, errRequestTimeout)
	resp, err := t.c.Do(req.WithContext(ctx))
	if err != nil {
		cause := context.Cause(ctx)
		cancel()
		if errors.Is(cause, errRequestTimeout) {
			return nil, &timeoutError{fmt.Sprintf("%s %s: no answer within the request timeout of %s", req.Method, req.URL.Redacted(), t.d), err}
		}
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// timeoutError is a request cut by the request timeout; errors.Is finds
// errRequestTimeout in it, and the error the client returned.
type timeoutError struct {
	msg string
	err error
}

func (e *timeoutError) Error() string   { return e.msg + ": " + e.err.Error() }
func (e *timeoutError) Unwrap() []error { return []error{errRequestTimeout, e.err} }

// cancelBody ends the request's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// errPullTimeout is the cause of a pull cut by Options.Timeout.
var errPullTimeout = errors.New("pull timeout")

// withPullTimeout bounds a whole pull by opts.Timeout.
func withPullTimeout(ctx context.Context, opts Options) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, opts.Timeout, errPullTimeout)
}

// explainTimeout says so when err comes from the pull timeout.
func explainTimeout(ctx context.Context, opts Options, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errPullTimeout) {
		return fmt.Errorf("did not finish within the pull timeout of %s (partial downloads are kept and the next pull resumes them): %w", opts.Timeout, err)
	}
	return err
}
