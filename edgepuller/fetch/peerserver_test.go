package fetch_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/peer"
	"github.com/bargeml/barge/edgepuller/store"
)

// node is a puller of the site: its store, its peer server and its side
// of the site's mutual TLS.
type node struct {
	st     *store.Store
	srv    *peer.Server
	addr   string
	client *tls.Config // Options.PeerTLS
}

// startNode opens a store and serves it to the site on a loopback port
// with the real peer server, as barge-edgepuller --peer-listen does.
func startNode(t *testing.T, ca *peer.TestCA) *node {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "peer-tls")
	if err := ca.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	serverTLS, clientTLS, err := peer.LoadTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(t)
	srv, err := peer.New(st, peer.Options{TLS: serverTLS})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return &node{st: st, srv: srv, addr: ln.Addr().String(), client: clientTLS}
}

// TestFollowsSeedThroughPeerServer: with the real peer server, a follower
// that starts with its seed follows the seed's download as it arrives: the
// origin sends every blob once, to the seed, and the follower receives
// every byte from the seed.
func TestFollowsSeedThroughPeerServer(t *testing.T) {
	s := newPeerSite(t)
	ca, err := peer.NewTestCA()
	if err != nil {
		t.Fatal(err)
	}
	seed, follower := startNode(t, ca), startNode(t, ca)
	c := newCounter(t)
	ctx := context.Background()

	seedDone := make(chan error, 1)
	var seedRes fetch.Result
	go func() {
		var err error
		// Paced, so that the follower has a download to follow.
		_, _, seedRes, err = fetch.Pull(ctx, seed.st, s.byDigest(), fetch.Options{PlainHTTP: true, Client: c.client(),
			LimitRate: 4 << 20, Announce: seed.srv.Announce, PeerTLS: seed.client})
		seedDone <- err
	}()
	_, _, res, err := fetch.Pull(ctx, follower.st, s.byDigest(), fetch.Options{PlainHTTP: true, Client: c.client(),
		Peers: []fetch.Peer{{Node: "seed", Addr: seed.addr}}, PeerTLS: follower.client, Announce: follower.srv.Announce})
	if err != nil {
		t.Fatalf("follower: %v", err)
	}
	if err := <-seedDone; err != nil {
		t.Fatalf("seed: %v", err)
	}
	assertStored(t, seed.st, s.m)
	assertStored(t, follower.st, s.m)
	total := s.total(t)
	if res.FromPeers != total || res.FromOrigin != 0 || len(res.Dropped) != 0 {
		t.Errorf("follower: %d bytes from the seed, %d from the origin, dropped %v; want all %d from the seed",
			res.FromPeers, res.FromOrigin, dropped(res), total)
	}
	if seedRes.FromOrigin != total {
		t.Errorf("seed: %d bytes from the origin, want %d", seedRes.FromOrigin, total)
	}
	if sent := bodyBytes(c.requests(s.origin.Host(), http.MethodGet, "")); sent != total {
		t.Errorf("the origin sent %d bytes for a %d-byte model pulled by two nodes: want each byte once", sent, total)
	}
}
