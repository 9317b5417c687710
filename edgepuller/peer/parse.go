package peer

import (
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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

// manifestMediaType is the media type of the manifest read from r, the one
// fetch's describeManifest gives the same bytes (json.Unmarshal into
// {mediaType, manifests}): the declared mediaType, else an index if it has
// manifests, else an image manifest. It reads r token by token, so that a
// manifest request costs no more memory than its largest string.
func manifestMediaType(r io.Reader) string {
	mt, index, err := scanManifest(json.NewDecoder(r))
	if err != nil {
		mt, index = "", false // json.Unmarshal would have failed as a whole
	}
	switch {
	case mt != "":
		return mt
	case index:
		return ocispec.MediaTypeImageIndex
	}
	return ocispec.MediaTypeImageManifest
}

func scanManifest(dec *json.Decoder) (mt string, index bool, err error) {
	t, err := dec.Token()
	if err != nil {
		return "", false, err
	}
	if t != json.Delim('{') {
		// Not an object: Unmarshal into a struct fails on the type, but
		// only after checking that the whole input is valid JSON.
		return "", false, skipAndEnd(dec, t)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false, err
		}
		key, _ := t.(string)
		v, err := dec.Token()
		if err != nil {
			return "", false, err
		}
		switch {
		case strings.EqualFold(key, "mediaType"):
			if s, ok := v.(string); ok {
				mt = s
			}
		case strings.EqualFold(key, "manifests"):
			switch v {
			case json.Delim('['):
				index = true
			case nil:
				index = false
			}
		}
		if err := skip(dec, v); err != nil {
			return "", false, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return "", false, err
	}
	return mt, index, end(dec)
}

// skip reads the rest of the value that began with token t.
func skip(dec *json.Decoder, t json.Token) error {
	depth := 0
	for {
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
		var err error
		if t, err = dec.Token(); err != nil {
			return err
		}
	}
}

func skipAndEnd(dec *json.Decoder, t json.Token) error {
	if err := skip(dec, t); err != nil {
		return err
	}
	return end(dec)
}

// end checks that nothing but white space follows the value.
func end(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the manifest")
	}
	return nil
}
