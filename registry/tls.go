package registry

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
)

// certReloader serves a key pair from files and reads them again when the
// certificate file changes: cert-manager renews a Secret in place, and the
// kubelet updates the mounted files.
type certReloader struct {
	certFile, keyFile string

	mu    sync.Mutex
	stamp fileStamp
	cert  *tls.Certificate
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certReloader) reload() error {
	fi, err := os.Stat(c.certFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	stamp := fileStamp{fi.ModTime(), fi.Size()}
	if c.cert != nil && stamp == c.stamp {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	c.cert, c.stamp = &cert, stamp
	return nil
}

// get keeps serving the last good pair when a renewal is half written.
func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.reload()
	return c.cert, nil
}
