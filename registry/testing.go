package registry

import (
	"context"
	"testing"
	"time"
)

// StartForTest starts an in-memory registry on a free loopback port and stops
// it when the test ends. It returns the registry's host:port.
func StartForTest(tb testing.TB) *Registry {
	tb.Helper()
	r, err := Start(context.Background(), Options{Addr: "127.0.0.1:0"})
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
