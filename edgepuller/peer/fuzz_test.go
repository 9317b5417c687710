package peer

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzParseRequest: whatever path and Range a peer sends, parsing does not
// panic, a served digest is a valid sha256 digest, and the bytes to send
// lie inside the blob.
func FuzzParseRequest(f *testing.F) {
	d := digest.FromString("x").String()
	for _, p := range []string{"/v2/", "/v2", "/v2/a/b/blobs/" + d, "/v2/m/manifests/" + d, "/v2/m/manifests/latest",
		"/v2//blobs/" + d, "/v2/blobs/" + d, "/v2/m/blobs/sha256:ABC", "/v2/m/blobs/sha512:" + strings.Repeat("a", 128), "/metrics"} {
		for _, r := range []string{"", "bytes=0-", "bytes=10-20", "bytes=-5", "bytes=5-1", "bytes=0-0,2-3", "items=1-", "bytes=99999999999999999999-", "bytes=+1-"} {
			f.Add(p, r, int64(100))
		}
	}
	f.Add("/v2/m/blobs/"+d, "bytes=0-", int64(0))
	f.Fuzz(func(t *testing.T, path, rng string, size int64) {
		rt, dg, err := parsePath(path)
		switch {
		case rt == routeNone || rt == routeBase:
			if dg != "" || err != nil {
				t.Fatalf("parsePath(%q) = %v, %q, %v for a path that names no digest", path, rt, dg, err)
			}
		case err == nil:
			if dg.Algorithm() != digest.SHA256 || dg.Validate() != nil || !strings.HasSuffix(path, "/"+dg.String()) {
				t.Fatalf("parsePath(%q) serves digest %q", path, dg)
			}
		}
		if size < 0 {
			return // sizes come from descriptors the store accepted
		}
		start, end, partial, err := parseRange(rng, size)
		switch {
		case err != nil:
			if err != errUnsatisfiable {
				t.Fatalf("parseRange(%q, %d): %v", rng, size, err)
			}
		case !partial:
			if start != 0 || end != size {
				t.Fatalf("parseRange(%q, %d) = whole blob as [%d, %d)", rng, size, start, end)
			}
		default:
			if start < 0 || start >= end || end > size {
				t.Fatalf("parseRange(%q, %d) = [%d, %d), outside the blob", rng, size, start, end)
			}
		}
	})
}
