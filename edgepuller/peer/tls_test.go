package peer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bargeml/barge/edgepuller/store"
)

// TestRefusedAtHandshake: nobody without a certificate of the site gets a
// byte: a client without a certificate, with one from another CA, or
// speaking plain HTTP never reaches the handler; and a client does not
// talk to a server whose certificate another CA signed.
func TestRefusedAtHandshake(t *testing.T) {
	s := newSite(t)
	n := startNode(t, s, Options{})
	other, err := NewTestCA()
	if err != nil {
		t.Fatal(err)
	}
	noCert := s.client.Clone()
	noCert.Certificates = nil
	foreign := clientOf(t, other, "foreign")
	foreign.RootCAs = s.client.RootCAs // trusts the site's server, but is not of the site

	for _, tt := range []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"no client certificate", httpClient(noCert), "https://" + n.addr + "/v2/"},
		{"certificate of another CA", httpClient(foreign), "https://" + n.addr + "/v2/"},
		{"plain HTTP", http.DefaultClient, "http://" + n.addr + "/v2/"},
	} {
		resp, err := tt.c.Get(tt.url)
		if err != nil {
			continue
		}
		resp.Body.Close()
		// net/http answers plain HTTP on a TLS port itself, without
		// reaching the handler: 400 "HTTP request to an HTTPS server".
		if tt.url[:5] != "http:" || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %s; want the connection refused", tt.name, resp.Status)
		}
	}
	if got := n.requests(t); got != 0 {
		t.Errorf("the handler answered %v requests from clients that are not of the site", got)
	}

	// The server of another site: the client refuses it.
	m := startNode(t, site{server: loadDir(t, other, "other-server")}, Options{})
	if resp, err := httpClient(s.client).Get("https://" + m.addr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Errorf("the client talked to a server of another CA: %s", resp.Status)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("refusing a server of another CA: %v; want a certificate error", err)
	}

	// And the site's own client is welcome.
	resp, err := httpClient(s.client).Get("https://" + n.addr + "/v2/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ with the site's certificate: %v", err)
	}
	resp.Body.Close()
}

// TestHandlerWithoutClientCertificate: the handler run without mutual TLS
// (a server set up by mistake) refuses every request, and Serve refuses to
// start without it.
func TestHandlerWithoutClientCertificate(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without a client certificate: %s, want 401", resp.Status)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := srv.Serve(context.Background(), ln); err == nil || !strings.Contains(err.Error(), "mutual TLS") {
		t.Errorf("Serve without TLS: %v, want a refusal naming mutual TLS", err)
	}
}

// TestLoadTLSErrors: what is wrong with a TLS directory is said at
// startup, naming the file and what to do.
func TestLoadTLSErrors(t *testing.T) {
	ca, err := NewTestCA()
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewTestCA()
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(t.TempDir(), "good")
	if err := ca.WriteDir(good); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(good, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tt := range []struct {
		name  string
		files map[string][]byte // over the good directory's
		want  []string
	}{
		{"missing CA", map[string][]byte{CAFile: nil}, []string{CAFile, "is missing", "mount the peer Secret"}},
		{"missing key", map[string][]byte{KeyFile: nil}, []string{KeyFile, "is missing"}},
		{"CA not PEM", map[string][]byte{CAFile: []byte("not a certificate")}, []string{CAFile, "no PEM certificate"}},
		{"key of another certificate", map[string][]byte{KeyFile: otherKey(t)}, []string{CertFile, KeyFile, "not a certificate and its key"}},
		{"certificate of another CA", map[string][]byte{CAFile: other.certPEM}, []string{CertFile, "does not verify", "site CA"}},
		{"certificate for another name", certFor(t, ca, []string{"other"}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}), []string{CertFile, "DNS name barge-peer"}},
		{"server usage only", certFor(t, ca, []string{ServerName}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}), []string{"clientAuth"}},
		{"client usage only", certFor(t, ca, []string{ServerName}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}), []string{"serverAuth"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range []string{CAFile, CertFile, KeyFile} {
				b, ok := tt.files[name]
				if !ok {
					b = read(name)
				}
				if b != nil {
					os.WriteFile(filepath.Join(dir, name), b, 0o600)
				}
			}
			_, _, err := LoadTLS(dir)
			if err == nil {
				t.Fatal("LoadTLS accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if _, _, err := LoadTLS(""); err == nil {
		t.Error("LoadTLS of no directory succeeded")
	}
	server, client, err := LoadTLS(good)
	if err != nil {
		t.Fatal(err)
	}
	if server.MinVersion != tls.VersionTLS13 || client.MinVersion != tls.VersionTLS13 ||
		server.ClientAuth != tls.RequireAndVerifyClientCert || client.ServerName != ServerName {
		t.Errorf("LoadTLS configs: server min %x auth %v, client min %x name %q", server.MinVersion, server.ClientAuth, client.MinVersion, client.ServerName)
	}
}

// certFor returns a certificate and key signed by ca with the given names
// and usages, as files of a TLS directory.
func certFor(t *testing.T, ca *TestCA, names []string, usages []x509.ExtKeyUsage) map[string][]byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	return map[string][]byte{
		CertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

func otherKey(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
