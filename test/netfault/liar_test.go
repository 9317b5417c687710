package netfault

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bargeml/barge/internal/testenv/netns"
)

// liar is a scripted peer: a fault no real puller produces. It answers on
// node 0 of a site as a peer server does, with the site's valid peer
// certificate, and serves m's manifest and config as they are but every
// layer with bytes flipped, the length unchanged.
type liar struct {
	m      *model
	served atomic.Int64 // corrupt layer bytes sent

	mu     sync.Mutex
	blobs  map[string][]byte // digest -> what the liar serves
	layers map[string]bool
	types  map[string]string // manifest digest -> media type
}

// startLiar serves on s.liar's address until t ends.
func startLiar(t *testing.T, s *site, m *model) *liar {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(peerTLS, "tls.crt"), filepath.Join(peerTLS, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(peerTLS, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	var l net.Listener
	if err := netns.Do(s.liar.name, func() (err error) {
		l, err = net.Listen("tcp", fmt.Sprintf("%s:%d", s.liar.addr, peerPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lr := &liar{m: m, blobs: map[string][]byte{}, layers: map[string]bool{}, types: map[string]string{}}
	if err := lr.load(); err != nil {
		l.Close()
		t.Fatal(err)
	}
	srv := &http.Server{Handler: lr, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	return lr
}

// load reads m's manifest and blobs from the registry and corrupts the
// layers.
func (lr *liar) load() error {
	base := "http://" + registry + "/v2/" + strings.TrimPrefix(lr.m.repo, registry+"/")
	manifest, err := httpGet(base+"/manifests/"+lr.m.digest, ocispec.MediaTypeImageManifest)
	if err != nil {
		return err
	}
	var mf ocispec.Manifest
	if err := json.Unmarshal(manifest, &mf); err != nil {
		return fmt.Errorf("manifest %s: %w", lr.m.digest, err)
	}
	lr.blobs[lr.m.digest], lr.types[lr.m.digest] = manifest, mf.MediaType
	if lr.types[lr.m.digest] == "" {
		lr.types[lr.m.digest] = ocispec.MediaTypeImageManifest
	}
	for i, d := range append([]ocispec.Descriptor{mf.Config}, mf.Layers...) {
		b, err := httpGet(base+"/blobs/"+d.Digest.String(), "")
		if err != nil {
			return err
		}
		if i > 0 {
			lr.layers[d.Digest.String()] = true
			for off := len(b) / 3; off < len(b); off += 4096 {
				b[off] ^= 0xff
			}
		}
		lr.blobs[d.Digest.String()] = b
	}
	return nil
}

func httpGet(url, accept string) ([]byte, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// ServeHTTP answers the peer API's paths: /v2/, and
// /v2/<name>/{blobs,manifests}/<digest>, by digest only.
func (lr *liar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		return
	}
	i := strings.LastIndex(r.URL.Path, "/")
	kind := r.URL.Path[strings.LastIndex(r.URL.Path[:max(i, 0)], "/")+1 : max(i, 0)]
	dgst := r.URL.Path[i+1:]
	b, ok := lr.blobs[dgst]
	if !ok || (kind != "blobs" && kind != "manifests") {
		http.NotFound(w, r)
		return
	}
	if kind == "manifests" {
		w.Header().Set("Content-Type", lr.types[dgst])
	}
	w.Header().Set("Docker-Content-Digest", dgst)
	if kind == "blobs" && lr.layers[dgst] && r.Method == http.MethodGet {
		lr.served.Add(int64(len(b)))
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}
