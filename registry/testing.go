package registry

import (
	"context"
	"testing"
	"time"
)

// StartForTest starts a registry on a free loopback port, storing in a
// temporary directory, and stops it when the test ends. Disk, not memory:
// distribution's in-memory driver copies a blob on every chunk appended, and
// takes seconds for what the filesystem does in milliseconds.
func StartForTest(tb testing.TB) *Registry {
	tb.Helper()
	r, err := Start(context.Background(), Options{Addr: "127.0.0.1:0", Root: tb.TempDir()})
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
