package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
)

// StartForTest starts a registry on a free loopback port, storing in a
// temporary directory, and stops it when the test ends. Disk, not memory:
// distribution's in-memory driver copies a blob on every chunk appended, and
// takes seconds for what the filesystem does in milliseconds. Deletes are
// on: fault tests delete blobs to make a registry that lost content.
func StartForTest(tb testing.TB) *Registry {
	tb.Helper()
	r, err := Start(context.Background(), Options{Addr: "127.0.0.1:0", Root: tb.TempDir(), EnableDelete: true})
	if err != nil {
		tb.Fatalf("start registry: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			tb.Errorf("stop registry: %v", err)
		}
	})
	return r
}

// PushForTest writes files (relative path → content) into a new directory,
// packs them as a model into repo on r, tags the manifest, and returns its
// descriptor.
func (r *Registry) PushForTest(tb testing.TB, repo, tag string, files map[string]string) ocispec.Descriptor {
	tb.Helper()
	ctx := context.Background()
	target := r.repoForTest(tb, repo)
	desc, err := artifact.Pack(ctx, target, writeTreeForTest(tb, files), artifact.PackOptions{})
	if err != nil {
		tb.Fatalf("push %s: %v", repo, err)
	}
	if err := target.Tag(ctx, desc, tag); err != nil {
		tb.Fatalf("tag %s:%s: %v", repo, tag, err)
	}
	return desc
}

// PushJointForTest packs edge and cloud (relative path → content) as the
// two parts of a joint model into repo on r, tags the index, and returns
// its descriptor and its parts.
func (r *Registry) PushJointForTest(tb testing.TB, repo, tag string, edge, cloud map[string]string, opts artifact.PackOptions) (ocispec.Descriptor, artifact.JointParts) {
	tb.Helper()
	ctx := context.Background()
	target := r.repoForTest(tb, repo)
	desc, err := artifact.PackJoint(ctx, target, writeTreeForTest(tb, edge), writeTreeForTest(tb, cloud), opts)
	if err != nil {
		tb.Fatalf("push joint model %s: %v", repo, err)
	}
	if tag != "" {
		if err := target.Tag(ctx, desc, tag); err != nil {
			tb.Fatalf("tag %s:%s: %v", repo, tag, err)
		}
	}
	a, err := artifact.Inspect(ctx, target, desc)
	if err != nil {
		tb.Fatal(err)
	}
	parts, err := artifact.JointPartsOf(a)
	if err != nil {
		tb.Fatal(err)
	}
	return desc, parts
}

func (r *Registry) repoForTest(tb testing.TB, repo string) *remote.Repository {
	tb.Helper()
	target, err := remote.NewRepository(r.Host() + "/" + repo)
	if err != nil {
		tb.Fatal(err)
	}
	target.PlainHTTP = true
	return target
}

// writeTreeForTest writes files (relative path → content) into a new
// directory and returns it.
func writeTreeForTest(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// TLSFilesForTest makes a CA and a server certificate it signed for hosts
// (names or IP addresses), writes them as PEM files in a temporary
// directory, and returns the paths of the CA certificate, the server
// certificate and its key.
func TLSFilesForTest(tb testing.TB, hosts ...string) (caFile, certFile, keyFile string) {
	tb.Helper()
	dir := tb.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "barge test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}
	return write("ca.crt", "CERTIFICATE", caDER), write("tls.crt", "CERTIFICATE", der), write("tls.key", "PRIVATE KEY", keyDER)
}

// HtpasswdForTest writes an htpasswd file of users (name → password) with
// bcrypt entries of the lowest cost, and returns its path.
func HtpasswdForTest(tb testing.TB, users map[string]string) string {
	tb.Helper()
	var b strings.Builder
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			tb.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	p := filepath.Join(tb.TempDir(), "htpasswd")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Silent is a registry that accepts TCP connections, reads what is sent and
// never answers: a wedged process or a hung proxy, the one fault no real
// registry can be made to produce on cue.
type Silent struct {
	l        net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

// SilentForTest starts a Silent on a free loopback port and closes it and
// every connection it accepted when the test ends.
func SilentForTest(tb testing.TB) *Silent {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Silent{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			c.Close()
		}
	})
	return s
}

// Host is the silent registry's host:port.
func (s *Silent) Host() string { return s.l.Addr().String() }

// Accepted counts the connections it took.
func (s *Silent) Accepted() int64 { return s.accepted.Load() }
