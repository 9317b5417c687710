package fetch_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/bargeml/barge/edgepuller/fetch"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
)

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestMirrorFallsBack: a mirror that is down, or that lacks the content,
// costs little and the origin serves the pull.
func TestMirrorFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mirror func(t *testing.T) string
		// mirrorGETs is how many GETs reach the mirror: a mirror that is
		// down is tried once per pull, not once per blob.
		mirrorGETs func(blobs int) int
	}{
		{"down", func(t *testing.T) string { return closedAddr(t) }, func(int) int { return 1 }},
		{"empty, answers 404", func(t *testing.T) string { return startRegistry(t).Host() }, func(blobs int) int { return 1 + blobs }},
		{"busy, answers 503 with Retry-After: 60", func(t *testing.T) string {
			// A real registry does not get busy on cue; this one is scripted.
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v2/models/resnet/") {
					t.Errorf("busy mirror: unexpected request %s %s", r.Method, r.URL)
				}
				w.Header().Set("Retry-After", "60")
				registryError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "busy")
			}))
			t.Cleanup(srv.Close)
			return srv.Listener.Addr().String()
		}, func(blobs int) int { return 1 + blobs }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := startRegistry(t)
			m := pushModel(t, origin.Host(), "models/resnet", "v1", fourFiles(3))
			mirror := tc.mirror(t)
			c := newCounter(t)
			st := newStore(t)
			_, _, _, err := fetch.Pull(context.Background(), st, m.ref, fetch.Options{
				PlainHTTP: true, Client: c.client(), Backoff: fastRetry, Mirrors: []string{"http://" + mirror},
			})
			if err != nil {
				t.Fatal(err)
			}
			assertStored(t, st, m)
			blobs := len(m.files) + 1 // and the config
			if n := len(c.blobGETs(origin.Host(), "")); n != blobs {
				t.Errorf("origin served %d blobs, want %d", n, blobs)
			}
			if n, want := len(c.requests(mirror, http.MethodGet, "")), tc.mirrorGETs(blobs); n != want {
				t.Errorf("%d GETs to the mirror, want %d", n, want)
			}
		})
	}
}

// TestMirrorServes: with a working mirror the origin only answers the tag
// lookup. The mirror's own, stale tag is not used: the origin decides the
// version.
func TestMirrorServes(t *testing.T) {
	origin, mirror := startRegistry(t), startRegistry(t)
	m := pushModel(t, origin.Host(), "models/resnet", "v1", fourFiles(4))
	pushModel(t, mirror.Host(), "models/resnet", "v1", fourFiles(5)) // stale v1
	// The mirror's sync has copied the origin's v1, under another tag.
	if _, err := oras.Copy(context.Background(), repository(t, origin.Host(), "models/resnet"), "v1",
		repository(t, mirror.Host(), "models/resnet"), "synced", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}

	c := newCounter(t)
	st := newStore(t)
	desc, _, res, err := fetch.Pull(context.Background(), st, m.ref, fetch.Options{
		PlainHTTP: true, Client: c.client(), Mirrors: []string{"http://" + mirror.Host()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != m.manifest.Digest {
		t.Fatalf("pulled %s, want the origin's v1 %s, not the mirror's", desc.Digest, m.manifest.Digest)
	}
	assertStored(t, st, m)
	if gets := c.requests(origin.Host(), http.MethodGet, ""); len(gets) != 0 {
		t.Errorf("the origin got %d GETs, want none: %+v", len(gets), gets)
	}
	if heads := c.requests(origin.Host(), http.MethodHead, "/manifests/v1"); len(heads) != 1 {
		t.Errorf("the origin got %d HEADs of the tag, want 1", len(heads))
	}
	gets := c.blobGETs(mirror.Host(), "")
	if len(gets) != len(m.files)+1 {
		t.Errorf("the mirror served %d blobs, want %d", len(gets), len(m.files)+1)
	}
	for _, g := range gets {
		if q, _ := url.ParseQuery(g.Query); q.Get("ns") != origin.Host() {
			t.Errorf("mirror request %s has ns=%q, want the origin %q", g.Path, q.Get("ns"), origin.Host())
		}
	}
	if res.Retries != 0 {
		t.Errorf("Retries = %d", res.Retries)
	}
}

// TestMirrorFailsMidway: a mirror that breaks after sending half of a blob
// hands over to the origin, which sends only the other half; a mirror that
// serves corrupt bytes is not asked again for the refetch.
func TestMirrorFailsMidway(t *testing.T) {
	for _, tc := range []struct {
		name        string
		script      func(p *proxy) func(n int, w http.ResponseWriter, r *http.Request) bool
		originRange string
		originBytes int64
	}{
		{"cut, then 500", func(p *proxy) func(int, http.ResponseWriter, *http.Request) bool {
			return func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n == 1 {
					p.cutAfter(w, r, weightsSize/2)
				}
				registryError(w, http.StatusInternalServerError, "UNKNOWN", "upstream gone")
				return true
			}
		}, rangeFrom(weightsSize / 2), weightsSize / 2},
		{"corrupt", func(p *proxy) func(int, http.ResponseWriter, *http.Request) bool {
			return func(n int, w http.ResponseWriter, r *http.Request) bool {
				relay(w, p.upstream(r), func(b []byte) []byte { b[0] ^= 1; return b })
				return true
			}
		}, "", weightsSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin, mirror := startRegistry(t), startRegistry(t)
			weights := randomBytes(weightsSize, 11)
			files := map[string][]byte{"weights.bin": weights}
			m := pushModel(t, origin.Host(), "models/m", "v1", files)
			pushModel(t, mirror.Host(), "models/m", "v1", files)
			mp := newProxy(t, mirror)
			mp.fault(m.digestOf("weights.bin"), tc.script(mp))

			c := newCounter(t)
			st := newStore(t)
			_, _, _, err := fetch.Pull(context.Background(), st, m.ref, fetch.Options{
				PlainHTTP: true, Client: c.client(), Backoff: fastRetry, Mirrors: []string{"http://" + mp.Host()},
			})
			if err != nil {
				t.Fatal(err)
			}
			assertStored(t, st, m)
			gets := c.blobGETs(origin.Host(), m.digestOf("weights.bin"))
			if len(gets) != 1 || gets[0].Range != tc.originRange {
				t.Fatalf("origin GETs %+v, want one with Range %q", gets, tc.originRange)
			}
			if gets[0].Body != tc.originBytes {
				t.Errorf("origin sent %d bytes, want %d", gets[0].Body, tc.originBytes)
			}
		})
	}
}

// TestMirrorDoesNotDescribeDigest: for a digest reference, a mirror's word
// on the manifest's size and media type is not taken, only manifest bytes
// it serves that match the digest. A mirror that lies in its HEAD answer
// (a wrong size would fail the pull everywhere, an index type would send
// it down the wrong path) or serves another manifest under the digest
// changes nothing: the pull gets the origin's artifact.
func TestMirrorDoesNotDescribeDigest(t *testing.T) {
	for _, tc := range []struct {
		name string
		// manifestGET answers a GET of the pulled manifest, given the right
		// bytes and another manifest's.
		manifestGET func(w http.ResponseWriter, right, other []byte)
		// fromMirror says whether the mirror's manifest is used.
		fromMirror bool
	}{
		{"HEAD lies, GET is right", func(w http.ResponseWriter, right, _ []byte) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
			w.Write(right)
		}, true},
		{"GET serves another manifest", func(w http.ResponseWriter, _, other []byte) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Write(other)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			origin, mirrorReg := startRegistry(t), startRegistry(t)
			m := pushModel(t, origin.Host(), "models/resnet", "v1", fourFiles(7))
			pushModel(t, mirrorReg.Host(), "models/resnet", "v1", fourFiles(7))
			other := pushModel(t, mirrorReg.Host(), "models/resnet", "v2", fourFiles(8))
			right := fetchManifest(t, origin.Host(), m)
			wrong := fetchManifest(t, mirrorReg.Host(), other)

			rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: mirrorReg.Host()})
			mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasSuffix(r.URL.Path, "/manifests/"+m.manifest.Digest.String()) {
					rp.ServeHTTP(w, r)
					return
				}
				w.Header().Set("Docker-Content-Digest", m.manifest.Digest.String())
				if r.Method == http.MethodHead {
					w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
					w.Header().Set("Content-Length", fmt.Sprint(len(right)+1000))
					return
				}
				tc.manifestGET(w, right, wrong)
			}))
			t.Cleanup(mirror.Close)

			c := newCounter(t)
			st := newStore(t)
			ref := origin.Host() + "/models/resnet@" + m.manifest.Digest.String()
			desc, a, _, err := fetch.Pull(ctx, st, ref, fetch.Options{
				PlainHTTP: true, Client: c.client(), Backoff: fastRetry, Mirrors: []string{"http://" + mirror.Listener.Addr().String()},
			})
			if err != nil {
				t.Fatalf("pull %s through a lying mirror: %v", ref, err)
			}
			if desc.Digest != m.manifest.Digest || desc.MediaType != m.manifest.MediaType || desc.Size != m.manifest.Size {
				t.Errorf("pulled manifest %s %s %d bytes; want the origin's %s %s %d bytes",
					desc.Digest, desc.MediaType, desc.Size, m.manifest.Digest, m.manifest.MediaType, m.manifest.Size)
			}
			if a.Version != "v1" {
				t.Errorf("pulled version %q, want v1", a.Version)
			}
			assertStored(t, st, m)
			mirrorHost := mirror.Listener.Addr().String()
			if heads := c.requests(mirrorHost, http.MethodHead, "/manifests/"+m.manifest.Digest.String()); len(heads) != 0 {
				t.Errorf("the mirror was asked %d times to describe the digest", len(heads))
			}
			originGETs := c.requests(origin.Host(), http.MethodGet, "/manifests/"+m.manifest.Digest.String())
			if tc.fromMirror && len(originGETs) != 0 {
				t.Errorf("the origin served the manifest although the mirror's bytes were right")
			}
			if !tc.fromMirror && len(originGETs) != 1 {
				t.Errorf("the origin served the manifest %d times; want once, after the mirror's wrong bytes", len(originGETs))
			}
		})
	}
}

func fetchManifest(t *testing.T, host string, m model) []byte {
	t.Helper()
	b, err := content.FetchAll(context.Background(), repository(t, host, "models/resnet"), m.manifest)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
