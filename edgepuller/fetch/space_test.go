package fetch_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/store"
)

// smallFS mounts a tmpfs of size bytes, a real filesystem that fills up.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v; the free-space check needs a small real filesystem", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestPullRefusedWithoutSpace: a pull whose layers do not fit on the
// store's filesystem fails before fetching any layer, with the numbers;
// layers the store already holds do not count against the space.
func TestPullRefusedWithoutSpace(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	fs := smallFS(t, "8m")
	st, err := store.Open(filepath.Join(fs, "store"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	shared := randomBytes(5<<20, 21)
	small := pushModel(t, reg.Host(), "models/m", "small", map[string][]byte{"shared.bin": shared})
	big := pushModel(t, reg.Host(), "models/m", "big", map[string][]byte{"shared.bin": shared, "big.bin": randomBytes(6<<20, 22)})
	grown := pushModel(t, reg.Host(), "models/m", "grown", map[string][]byte{"shared.bin": shared, "extra.bin": randomBytes(1<<20, 23)})

	if _, _, _, err := fetch.Pull(ctx, st, small.ref, fetch.Options{PlainHTTP: true}); err != nil {
		t.Fatalf("pull of a model that fits: %v", err)
	}

	c := newCounter(t)
	_, _, _, err = fetch.Pull(ctx, st, big.ref, fetch.Options{PlainHTTP: true, Client: c.client()})
	if !errors.Is(err, fetch.ErrNoSpace) {
		t.Fatalf("pull of 6 MiB more into a store with 3 MiB free: err = %v, want ErrNoSpace", err)
	}
	for _, want := range []string{"need 6.0 MiB for 1 layer(s) still to fetch", "MiB free on " + st.Root()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if gets := c.blobGETs("", big.digestOf("big.bin")); len(gets) != 0 {
		t.Errorf("the layer that does not fit was requested %d times", len(gets))
	}
	if ingests, _ := os.ReadDir(filepath.Join(st.Root(), "ingest")); len(ingests) != 0 {
		t.Errorf("the refused pull left %d ingests", len(ingests))
	}

	// 6 MiB in all, but 5 of them are in the store: it fits.
	if _, _, _, err := fetch.Pull(ctx, st, grown.ref, fetch.Options{PlainHTTP: true}); err != nil {
		t.Fatalf("pull whose new layers fit: %v", err)
	}
	assertStored(t, st, grown)
}
