//go:build linux

package main

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// proxy sits between the clients and the registry and watches blob
// bodies: how many bytes the registry sent, per request and in all; when
// the first body byte of each request went by; and it can cut a connection
// once at a given byte of a blob, or call a function once a number of bytes
// have gone by (to SIGKILL a client at an exact point, whatever its speed).
type proxy struct {
	host string // 127.0.0.1:port, for references
	srv  *http.Server

	mu   sync.Mutex
	reqs []*blobRequest
	sent int64
	cut  *cutPlan
	trip *tripwire
}

// blobRequest is one request through the proxy. Only the bodies of blob
// GETs are counted and can be cut; the rest are kept for the timeline.
type blobRequest struct {
	Method, Path string
	Digest       string // the blob's, "" for other requests
	Range        string // the request's Range header, "" if none
	Status       int
	Start        time.Time // when the registry's response headers arrived
	FirstByte    time.Time // when the first body byte came from the registry; zero until then
	End          time.Time // when the body ended (EOF, error or cut); zero until then
	Bytes        int64
}

type cutPlan struct {
	digest string
	at     int64 // blob offset at which the connection is cut
}

type tripwire struct {
	after int64
	fn    func()
}

// errCut ends a body on purpose; the reverse proxy then aborts the
// connection, and the client sees a body shorter than its Content-Length.
var errCut = errors.New("bench: connection cut on purpose")

func startProxy(target string) (*proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{host: ln.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(u)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	tr.MaxIdleConnsPerHost = 32
	rp.Transport = tr
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = p.watch
	p.srv = &http.Server{Handler: rp, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: time.Minute}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *proxy) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.srv.Shutdown(ctx)
}

// reset forgets the requests and counts, and disarms any cut or tripwire.
func (p *proxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs, p.sent, p.cut, p.trip = nil, 0, nil, nil
}

// cutOnce cuts the first response for digest whose body covers byte at,
// right before that byte.
func (p *proxy) cutOnce(digest string, at int64) {
	p.mu.Lock()
	p.cut = &cutPlan{digest: digest, at: at}
	p.mu.Unlock()
}

// tripAt calls fn once, from the proxy's copy loop, when the blob bytes
// sent since the last reset reach after.
func (p *proxy) tripAt(after int64, fn func()) {
	p.mu.Lock()
	p.trip = &tripwire{after: after, fn: fn}
	p.mu.Unlock()
}

// sentBytes is the blob body bytes the registry sent since the last reset.
func (p *proxy) sentBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

// requests returns a copy of the blob requests since the last reset.
func (p *proxy) requests() []blobRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]blobRequest, len(p.reqs))
	for i, r := range p.reqs {
		out[i] = *r
	}
	return out
}

func (p *proxy) watch(resp *http.Response) error {
	req := resp.Request
	r := &blobRequest{Method: req.Method, Path: req.URL.Path, Range: req.Header.Get("Range"), Status: resp.StatusCode, Start: time.Now()}
	i := strings.Index(req.URL.Path, "/blobs/")
	if req.Method != http.MethodGet || i < 0 || (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent) {
		p.mu.Lock()
		p.reqs = append(p.reqs, r)
		p.mu.Unlock()
		return nil
	}
	r.Digest = req.URL.Path[i+len("/blobs/"):]
	var start int64
	if resp.StatusCode == http.StatusPartialContent {
		start = contentRangeStart(resp.Header.Get("Content-Range"))
	}
	b := &watchedBody{ReadCloser: resp.Body, p: p, r: r, cutAt: -1}
	p.mu.Lock()
	p.reqs = append(p.reqs, r)
	if c := p.cut; c != nil && c.digest == r.Digest && start < c.at && (resp.ContentLength < 0 || start+resp.ContentLength > c.at) {
		b.cutAt = c.at - start
		p.cut = nil
	}
	p.mu.Unlock()
	resp.Body = b
	return nil
}

// contentRangeStart reads N from "bytes N-M/T"; 0 if it cannot.
func contentRangeStart(v string) int64 {
	v = strings.TrimPrefix(v, "bytes ")
	first, _, _ := strings.Cut(v, "-")
	n, _ := strconv.ParseInt(first, 10, 64)
	return n
}

type watchedBody struct {
	io.ReadCloser
	p     *proxy
	r     *blobRequest
	n     int64
	cutAt int64 // body offset to cut at; -1 for none
}

func (b *watchedBody) Read(buf []byte) (int, error) {
	if b.cutAt >= 0 {
		if b.n >= b.cutAt {
			b.p.account(b.r, 0, true)
			return 0, errCut
		}
		buf = buf[:min(int64(len(buf)), b.cutAt-b.n)]
	}
	n, err := b.ReadCloser.Read(buf)
	b.n += int64(n)
	b.p.account(b.r, n, err != nil)
	return n, err
}

func (p *proxy) account(r *blobRequest, n int, end bool) {
	p.mu.Lock()
	now := time.Now()
	if r.FirstByte.IsZero() && n > 0 {
		r.FirstByte = now
	}
	if end && r.End.IsZero() {
		r.End = now
	}
	r.Bytes += int64(n)
	p.sent += int64(n)
	var fire func()
	if t := p.trip; t != nil && p.sent >= t.after {
		fire, p.trip = t.fn, nil
	}
	p.mu.Unlock()
	if fire != nil {
		fire()
	}
}
