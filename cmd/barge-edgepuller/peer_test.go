package main

import (
	"bytes"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/bargeml/barge/edgepuller/peer"
)

// The peer flags are checked at startup: serving without TLS, or with a
// TLS directory that is missing or damaged, stops the puller with a
// message that says what to mount.
func TestPeerFlags(t *testing.T) {
	ca, err := peer.NewTestCA()
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(t.TempDir(), "peer-tls")
	if err := ca.WriteDir(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		args      []string
		code      int
		wantError string
	}{
		{"listen without TLS", []string{"--peer-listen", "127.0.0.1:0"}, 2, "--peer-listen needs --peer-tls-dir"},
		{"missing TLS directory", []string{"--peer-listen", "127.0.0.1:0", "--peer-tls-dir", "/nonexistent/peer"}, 1, "/nonexistent/peer/ca.crt (the site CA) is missing: mount the peer Secret"},
		{"TLS directory to fetch only, missing", []string{"--peer-tls-dir", "/nonexistent/peer"}, 1, "--peer-tls-dir: peer TLS: /nonexistent/peer/ca.crt"},
		{"listen address invalid", []string{"--peer-listen", "256.0.0.1:1", "--peer-tls-dir", good}, 1, "cannot serve peers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(append([]string{"--root", t.TempDir(), "--metrics-addr", "", "--desired", filepath.Join(t.TempDir(), "d.yaml")}, tc.args...), &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.wantError) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr.String(), tc.code, tc.wantError)
			}
		})
	}
}

// The built binary with --peer-listen serves what it pulled to a node of
// its site, over mutual TLS, and counts it; a client without the site's
// certificate gets nothing.
func TestDaemonServesPeers(t *testing.T) {
	s := newSite(t)
	ca, err := peer.NewTestCA()
	if err != nil {
		t.Fatal(err)
	}
	dirs := filepath.Join(t.TempDir(), "peer-tls")
	if err := ca.WriteDir(filepath.Join(dirs, "daemon")); err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteDir(filepath.Join(dirs, "other-node")); err != nil {
		t.Fatal(err)
	}
	_, client, err := peer.LoadTLS(filepath.Join(dirs, "other-node"))
	if err != nil {
		t.Fatal(err)
	}
	weights := randomString(256<<10, 9)
	m, _ := s.push("models/a", "1", map[string]string{"weights.bin": weights})
	s.writeDesired(s.entry("a", "models/a:1"))
	d := s.start("--peer-listen", "127.0.0.1:0", "--peer-tls-dir", filepath.Join(dirs, "daemon"))
	addr := d.waitLog(regexp.MustCompile(`msg="serving peers" addr=(\S+)`))[1]
	d.waitReady("a", m)

	c := &http.Client{Transport: &http.Transport{TLSClientConfig: client}}
	for _, tt := range []struct {
		kind string
		d    digest.Digest
	}{{"manifests", m}, {"blobs", digest.FromString(weights)}} {
		resp, err := c.Get("https://" + addr + "/v2/models/a/" + tt.kind + "/" + tt.d.String())
		if err != nil {
			t.Fatalf("a peer of the site asking for %s: %v", tt.d, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != tt.d {
			t.Errorf("%s %s: %s, %d bytes, %v; want 200 and its bytes", tt.kind, tt.d, resp.Status, len(body), err)
		}
	}
	if got := d.metrics()["barge_edgepuller_peer_served_bytes_total"]; got < float64(len(weights)) {
		t.Errorf("peer_served_bytes_total = %v, want at least the layer's %d bytes", got, len(weights))
	}

	noCert := client.Clone()
	noCert.Certificates = nil
	if resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: noCert}}).Get("https://" + addr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without a certificate of the site got %s", resp.Status)
	}
	d.stop()
}
