package upload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

// parseRange reads the Range header of an upload status or PATCH answer,
// "0-<last byte>" in the distribution spec ("bytes=0-<last>" from some
// registries), and returns how many bytes the registry holds. It comes from
// the network, so it refuses anything it cannot vouch for.
//
// "0-0" is ambiguous: distribution writes it for an empty session and for
// one that holds a single byte. It is read as 0 bytes: a PATCH from 0 that
// the registry refuses (416) then makes the caller ask again or restart,
// which costs one byte, while reading it as 1 would skip a byte the
// registry never got if it had none (the digest check at PUT would catch
// it, after the whole upload).
func parseRange(h string) (int64, error) {
	bad := func() (int64, error) { return 0, fmt.Errorf("malformed Range %q", h) }
	span := strings.TrimPrefix(strings.TrimSpace(h), "bytes=")
	first, last, ok := strings.Cut(span, "-")
	if !ok {
		return bad()
	}
	f, err1 := parseUint(first)
	l, err2 := parseUint(last)
	if err1 != nil || err2 != nil || f != 0 || l == 1<<63-1 {
		return bad()
	}
	if l == 0 {
		return 0, nil
	}
	return l + 1, nil
}

func parseUint(s string) (int64, error) {
	if s == "" || len(s) > 19 || strings.TrimLeft(s, "0123456789") != "" { // ParseInt would accept "+1"
		return 0, errors.New("not a number")
	}
	return strconv.ParseInt(s, 10, 64)
}

// maxErrorBody bounds what is read of an error answer.
const maxErrorBody = 8 << 10

// errorResponse turns an answer that is not the one expected into the
// same error oras-go returns, so that callers (the CLI's hints on 401 and
// 403) read both alike.
func errorResponse(resp *http.Response) error {
	e := &errcode.ErrorResponse{Method: resp.Request.Method, URL: resp.Request.URL, StatusCode: resp.StatusCode}
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&body); err == nil {
		e.Errors = body.Errors
	}
	return e
}

// hasCode says whether err is a registry answer carrying code.
func hasCode(err error, code string) bool {
	var e *errcode.ErrorResponse
	if !errors.As(err, &e) {
		return false
	}
	for _, x := range e.Errors {
		if x.Code == code {
			return true
		}
	}
	return false
}

func statusOf(err error) int {
	var e *errcode.ErrorResponse
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// location resolves an upload URL the registry gave against the request
// it answered, and refuses one on another host or one that drops TLS: the
// next request carries the credentials there (as oras-go checks, after
// GHSA-jxpm-75mh-9fp7).
func location(base *url.URL, loc string) (*url.URL, error) {
	if loc == "" {
		return nil, errors.New("the registry gave no upload Location")
	}
	u, err := base.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("upload Location %q: %w", loc, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upload Location %q is not an http(s) URL", loc)
	}
	if !sameHost(u, base) {
		return nil, fmt.Errorf("upload Location %q is on another host than the registry %q: refusing to send credentials there", u.Host, base.Host)
	}
	if base.Scheme == "https" && u.Scheme != "https" {
		return nil, fmt.Errorf("upload Location %q drops from https to http: refusing", loc)
	}
	return u, nil
}

// sameHost compares hosts with the default ports made explicit, so that
// "example.com" and "example.com:443" over HTTPS are one.
func sameHost(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if u.Scheme == "https" {
			return "443"
		}
		return "80"
	}
	return a.Hostname() == b.Hostname() && port(a) == port(b)
}
