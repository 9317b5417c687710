package peer_test

import (
	"context"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/peer"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/registry"
)

// TestPullFollowsSeed: two nodes of a site pull the same model with the
// puller's own fetch.Pull: the seed from the origin, announcing what it
// fetches to its peer server; the follower with the seed as its peer. The
// origin sends each byte once: the follower gets everything from the seed,
// also when it asks before the seed has started (the start race), and when
// the seed stops midway it finishes from the origin without fetching again
// what the seed gave it.
func TestPullFollowsSeed(t *testing.T) {
	origin := registry.StartForTest(t)
	files := map[string]string{}
	for i, name := range []string{"a.bin", "b.bin", "c.bin"} {
		files[name] = random(1<<20, uint64(i))
	}
	origin.PushForTest(t, "models/m", "v1", files)
	ref := origin.Host() + "/models/m:v1"
	const rate = 2 << 20 // the seed's uplink: the model takes about 1.5 s

	for _, tt := range []struct {
		name          string
		followerFirst bool
		stopSeedAt    time.Duration // 0: the seed finishes
	}{
		{"follower after the seed", false, 0},
		{"follower before the seed", true, 0},
		{"seed stops midway", false, 700 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			ca, err := peer.NewTestCA()
			if err != nil {
				t.Fatal(err)
			}
			seedTLS, _ := tlsDir(t, ca)
			_, followerTLS := tlsDir(t, ca)
			seedStore, followerStore := openStore(t), openStore(t)
			srv, err := peer.New(seedStore, peer.Options{TLS: seedTLS})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ctx, ln)

			type pulled struct {
				res fetch.Result
				err error
			}
			seedCtx, stopSeed := context.WithCancel(ctx)
			defer stopSeed()
			seeded, followed := make(chan pulled, 1), make(chan pulled, 1)
			startSeed := func() {
				go func() {
					_, _, res, err := fetch.Pull(seedCtx, seedStore, ref, fetch.Options{PlainHTTP: true, LimitRate: rate, Announce: srv.Announce})
					seeded <- pulled{res, err}
				}()
			}
			startFollower := func() {
				go func() {
					_, _, res, err := fetch.Pull(ctx, followerStore, ref, fetch.Options{PlainHTTP: true,
						Peers: []fetch.Peer{{Node: "seed", Addr: ln.Addr().String()}}, PeerTLS: followerTLS,
						Backoff: func(int) time.Duration { return 50 * time.Millisecond }})
					followed <- pulled{res, err}
				}()
			}
			if tt.followerFirst {
				startFollower()
				time.Sleep(300 * time.Millisecond)
				startSeed()
			} else {
				startSeed()
				time.Sleep(100 * time.Millisecond)
				startFollower()
			}
			if tt.stopSeedAt > 0 {
				time.AfterFunc(tt.stopSeedAt, stopSeed)
			}
			f := <-followed
			if f.err != nil {
				t.Fatalf("the follower's pull: %v", f.err)
			}
			s := <-seeded
			if tt.stopSeedAt == 0 && s.err != nil {
				t.Fatalf("the seed's pull: %v", s.err)
			}
			total := f.res.Fetched
			t.Logf("follower: %d bytes, %d from the seed, %d from the origin, %d retries, dropped %v; seed: %d from the origin",
				total, f.res.FromPeers, f.res.FromOrigin, f.res.Retries, f.res.Dropped, s.res.FromOrigin)
			switch {
			case tt.stopSeedAt == 0:
				if f.res.FromOrigin != 0 || f.res.FromPeers != total || len(f.res.Dropped) != 0 || s.res.FromOrigin != total {
					t.Errorf("the follower got %d bytes from the seed and %d from the origin (dropped %v), the seed %d from the origin; want all %d from the seed, and the origin to send them once",
						f.res.FromPeers, f.res.FromOrigin, f.res.Dropped, s.res.FromOrigin, total)
				}
			default:
				if f.res.FromPeers == 0 || f.res.FromOrigin == 0 {
					t.Errorf("the follower got %d bytes from the seed and %d from the origin; want some from each", f.res.FromPeers, f.res.FromOrigin)
				}
				if limit := int64(3<<20) + 4096; total > limit { // the model and its manifest and config
					t.Errorf("the follower received %d bytes for a model of about 3 MiB: it fetched again what the seed gave it", total)
				}
			}
		})
	}
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func random(n int, seed uint64) string {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}
