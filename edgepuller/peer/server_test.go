package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bargeml/barge/edgepuller/store"
)

// TestServeCommittedBlob: a peer gets a blob this node holds, whole, from
// an offset, and its size by HEAD, through oras-go's client as well as
// plain requests; the served bytes are counted.
func TestServeCommittedBlob(t *testing.T) {
	ctx := context.Background()
	s := newSite(t)
	n := startNode(t, s, Options{})
	data, desc := blob(300<<10, 1)
	if err := n.st.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	c := httpClient(s.client)

	resp := get(t, c, http.MethodGet, n.url("blobs", desc.Digest), "")
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET whole blob: %s, %d bytes, want 200 and its %d bytes", resp.Status, len(body), len(data))
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != desc.Digest.String() {
		t.Errorf("Docker-Content-Digest = %q, want %s", got, desc.Digest)
	}

	resp = get(t, c, http.MethodGet, n.url("blobs", desc.Digest), "bytes=1000-")
	body = readAll(t, resp)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[1000:]) {
		t.Fatalf("GET Range bytes=1000-: %s, %d bytes, want 206 and the blob from byte 1000", resp.Status, len(body))
	}
	if got, want := resp.Header.Get("Content-Range"), "bytes 1000-307199/307200"; got != want {
		t.Errorf("Content-Range = %q, want %q", got, want)
	}

	resp = get(t, c, http.MethodHead, n.url("blobs", desc.Digest), "")
	readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.ContentLength != desc.Size {
		t.Errorf("HEAD: %s, Content-Length %d, want 200 and %d", resp.Status, resp.ContentLength, desc.Size)
	}

	repo := n.repository(t, s.client)
	got, err := repo.Blobs().Resolve(ctx, desc.Digest.String())
	if err != nil || got.Size != desc.Size {
		t.Fatalf("oras-go Resolve: %v, size %d", err, got.Size)
	}
	rc, err := repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		t.Fatalf("oras-go Fetch: %v", err)
	}
	body, err = io.ReadAll(rc)
	rc.Close()
	if err != nil || digest.FromBytes(body) != desc.Digest {
		t.Fatalf("oras-go Fetch read %d bytes, %v; the digest does not match", len(body), err)
	}
	// The handler counts a write once it returned, which may be after the
	// client read the bytes.
	want := float64(3*len(data) - 1000)
	for deadline := time.Now().Add(10 * time.Second); n.served(t) != want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n.served(t) != want {
		t.Errorf("served bytes = %v, want %v (two whole GETs, one from byte 1000, HEADs count nothing)", n.served(t), want)
	}
}

// TestServeManifest: a manifest is served with its own media type, which
// oras-go checks against the descriptor it fetches by.
func TestServeManifest(t *testing.T) {
	ctx := context.Background()
	s := newSite(t)
	n := startNode(t, s, Options{})
	repo := n.repository(t, s.client)
	for _, tt := range []struct {
		name, body, want string
	}{
		{"declared", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`, ocispec.MediaTypeImageManifest},
		{"index without mediaType", `{"schemaVersion":2,"manifests":[]}`, ocispec.MediaTypeImageIndex},
		{"manifest without mediaType", `{"schemaVersion":2,"artifactType":"application/vnd.barge.model.v1","layers":[]}`, ocispec.MediaTypeImageManifest},
		{"docker", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}`, "application/vnd.docker.distribution.manifest.v2+json"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.body)
			desc := ocispec.Descriptor{MediaType: tt.want, Digest: digest.FromBytes(b), Size: int64(len(b))}
			if err := n.st.Push(ctx, desc, bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
			got, rc, err := repo.Manifests().FetchReference(ctx, desc.Digest.String())
			if err != nil {
				t.Fatalf("FetchReference: %v", err)
			}
			body, _ := io.ReadAll(rc)
			rc.Close()
			if got.MediaType != tt.want || !bytes.Equal(body, b) {
				t.Errorf("FetchReference: media type %q, body %q; want %q and the manifest", got.MediaType, body, tt.want)
			}
			rc, err = repo.Manifests().Fetch(ctx, desc) // checks Content-Type against desc.MediaType
			if err != nil {
				t.Fatalf("Fetch by descriptor: %v", err)
			}
			rc.Close()
		})
	}
}

// TestFollowBlobArriving: a peer asking for a blob this node is still
// downloading gets every byte as it arrives, including a peer that asked
// before the download wrote anything and one that resumes mid-blob, and
// the bytes match the digest. The download commits while they read.
func TestFollowBlobArriving(t *testing.T) {
	ctx := context.Background()
	s := newSite(t)
	n := startNode(t, s, Options{})
	data, desc := blob(1<<20, 2)
	done := n.srv.Announce(desc)
	defer done()
	c := httpClient(s.client)

	type result struct {
		status int
		body   []byte
		err    error
	}
	read := func(rng string) chan result {
		ch := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodGet, n.url("blobs", desc.Digest), nil)
			if rng != "" {
				req.Header.Set("Range", rng)
			}
			resp, err := c.Do(req)
			if err != nil {
				ch <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			ch <- result{resp.StatusCode, b, err}
		}()
		return ch
	}
	whole, tail := read(""), read("bytes=500000-")
	time.Sleep(50 * time.Millisecond) // both wait for a download not yet started
	werr := make(chan error, 1)
	go func() { werr <- writeSlowly(ctx, n.st, desc, data, 32<<10, 5*time.Millisecond) }()

	if r := <-whole; r.err != nil || r.status != http.StatusOK || digest.FromBytes(r.body) != desc.Digest {
		t.Errorf("follower of the whole blob: %v, HTTP %d, %d bytes; want 200 and every byte of the blob", r.err, r.status, len(r.body))
	}
	if r := <-tail; r.err != nil || r.status != http.StatusPartialContent || !bytes.Equal(r.body, data[500000:]) {
		t.Errorf("follower from byte 500000: %v, HTTP %d, %d bytes; want 206 and the rest of the blob", r.err, r.status, len(r.body))
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

// TestHeadArriving: HEAD of a blob still arriving answers at once with its
// size, from the announcement.
func TestHeadArriving(t *testing.T) {
	s := newSite(t)
	n := startNode(t, s, Options{Hold: time.Minute})
	_, desc := blob(4096, 3)
	defer n.srv.Announce(desc)()
	start := time.Now()
	resp := get(t, httpClient(s.client), http.MethodHead, n.url("blobs", desc.Digest), "")
	readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.ContentLength != desc.Size {
		t.Errorf("HEAD of an announced blob: %s, Content-Length %d; want 200 and %d", resp.Status, resp.ContentLength, desc.Size)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("HEAD of an announced blob took %s: it waited for the download", time.Since(start))
	}
}

// TestUnknownDigestHeldThen404: a digest this node neither holds nor
// fetches is held for Hold, in case a pull announces it, then refused with
// an OCI error body; a tag is refused at once.
func TestUnknownDigestHeldThen404(t *testing.T) {
	const hold = 300 * time.Millisecond
	s := newSite(t)
	n := startNode(t, s, Options{Hold: hold})
	c := httpClient(s.client)
	_, desc := blob(10, 4)
	for _, tt := range []struct{ kind, code string }{{"blobs", "BLOB_UNKNOWN"}, {"manifests", "MANIFEST_UNKNOWN"}} {
		start := time.Now()
		resp := get(t, c, http.MethodGet, n.url(tt.kind, desc.Digest), "")
		took := time.Since(start)
		if resp.StatusCode != http.StatusNotFound || errorCode(t, resp) != tt.code {
			t.Errorf("%s of an unknown digest: %s, want 404 %s", tt.kind, resp.Status, tt.code)
		}
		if took < hold {
			t.Errorf("%s of an unknown digest answered after %s, before Hold %s", tt.kind, took, hold)
		}
	}
	start := time.Now()
	resp := get(t, c, http.MethodGet, "https://"+n.addr+"/v2/models/any/manifests/latest", "")
	if resp.StatusCode != http.StatusNotFound || errorCode(t, resp) != "MANIFEST_UNKNOWN" || time.Since(start) >= hold {
		t.Errorf("manifest by tag: %s after %s, want 404 MANIFEST_UNKNOWN at once", resp.Status, time.Since(start))
	}
}

// TestHeldUntilAnnounced: the follower that asks before the seed's pull
// announces the blob is served, not told 404 (the start race).
func TestHeldUntilAnnounced(t *testing.T) {
	ctx := context.Background()
	s := newSite(t)
	n := startNode(t, s, Options{Hold: 10 * time.Second})
	data, desc := blob(200<<10, 5)
	go func() {
		time.Sleep(100 * time.Millisecond)
		done := n.srv.Announce(desc)
		defer done()
		writeSlowly(ctx, n.st, desc, data, 64<<10, time.Millisecond)
	}()
	resp := get(t, httpClient(s.client), http.MethodGet, n.url("blobs", desc.Digest), "")
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Errorf("request before the announcement: %s, %d bytes; want 200 and the blob", resp.Status, len(body))
	}
}

// TestStreamCutWhenBytesWillNotCome: when the download stops short (the
// pull withdraws the blob without committing it, or resets its ingest),
// the follower's body ends early, so that its client resumes elsewhere,
// rather than waiting forever.
func TestStreamCutWhenBytesWillNotCome(t *testing.T) {
	for _, tt := range []struct {
		name string
		stop func(t *testing.T, w *store.Writer, done func())
	}{
		{"withdrawn", func(t *testing.T, w *store.Writer, done func()) {
			w.Close()
			done()
		}},
		{"reset", func(t *testing.T, w *store.Writer, done func()) {
			if err := w.Reset(); err != nil {
				t.Error(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := newSite(t)
			n := startNode(t, s, Options{})
			data, desc := blob(256<<10, 6)
			done := n.srv.Announce(desc)
			defer done()
			w, err := n.st.Writer(ctx, desc)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if _, err := w.Write(data[:100<<10]); err != nil {
				t.Fatal(err)
			}
			resp := get(t, httpClient(s.client), http.MethodGet, n.url("blobs", desc.Digest), "")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET: %s", resp.Status)
			}
			got := make([]byte, 100<<10)
			if _, err := io.ReadFull(resp.Body, got); err != nil || !bytes.Equal(got, data[:100<<10]) {
				t.Fatalf("the bytes already downloaded were not served: %v", err)
			}
			tt.stop(t, w, done)
			rest := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				rest <- err
			}()
			select {
			case err := <-rest:
				if err == nil {
					t.Error("the body ended cleanly short of the blob; want an unexpected EOF, so the client resumes")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the body did not end after the download stopped short")
			}
		})
	}
}

// TestNotPartOfTheProtocol: only GET and HEAD of /v2/ and of blobs and
// manifests by digest are answered.
func TestNotPartOfTheProtocol(t *testing.T) {
	s := newSite(t)
	n := startNode(t, s, Options{Hold: time.Millisecond})
	c := httpClient(s.client)
	_, desc := blob(10, 7)
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/v2/", http.StatusOK},
		{http.MethodPut, "/v2/models/any/blobs/uploads/", http.StatusMethodNotAllowed},
		{http.MethodPost, "/v2/models/any/blobs/uploads/", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/v2/models/any/blobs/" + desc.Digest.String(), http.StatusMethodNotAllowed},
		{http.MethodGet, "/v2/_catalog", http.StatusNotFound},
		{http.MethodGet, "/v2/models/any/tags/list", http.StatusNotFound},
		{http.MethodGet, "/metrics", http.StatusNotFound},
		{http.MethodGet, "/v2/models/any/blobs/sha512:" + strings.Repeat("a", 128), http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tt.method, "https://"+n.addr+tt.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s: %s, want %d", tt.method, tt.path, resp.Status, tt.want)
		}
	}
}

func get(t *testing.T, c *http.Client, method, url, rng string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

// errorCode is the first OCI error code of a response body.
func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	var body struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if err := json.Unmarshal(readAll(t, resp), &body); err != nil || len(body.Errors) == 0 {
		t.Fatalf("error body is not an OCI error: %v", err)
	}
	return body.Errors[0].Code
}

// TestDamagedBlobNotServed: a committed blob changed on disk (a workload
// wrote through a hard link of it) is checked again before it is served,
// and refused, rather than passed on to the site.
func TestDamagedBlobNotServed(t *testing.T) {
	ctx := context.Background()
	s := newSite(t)
	n := startNode(t, s, Options{Hold: time.Millisecond})
	data, desc := blob(64<<10, 8)
	if err := n.st.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	path := n.st.BlobPath(desc.Digest)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Repeat([]byte{0}, len(data)), 0o644); err != nil {
		t.Fatal(err)
	}
	resp := get(t, httpClient(s.client), http.MethodGet, n.url("blobs", desc.Digest), "")
	if resp.StatusCode != http.StatusNotFound || errorCode(t, resp) != "BLOB_UNKNOWN" {
		t.Errorf("GET of a damaged blob: %s, want 404 BLOB_UNKNOWN", resp.Status)
	}
}

// TestManifestAnnouncedWithoutSize: the manifest of a pull by digest is
// announced before its size is known; a peer asking for it waits, past
// Hold, until it is in the store, and is told 404 if the pull gives up
// on it.
func TestManifestAnnouncedWithoutSize(t *testing.T) {
	ctx := context.Background()
	s := newSite(t)
	n := startNode(t, s, Options{Hold: 100 * time.Millisecond})
	c := httpClient(s.client)
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}

	done := n.srv.Announce(ocispec.Descriptor{Digest: desc.Digest, Size: -1})
	go func() {
		time.Sleep(400 * time.Millisecond) // well past Hold
		n.st.Push(ctx, desc, bytes.NewReader(m))
		done()
	}()
	resp := get(t, c, http.MethodGet, n.url("manifests", desc.Digest), "")
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(body, m) ||
		resp.Header.Get("Content-Type") != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest announced without a size, then stored: %s %q, %q; want 200, the manifest and its media type",
			resp.Status, resp.Header.Get("Content-Type"), body)
	}

	other := digest.FromString("never stored")
	giveUp := n.srv.Announce(ocispec.Descriptor{Digest: other, Size: -1})
	time.AfterFunc(300*time.Millisecond, giveUp)
	start := time.Now()
	resp = get(t, c, http.MethodGet, n.url("manifests", other), "")
	if resp.StatusCode != http.StatusNotFound || errorCode(t, resp) != "MANIFEST_UNKNOWN" || time.Since(start) < 300*time.Millisecond {
		t.Errorf("manifest announced, then given up: %s after %s; want 404 once the announcement is withdrawn", resp.Status, time.Since(start))
	}
}
