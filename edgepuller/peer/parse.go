package peer

import (
	"errors"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// route is what a request path asks for.
type route int

const (
	routeNone     route = iota // not part of the peer protocol
	routeBase                  // /v2/: "is this a registry, and may I use it"
	routeBlob                  // /v2/<name>/blobs/<digest>
	routeManifest              // /v2/<name>/manifests/<digest>
)

// errNotDigest: a blob or manifest path whose reference is not a sha256
// digest. Peers serve by digest only; tags are resolved at the origin, so
// that a peer cannot choose which version a node pulls.
var errNotDigest = errors.New("only sha256 digests are served by peers; tags are resolved at the origin")

// parsePath reads a request path of the peer protocol. The repository name
// is ignored: the digest is the capability (see the package doc). It
// returns routeNone for any other path, and errNotDigest with the route
// for a blob or manifest reference that is not a sha256 digest.
func parsePath(p string) (route, digest.Digest, error) {
	if p == "/v2/" || p == "/v2" {
		return routeBase, "", nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return routeNone, "", nil
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return routeNone, "", nil
	}
	rest, ref := rest[:i], rest[i+1:]
	j := strings.LastIndexByte(rest, '/')
	if j <= 0 { // an empty repository name is no OCI path
		return routeNone, "", nil
	}
	var r route
	switch rest[j+1:] {
	case "blobs":
		r = routeBlob
	case "manifests":
		r = routeManifest
	default:
		return routeNone, "", nil
	}
	d, err := digest.Parse(ref)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return r, "", errNotDigest
	}
	return r, d, nil
}

// errUnsatisfiable: a Range that starts at or after the end of the blob.
var errUnsatisfiable = errors.New("range not satisfiable")

// parseRange reads a Range header for a blob of size bytes and returns the
// bytes to send, [start, end), and whether that is a part (206) rather than
// the whole blob (200). A single range is honoured: bytes=N-, bytes=N-M,
// bytes=-N. Anything else (several ranges, another unit, bad syntax) is
// ignored, as RFC 9110 allows: the whole blob is sent, and a client that
// asked to resume starts over, which fetch does when a server ignores its
// Range. A range starting at or beyond size is errUnsatisfiable.
func parseRange(h string, size int64) (start, end int64, partial bool, err error) {
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size, false, nil
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, size, false, nil
	}
	if first == "" { // the last N bytes
		n, ok := parseCount(last)
		if !ok {
			return 0, size, false, nil
		}
		if n == 0 || size == 0 {
			return 0, 0, false, errUnsatisfiable
		}
		return size - min(n, size), size, true, nil
	}
	start, ok = parseCount(first)
	if !ok {
		return 0, size, false, nil
	}
	end = size
	if last != "" {
		l, ok := parseCount(last)
		if !ok || l < start {
			return 0, size, false, nil
		}
		if l < size {
			end = l + 1
		}
	}
	if start >= size {
		return 0, 0, false, errUnsatisfiable
	}
	return start, end, true, nil
}

// parseCount reads a non-negative decimal byte position, digits only.
func parseCount(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
