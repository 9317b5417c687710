package chart

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

const peerSecret = release + "-barge-edgepuller-peer-tls"

// TestPeersOffByDefault: without edgePuller.peers the pullers serve nothing
// to each other, open no port on the node, and the controller lists no
// peers; the site flags still have their defaults.
func TestPeersOffByDefault(t *testing.T) {
	objs := render(t)
	for _, o := range objs.find("Secret", "") {
		if o.GetName() == peerSecret {
			t.Errorf("Secret %s rendered with peers off", peerSecret)
		}
	}
	ds := decode[appsv1.DaemonSet](t, objs.one(t, "DaemonSet", "edgepuller"))
	c := container(t, &ds.Spec.Template, "edgepuller")
	for _, f := range []string{"peer-listen", "peer-tls-dir"} {
		if v, ok := flag(c.Args, f); ok {
			t.Errorf("--%s=%s with peers off", f, v)
		}
	}
	for _, p := range c.Ports {
		if p.HostPort != 0 || p.Name == "peers" {
			t.Errorf("port %+v with peers off", p)
		}
	}
	d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "controller"))
	ctl := container(t, &d.Spec.Template, "controller")
	if v, ok := flag(ctl.Args, "peer-port"); ok {
		t.Errorf("controller --peer-port=%s with peers off", v)
	}
	for name, want := range map[string]string{"site-label": "topology.kubernetes.io/zone", "seeds-per-site": "1", "max-peers": "4"} {
		if got, _ := flag(ctl.Args, name); got != want {
			t.Errorf("controller --%s=%q, want %q", name, got, want)
		}
	}
}

// TestPeers: with edgePuller.peers.enabled each puller serves on the port,
// exposed on its node, with the peer certificate mounted read-only; the
// controller gets the port to list peers at; the site values reach the
// controller's flags.
func TestPeers(t *testing.T) {
	objs := render(t, "--set", "edgePuller.peers.enabled=true,controller.siteLabel=example.com/shop,controller.seedsPerSite=2,controller.maxPeers=6")
	ds := decode[appsv1.DaemonSet](t, objs.one(t, "DaemonSet", "edgepuller"))
	tmpl := &ds.Spec.Template
	c := container(t, tmpl, "edgepuller")
	if v, _ := flag(c.Args, "peer-listen"); v != ":5050" {
		t.Errorf("--peer-listen=%q, want :5050", v)
	}
	dir, _ := flag(c.Args, "peer-tls-dir")
	if dir != "/etc/barge/peer-tls" {
		t.Errorf("--peer-tls-dir=%q, want /etc/barge/peer-tls", dir)
	}
	i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "peers" })
	if i < 0 || c.Ports[i].ContainerPort != 5050 || c.Ports[i].HostPort != 5050 || c.Ports[i].Protocol != corev1.ProtocolTCP {
		t.Errorf("ports %+v: want peers 5050/TCP on the host's 5050", c.Ports)
	}
	m := mountOf(t, c, "peer-tls")
	if m.MountPath != dir || !m.ReadOnly {
		t.Errorf("peer-tls mount %+v: want read-only at %s", m, dir)
	}
	v := volumeOf(t, tmpl, "peer-tls")
	if v.Secret == nil || v.Secret.SecretName != peerSecret {
		t.Fatalf("peer-tls volume %+v: want Secret %s", v, peerSecret)
	}
	var files []string
	for _, item := range v.Secret.Items {
		if item.Key != item.Path {
			t.Errorf("Secret key %s at %s", item.Key, item.Path)
		}
		files = append(files, item.Path)
	}
	if !slices.Equal(files, []string{"ca.crt", "tls.crt", "tls.key"}) {
		t.Errorf("peer-tls files %v, want ca.crt tls.crt tls.key", files)
	}
	secretVolumesAre0400(t, "edgepuller", tmpl)

	d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "controller"))
	ctl := container(t, &d.Spec.Template, "controller")
	for name, want := range map[string]string{"peer-port": "5050", "site-label": "example.com/shop", "seeds-per-site": "2", "max-peers": "6"} {
		if got, _ := flag(ctl.Args, name); got != want {
			t.Errorf("controller --%s=%q, want %q", name, got, want)
		}
	}

	// Another port, not on the host; an operator's own Secret.
	objs = render(t, "--set", "edgePuller.peers.enabled=true,edgePuller.peers.port=6000,edgePuller.peers.hostPort=false,edgePuller.peers.tls.secretName=site-pki")
	for _, o := range objs.find("Secret", "") {
		if o.GetName() == peerSecret {
			t.Errorf("Secret %s generated although edgePuller.peers.tls.secretName names one", peerSecret)
		}
	}
	ds = decode[appsv1.DaemonSet](t, objs.one(t, "DaemonSet", "edgepuller"))
	c = container(t, &ds.Spec.Template, "edgepuller")
	if v, _ := flag(c.Args, "peer-listen"); v != ":6000" {
		t.Errorf("--peer-listen=%q, want :6000", v)
	}
	for _, p := range c.Ports {
		if p.HostPort != 0 {
			t.Errorf("port %+v on the host with hostPort false", p)
		}
	}
	if v := volumeOf(t, &ds.Spec.Template, "peer-tls"); v.Secret == nil || v.Secret.SecretName != "site-pki" {
		t.Errorf("peer-tls volume %+v: want Secret site-pki", v)
	}
	d = decode[appsv1.Deployment](t, objs.one(t, "Deployment", "controller"))
	if v, _ := flag(container(t, &d.Spec.Template, "controller").Args, "peer-port"); v != "6000" {
		t.Errorf("controller --peer-port=%q, want 6000", v)
	}

	// Peers without the chart's pullers: the controller lists none.
	d = decode[appsv1.Deployment](t, render(t, "--set", "edgePuller.peers.enabled=true,edgePuller.enabled=false").one(t, "Deployment", "controller"))
	if v, ok := flag(container(t, &d.Spec.Template, "controller").Args, "peer-port"); ok {
		t.Errorf("controller --peer-port=%s without the chart's pullers", v)
	}
}

// TestPeerCertificate: the generated Secret is a CA and one certificate
// for barge-peer, valid about ten years, for server and client use, and it
// works as the pullers use it: mutual TLS between two of them, dialled by
// IP with server name barge-peer; a client without the certificate is
// refused. Each install gets its own.
func TestPeerCertificate(t *testing.T) {
	objs := render(t, "--set", "edgePuller.peers.enabled=true")
	data := secretData(t, objs, peerSecret)
	pair, err := tls.X509KeyPair(data["tls.crt"], data["tls.key"])
	if err != nil {
		t.Fatalf("tls.crt and tls.key: %v", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cert.DNSNames, []string{"barge-peer"}) || len(cert.IPAddresses) != 0 {
		t.Errorf("certificate names %v %v, want DNS barge-peer only", cert.DNSNames, cert.IPAddresses)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if !slices.Contains(cert.ExtKeyUsage, u) {
			t.Errorf("extended key usage %v lacks %v", cert.ExtKeyUsage, u)
		}
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life < 3640*24*time.Hour || life > 3660*24*time.Hour {
		t.Errorf("certificate valid for %s, want 10 years", life)
	}
	pool := x509.NewCertPool()
	block, _ := pem.Decode(data["ca.crt"])
	if block == nil {
		t.Fatal("ca.crt is not PEM")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !ca.IsCA {
		t.Fatalf("ca.crt: %v, CA %v", err, ca != nil && ca.IsCA)
	}
	pool.AddCert(ca)

	server := &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	client := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "barge-peer", MinVersion: tls.VersionTLS12}
	if err := handshake(t, server, client); err != nil {
		t.Errorf("two pullers with the generated certificate: %v", err)
	}
	anonymous := client.Clone()
	anonymous.Certificates = nil
	if err := handshake(t, server, anonymous); err == nil {
		t.Error("a client without a certificate was served")
	}

	other := secretData(t, render(t, "--set", "edgePuller.peers.enabled=true"), peerSecret)
	if string(other["tls.key"]) == string(data["tls.key"]) || string(other["ca.crt"]) == string(data["ca.crt"]) {
		t.Error("two installs generated the same peer CA or key")
	}
}

// handshake runs one TLS connection over loopback, by IP, and returns the
// first error of either side, after one byte from server to client.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		if err := c.(*tls.Conn).Handshake(); err != nil {
			served <- err
			return
		}
		_, err = c.Write([]byte{1})
		served <- err
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(), client)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		return err
	}
	return <-served
}
