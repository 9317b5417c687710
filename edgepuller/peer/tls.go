package peer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// LoadTLS reads a peer TLS directory (CAFile, CertFile, KeyFile) and returns
// both sides of the site's mutual TLS: server accepts only clients that
// present a certificate signed by the CA, and client trusts only servers
// whose certificate the CA signed for ServerName, presenting this node's
// certificate. Both require TLS 1.3.
//
// The certificate must carry both the serverAuth and the clientAuth
// extended key usages, as helm's genSignedCert makes it, since every node
// is a client and a server with the same certificate.
func LoadTLS(dir string) (server, client *tls.Config, err error) {
	if dir == "" {
		return nil, nil, errors.New("peer TLS: no directory given: point it at the mounted peer Secret (ca.crt, tls.crt, tls.key)")
	}
	caPEM, err := readTLSFile(dir, CAFile, "the site CA")
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("peer TLS: %s holds no PEM certificate: it must be the site CA that signed %s",
			filepath.Join(dir, CAFile), CertFile)
	}
	certPEM, err := readTLSFile(dir, CertFile, "this node's certificate")
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := readTLSFile(dir, KeyFile, "this node's private key")
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("peer TLS: %s and %s in %s are not a certificate and its key: %w",
			CertFile, KeyFile, dir, err)
	}
	if err := checkCert(cert, pool, dir); err != nil {
		return nil, nil, err
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"http/1.1"},
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   ServerName,
	}
	return server, client, nil
}

func readTLSFile(dir, name, what string) ([]byte, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("peer TLS: %s (%s) is missing: mount the peer Secret with keys %s, %s and %s at %s",
			path, what, CAFile, CertFile, KeyFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("peer TLS: read %s (%s): %w", path, what, err)
	}
	return b, nil
}

// checkCert refuses at startup a certificate that every peer would refuse
// at the handshake, saying why, rather than leave each pull to find out.
func checkCert(cert tls.Certificate, pool *x509.CertPool, dir string) error {
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("peer TLS: parse %s: %w", filepath.Join(dir, CertFile), err)
		}
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	for _, use := range []struct {
		name string
		eku  x509.ExtKeyUsage
	}{{"serverAuth", x509.ExtKeyUsageServerAuth}, {"clientAuth", x509.ExtKeyUsageClientAuth}} {
		_, err := leaf.Verify(x509.VerifyOptions{
			DNSName:       ServerName,
			Roots:         pool,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{use.eku},
			CurrentTime:   time.Now(),
		})
		if err != nil {
			return fmt.Errorf("peer TLS: %s does not verify against %s for %s with %s usage (peers would refuse it): %w; "+
				"issue it from the site CA with DNS name %s and both serverAuth and clientAuth usages",
				filepath.Join(dir, CertFile), CAFile, ServerName, use.name, err, ServerName)
		}
	}
	return nil
}
