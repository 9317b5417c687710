package upload_test

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/edgepuller/upload"
	"github.com/bargeml/barge/registry"
)

// startRegistry starts a real registry for the test and, at its end, drops
// idle client connections first (http.Server.Shutdown waits for them).
func startRegistry(t testing.TB) *registry.Registry {
	reg := registry.StartForTest(t)
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	return reg
}

// writeRandom writes n incompressible bytes, the same for the same seed,
// to a new file and returns its path and descriptor.
func writeRandom(t testing.TB, n int64, seed uint64) (string, ocispec.Descriptor) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "weights.bin")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(s), n); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.NewDigest(digest.SHA256, h), Size: n}
}

// repository opens host/name over plain HTTP, wrapped for resumable uploads.
func repository(t testing.TB, host, name string, opts upload.Options) *upload.Repository {
	t.Helper()
	r, err := remote.NewRepository(host + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	return upload.New(r, opts)
}

// sameBlob fetches desc from the registry at host and checks its bytes
// against the file at path.
func sameBlob(t testing.TB, host, name string, desc ocispec.Descriptor, path string) {
	t.Helper()
	r, err := remote.NewRepository(host + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	rc, err := r.Blobs().Fetch(context.Background(), desc)
	if err != nil {
		t.Fatalf("fetch %s back: %v", desc.Digest, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(path)
	if got := digest.NewDigest(digest.SHA256, h); got != desc.Digest || n != int64(len(want)) || got != digest.FromBytes(want) {
		t.Fatalf("the registry's blob is %d bytes %s; want %d bytes %s", n, got, len(want), desc.Digest)
	}
}

// cutProxy is a TCP proxy in front of a registry that counts the bytes
// clients send through it and can cut every connection once a given number
// of bytes has gone up: a link that drops, which no real registry can be
// made to do on cue. At the cut the client's side is closed at once and the
// registry's side half-closed, so the registry reads what had crossed the
// link, as after a real cut, instead of losing its socket buffer to a reset.
type cutProxy struct {
	l      net.Listener
	target string
	up     atomic.Int64 // bytes sent by clients, headers included

	mu    sync.Mutex
	cutAt int64 // cut when up reaches this; 0 for never
	fired chan struct{}
	pairs map[*pair]bool
}

type pair struct{ client, server net.Conn }

// cut ends the client's side and half-closes the registry's.
func (p *pair) cut() {
	p.client.Close()
	p.server.(*net.TCPConn).CloseWrite()
}

func startCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, pairs: map[*pair]bool{}}
	go p.serve()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for c := range p.pairs {
			c.client.Close()
			c.server.Close()
		}
	})
	return p
}

func (p *cutProxy) Host() string { return p.l.Addr().String() }

// Sent is the bytes clients sent since the proxy started.
func (p *cutProxy) Sent() int64 { return p.up.Load() }

// cutAfter arms a cut: once clients have sent n bytes in all (counting
// from the start), every open connection is cut, once. The returned
// channel is closed when it happens.
func (p *cutProxy) cutAfter(n int64) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutAt, p.fired = n, make(chan struct{})
	return p.fired
}

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.relay(c)
	}
}

func (p *cutProxy) relay(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	c := &pair{client: client, server: server}
	p.mu.Lock()
	p.pairs[c] = true
	p.mu.Unlock()
	go func() {
		// Drain the registry's answers even after the client is gone, so
		// that closing this side never resets the registry's.
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				client.Write(buf[:n])
			}
			if err != nil {
				break
			}
		}
		client.Close()
		server.Close()
		p.mu.Lock()
		delete(p.pairs, c)
		p.mu.Unlock()
	}()
	defer c.cut()
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			n = p.allow(n)
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
			if p.fire() {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// allow trims a read so that the bytes sent stop exactly at the cut.
func (p *cutProxy) allow(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cutAt > 0 {
		n = int(min(int64(n), p.cutAt-p.up.Load()))
	}
	p.up.Add(int64(n))
	return n
}

// fire cuts every connection if the cut is due.
func (p *cutProxy) fire() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cutAt <= 0 || p.up.Load() < p.cutAt {
		return false
	}
	p.cutAt = 0
	close(p.fired)
	for c := range p.pairs {
		c.cut()
	}
	return true
}

type ocispecDescriptor = ocispec.Descriptor

func digestReader(r io.Reader) (ocispec.Descriptor, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.NewDigest(digest.SHA256, h), Size: n}, err
}
