package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/registry"
)

// peerTLS returns a peer server's and a client's TLS configuration from a
// throwaway site CA, as the chart's peer Secret gives every puller.
func peerTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "site CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	key := newKey()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "barge-peer"}, DNSNames: []string{"barge-peer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert},
		&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "barge-peer"}
}

// startPeer serves what e's registry holds of repo, copied by tag into a
// registry of its own, behind mutual TLS, as another node's puller does.
func (e *env) startPeer(t *testing.T, repo, tag string, cfg *tls.Config) string {
	t.Helper()
	peerReg := registry.StartForTest(t)
	src, _ := remote.NewRepository(e.reg.Host() + "/" + repo)
	dst, _ := remote.NewRepository(peerReg.Host() + "/" + repo)
	src.PlainHTTP, dst.PlainHTTP = true, true
	if _, err := oras.Copy(context.Background(), src, tag, dst, tag, oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: peerReg.Host()}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestPeersBySource: an entry's peers are tried before the origin; the
// status and the metrics say where the bytes came from and which peer the
// pull dropped.
func TestPeersBySource(t *testing.T) {
	e := newEnv(t)
	files := map[string]string{"weights.bin": strings.Repeat("site weights ", 20000)}
	d := e.push("models/site", "1", files)
	serverTLS, clientTLS := peerTLS(t)
	peer := e.startPeer(t, "models/site", "1", serverTLS)
	dead := closedAddr(t)
	reg := prometheus.NewRegistry()
	r := e.start(func(o *agent.Options) { o.Metrics = reg; o.Fetch.PeerTLS = clientTLS })

	ref := e.ref("models/site@" + d.String())
	r.set(agent.Desired{Name: "site", Reference: ref, Insecure: true, Peers: "edge-9=" + dead + " edge-2=" + peer})
	s := r.waitReady(t, "site", d)
	if s.Sources == nil || s.Sources.Peers < int64(len(files["weights.bin"])) || s.Sources.Origin != 0 {
		t.Errorf("status sources %+v, want every byte from the peer", s.Sources)
	}
	if len(s.DroppedPeers) != 1 || s.DroppedPeers[0].Node != "edge-9" || s.DroppedPeers[0].Reason != "Unreachable" || !strings.Contains(s.DroppedPeers[0].Message, dead) {
		t.Errorf("status dropped peers %+v, want edge-9 Unreachable", s.DroppedPeers)
	}
	if n := e.proxy.gets.Load(); n != 0 {
		t.Errorf("the origin served %d GETs, want none", n)
	}
	if got := metric(t, reg, "barge_edgepuller_received_bytes_total", "peer"); got != float64(s.Sources.Peers) {
		t.Errorf("received_bytes_total{source=peer} = %v, want %d", got, s.Sources.Peers)
	}
	if got := metric(t, reg, "barge_edgepuller_received_bytes_total", "origin"); got != 0 {
		t.Errorf("received_bytes_total{source=origin} = %v, want 0", got)
	}
	if got := metric(t, reg, "barge_edgepuller_peers_dropped_total", "Unreachable"); got != 1 {
		t.Errorf("peers_dropped_total{reason=Unreachable} = %v, want 1", got)
	}
	if got := metric(t, reg, "barge_edgepuller_peers_dropped_total", "Corrupt"); got != 0 {
		t.Errorf("peers_dropped_total{reason=Corrupt} = %v, want 0", got)
	}

	// Without the site's TLS configuration, peers are not used: the
	// origin serves, and the log says why.
	e2 := newEnv(t)
	d2 := e2.push("models/site", "1", files)
	r2 := e2.start(nil)
	r2.set(agent.Desired{Name: "site", Reference: e2.ref("models/site@" + d2.String()), Insecure: true, Peers: "edge-2=" + peer})
	s2 := r2.waitReady(t, "site", d2)
	if s2.Sources == nil || s2.Sources.Peers != 0 || s2.Sources.Origin < int64(len(files["weights.bin"])) {
		t.Errorf("without peer TLS: status sources %+v, want every byte from the origin", s2.Sources)
	}
	if !strings.Contains(r2.logs.String(), "no peer TLS") {
		t.Errorf("the log does not say why the peers were not used:\n%s", r2.logs)
	}
}

func TestParsePeers(t *testing.T) {
	many := strings.Repeat("n=1.2.3.4:1 ", 17)
	for _, tt := range []struct {
		in   string
		want string // the peers as node@addr, or the error
	}{
		{"", ""},
		{"edge-2=10.0.0.2:5050 edge-1.zone-a=[fd00::1]:5050", "edge-2@10.0.0.2:5050 edge-1.zone-a@[fd00::1]:5050"},
		{"  edge-2=peer.site.example:5050  ", "edge-2@peer.site.example:5050"},
		{"edge-2", `peer "edge-2": want node=host:port`},
		{"Edge-2=10.0.0.2:5050", "want node=host:port with the node's name"},
		{"edge-2=10.0.0.2", `peer edge-2: address "10.0.0.2": want host:port`},
		{"edge-2=10.0.0.2:0", "not a port number"},
		{"edge-2=10.0.0.2:5050=x", "not a port number"},
		{"edge-2=bad_host:5050", "neither an IP address nor a DNS name"},
		{"edge-2=10.0.0.2:5050 edge-2=10.0.0.3:5050", "peer edge-2 is listed twice"},
		{many, "17 peers, more than 16"},
	} {
		peers, err := agent.ParsePeers(tt.in)
		var got []string
		for _, p := range peers {
			got = append(got, p.Node+"@"+p.Addr)
		}
		if err != nil {
			got = []string{err.Error()}
		}
		if g := strings.Join(got, " "); !strings.Contains(g, tt.want) || (tt.want == "" && g != "") {
			t.Errorf("ParsePeers(%q) = %q, want %q", tt.in, g, tt.want)
		}
	}
	err := agent.Validate([]agent.Desired{{Name: "a", Reference: "reg.example/m:1", Peers: "edge-2"}})
	if err == nil || !strings.Contains(err.Error(), "artifact #1 (a): artifact a: peers: peer \"edge-2\"") {
		t.Errorf("Validate of an entry with a bad peer: %v", err)
	}
}

func FuzzParsePeers(f *testing.F) {
	for _, s := range []string{"", "edge-2=10.0.0.2:5050 edge-3=10.0.0.3:5050", "a=[::1]:1", "x=y=z", "a=b:c", " = ", "a=h:65536"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		peers, err := agent.ParsePeers(s)
		if err != nil {
			return
		}
		if len(peers) > 16 {
			t.Fatalf("%d peers accepted", len(peers))
		}
		var parts []string
		for _, p := range peers {
			if p.Node == "" || strings.ContainsAny(p.Node+p.Addr, " \t\n=") {
				t.Fatalf("accepted peer %+v", p)
			}
			if _, _, err := net.SplitHostPort(p.Addr); err != nil {
				t.Fatalf("accepted address %q: %v", p.Addr, err)
			}
			parts = append(parts, p.Node+"="+p.Addr)
		}
		again, err := agent.ParsePeers(strings.Join(parts, " "))
		if err != nil || len(again) != len(peers) {
			t.Fatalf("what ParsePeers(%q) accepted does not parse again: %v", s, err)
		}
	})
}
