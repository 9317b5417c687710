//go:build linux

package main

import (
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// reqKey is one kind of registry request from one client on one repository.
type reqKey struct {
	Client string // controller, puller or other, by User-Agent
	Kind   string // "HEAD manifest", "GET tags list", ...
	Repo   string
}

// counts is a number of requests by key.
type counts map[reqKey]int

// sub is c minus an earlier snapshot.
func (c counts) sub(before counts) counts {
	out := counts{}
	for k, v := range c {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// sum adds the requests whose key keep accepts.
func (c counts) sum(keep func(reqKey) bool) int {
	n := 0
	for k, v := range c {
		if keep(k) {
			n += v
		}
	}
	return n
}

// countingProxy forwards to the registry and counts every request by
// client, kind and repository.
type countingProxy struct {
	host string
	srv  *http.Server

	mu sync.Mutex
	n  counts
}

func startProxy(target string) (*countingProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{host: ln.Addr().String(), n: counts{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	rp.Transport = tr
	rp.ErrorLog = log.New(io.Discard, "", 0)
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
			rp.ServeHTTP(sw, r)
			p.count(r, sw.code)
		}),
		ErrorLog:          log.New(io.Discard, "", 0),
		ReadHeaderTimeout: time.Minute,
	}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *countingProxy) close() { p.srv.Close() }

// distribution's routes: /v2/<name>/manifests/<ref>, /v2/<name>/blobs/<digest>,
// /v2/<name>/tags/list, /v2/<name>/referrers/<digest>.
var routePattern = regexp.MustCompile(`^/v2/(.+)/(manifests|blobs|tags|referrers)/([^/]+)$`)

// statusWriter keeps the status code of a response.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// count adds a request, once answered; an answer other than 2xx is part of
// its kind ("GET referrers → 404").
func (p *countingProxy) count(r *http.Request, code int) {
	k := classify(r)
	if code >= 300 {
		k.Kind += fmt.Sprintf(" → %d", code)
	}
	p.mu.Lock()
	p.n[k]++
	p.mu.Unlock()
}

func classify(r *http.Request) reqKey {
	k := reqKey{Client: "other", Kind: r.Method + " other"}
	switch ua := r.UserAgent(); {
	case strings.HasPrefix(ua, "barge-controller"):
		k.Client = "controller"
	case strings.HasPrefix(ua, "barge-edgepuller"):
		k.Client = "puller"
	}
	if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
		k.Kind = r.Method + " /v2/"
		return k
	}
	m := routePattern.FindStringSubmatch(r.URL.Path)
	if m == nil {
		return k
	}
	k.Repo = m[1]
	switch m[2] {
	case "manifests":
		k.Kind = r.Method + " manifest"
		if strings.HasPrefix(m[3], "sha256-") {
			k.Kind = r.Method + " referrers tag"
		}
	case "blobs":
		k.Kind = r.Method + " blob"
	case "tags":
		k.Kind = r.Method + " tags list"
	case "referrers":
		k.Kind = r.Method + " referrers"
	}
	return k
}

func (p *countingProxy) snapshot() counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.n)
}
