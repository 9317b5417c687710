package testenv

import (
	"sync"
	"testing"
)

// Lazy is one control plane for a package, started by the first test that
// needs it, so that the package's other tests do not wait for it. The
// package's TestMain stops it.
type Lazy struct {
	once sync.Once
	env  *Env
	err  error
}

// Env starts the control plane on the first call and returns it; a failure
// to start fails every test that asks.
func (l *Lazy) Env(t testing.TB) *Env {
	t.Helper()
	l.once.Do(func() { l.env, l.err = Start() })
	if l.err != nil {
		t.Fatal(l.err)
	}
	return l.env
}

// Stop stops the control plane, if a test started it.
func (l *Lazy) Stop() error {
	if l.env == nil {
		return nil
	}
	return l.env.Stop()
}
