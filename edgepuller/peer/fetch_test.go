package peer_test

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

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/peer"
	"github.com/bargeml/barge/edgepuller/store"
)

// TestFetchBlobFollowsSeed: the puller's own downloader, fetch.FetchBlob,
// pointed at a seed's peer server over mutual TLS, gets a blob the seed is
// still downloading, and gets it right when the seed's download is reset
// midway: the cut body makes it resume with Range, and the seed holds the
// resumed request until its new download reaches that offset.
func TestFetchBlobFollowsSeed(t *testing.T) {
	for _, tt := range []struct {
		name  string
		reset bool
	}{{"straight", false}, {"seed reset midway", true}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ca, err := peer.NewTestCA()
			if err != nil {
				t.Fatal(err)
			}
			seedTLS, _ := tlsDir(t, ca)
			_, followerTLS := tlsDir(t, ca)

			seed, err := store.Open(t.TempDir(), store.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			srv, err := peer.New(seed, peer.Options{TLS: seedTLS})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ctx, ln)

			data := make([]byte, 2<<20)
			r := rand.New(rand.NewPCG(7, 7))
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: int64(len(data))}
			done := srv.Announce(desc)
			defer done()
			seeded := make(chan error, 1)
			go func() { seeded <- download(ctx, seed, desc, data, tt.reset) }()

			follower, err := store.Open(t.TempDir(), store.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			res, err := fetch.FetchBlob(ctx, follower, ln.Addr().String()+"/models/any", desc, fetch.Options{
				Client:       &http.Client{Transport: &http.Transport{TLSClientConfig: followerTLS}},
				Backoff:      func(int) time.Duration { return 10 * time.Millisecond },
				StallTimeout: 20 * time.Second,
			})
			if err != nil {
				t.Fatalf("FetchBlob from the seed: %v", err)
			}
			if ok, err := follower.Exists(ctx, desc); !ok || err != nil {
				t.Fatalf("the follower's store does not hold the verified blob: %v", err)
			}
			if tt.reset && res.Retries == 0 {
				t.Errorf("the seed's reset did not cut the follower's body (no retry); result %+v", res)
			}
			if err := <-seeded; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// download writes data into st as a slow origin download would; with
// reset, it starts over from 0 at half the blob, as a download does after
// a server ignored its Range.
func download(ctx context.Context, st *store.Store, desc ocispec.Descriptor, data []byte, reset bool) error {
	w, err := st.Writer(ctx, desc)
	if err != nil {
		return err
	}
	defer w.Close()
	const chunk = 64 << 10
	for w.Offset() < desc.Size {
		if reset && w.Offset() >= desc.Size/2 {
			reset = false
			if err := w.Reset(); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
		off := w.Offset()
		if _, err := w.Write(data[off:min(off+chunk, desc.Size)]); err != nil {
			return err
		}
		time.Sleep(3 * time.Millisecond)
	}
	return w.Commit(ctx)
}

// tlsDir writes a node's peer TLS directory signed by ca and loads it.
func tlsDir(t *testing.T, ca *peer.TestCA) (server, client *tls.Config) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "peer-tls")
	if err := ca.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	server, client, err := peer.LoadTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}
