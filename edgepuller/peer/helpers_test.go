package peer

import (
	"context"
	"crypto/tls"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/edgepuller/store"
)

// site is one cluster's peer CA with two nodes: a server and a client.
type site struct {
	ca             *TestCA
	server, client *tls.Config
}

func newSite(t *testing.T) site {
	t.Helper()
	ca, err := NewTestCA()
	if err != nil {
		t.Fatal(err)
	}
	return site{ca: ca, server: loadDir(t, ca, "server"), client: clientOf(t, ca, "client")}
}

// loadDir writes a peer TLS directory from ca and returns its server side.
func loadDir(t *testing.T, ca *TestCA, name string) *tls.Config {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := ca.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	server, _, err := LoadTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	return server
}

func clientOf(t *testing.T, ca *TestCA, name string) *tls.Config {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := ca.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	_, client, err := LoadTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// node is a running peer server over a store of its own.
type node struct {
	st   *store.Store
	srv  *Server
	addr string // host:port
	reg  *prometheus.Registry
}

// startNode serves a new store on a loopback port until the test ends.
func startNode(t *testing.T, s site, opts Options) *node {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{NoSync: true, CheckpointBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts.TLS, opts.Metrics = s.server, reg
	srv, err := New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &node{st: st, srv: srv, addr: ln.Addr().String(), reg: reg}
}

// httpClient dials peers with tlsConf, as fetch does: an IP address,
// verified for ServerName.
func httpClient(tlsConf *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, DisableKeepAlives: true}}
}

// repository is an oras-go client of the node over mutual TLS; the name is
// any, since peers ignore it.
func (n *node) repository(t *testing.T, tlsConf *tls.Config) *remote.Repository {
	t.Helper()
	repo, err := remote.NewRepository(n.addr + "/models/any")
	if err != nil {
		t.Fatal(err)
	}
	repo.Client = httpClient(tlsConf)
	return repo
}

func (n *node) url(kind string, d digest.Digest) string {
	return "https://" + n.addr + "/v2/models/any/" + kind + "/" + d.String()
}

// blob returns size random bytes and their descriptor.
func blob(size int, seed uint64) ([]byte, ocispec.Descriptor) {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b, ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(b), Size: int64(size)}
}

// writeSlowly writes data into the node's store as a download would, in
// chunks with a pause between them, and commits; it reports the first
// error on errc.
func writeSlowly(ctx context.Context, st *store.Store, desc ocispec.Descriptor, data []byte, chunk int, pause time.Duration) error {
	w, err := st.Writer(ctx, desc)
	if err != nil {
		return err
	}
	defer w.Close()
	for off := int(w.Offset()); off < len(data); off += chunk {
		if _, err := w.Write(data[off:min(off+chunk, len(data))]); err != nil {
			return err
		}
		time.Sleep(pause)
	}
	return w.Commit(ctx)
}

// requests is how many requests the node's handler answered, whatever
// the code: a refused handshake never reaches it.
func (n *node) requests(t *testing.T) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "barge_edgepuller_peer_requests_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// served is the node's barge_edgepuller_peer_served_bytes_total.
func (n *node) served(t *testing.T) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "barge_edgepuller_peer_served_bytes_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
