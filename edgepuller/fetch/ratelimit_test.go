package fetch_test

import (
	"context"
	"testing"
	"time"

	"github.com/bargeml/barge/edgepuller/fetch"
)

// TestLimitRate pulls two 512 KiB layers at once under a 512 KiB/s limit:
// the limit holds over both together, so 1 MiB takes about two seconds.
// It is the package's only slow test.
func TestLimitRate(t *testing.T) {
	if testing.Short() {
		t.Skip("takes two seconds")
	}
	reg := startRegistry(t)
	m := pushModel(t, reg.Host(), "models/m", "v1", map[string][]byte{
		"a.bin": randomBytes(512<<10, 1),
		"b.bin": randomBytes(512<<10, 2),
	})
	st := newStore(t)
	start := time.Now()
	_, _, _, err := fetch.Pull(context.Background(), st, m.ref, fetch.Options{PlainHTTP: true, LimitRate: 512 << 10, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, st, m)
	if d := time.Since(start); d < 1500*time.Millisecond || d > 6*time.Second {
		t.Errorf("1 MiB at 512 KiB/s took %v, want about 2s", d)
	}
}
