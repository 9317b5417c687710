package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // auth "htpasswd"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // storage driver "filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"   // storage driver "inmemory"
	"github.com/sirupsen/logrus"
)

// DefaultAddr is where Serve listens when Options.Addr is empty: loopback
// only, so an embedded registry is never exposed by accident.
const DefaultAddr = "127.0.0.1:5000"

// Options configures a Registry. The zero value serves from memory on
// DefaultAddr with logging off.
type Options struct {
	// Addr is the listen address, host:port. If empty, DefaultAddr is used;
	// port 0 picks a free port (see Registry.Addr).
	Addr string
	// Root is the storage directory. If empty, content is kept in memory and
	// lost on Close.
	Root string
	// Htpasswd is the path of an htpasswd file (bcrypt entries); when set,
	// every request needs HTTP basic credentials from it. Use it behind TLS
	// or on loopback only: basic credentials travel in the clear.
	Htpasswd string
	// Log receives the registry's access and error log. If nil, logs are
	// discarded.
	Log io.Writer
}

// Registry is a running embedded registry.
type Registry struct {
	listener net.Listener
	server   *http.Server
	app      *handlers.App
	done     chan struct{}
	serveErr error
	once     sync.Once
}

// logMu serializes changes to logrus' global logger.
var logMu sync.Mutex

// Start listens on opts.Addr and serves the registry in the background until
// Close. It returns once the listener is bound, so the registry is reachable
// when Start returns.
func Start(ctx context.Context, opts Options) (*Registry, error) {
	addr := opts.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	config := &configuration.Configuration{}
	config.Log.Level = "error"
	config.HTTP.Addr = addr
	config.HTTP.Secret = "barge-embedded"
	config.Storage = configuration.Storage{
		"inmemory": configuration.Parameters{},
		"delete":   configuration.Parameters{"enabled": true},
	}
	if opts.Root != "" {
		config.Storage = configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": opts.Root},
			"delete":     configuration.Parameters{"enabled": true},
		}
	}
	if opts.Htpasswd != "" {
		config.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "barge", "path": opts.Htpasswd}}
	}
	// Upload purging is a background goroutine that outlives Close; the
	// embedded registry has no abandoned uploads worth a timer.
	config.Storage["maintenance"] = configuration.Parameters{
		"uploadpurging": map[any]any{"enabled": false},
	}

	// distribution logs through logrus' standard logger, which is
	// process-global: the last registry started decides where logs go.
	logMu.Lock()
	if opts.Log != nil {
		logrus.SetOutput(opts.Log)
		logrus.SetLevel(logrus.InfoLevel)
	} else {
		logrus.SetOutput(io.Discard)
	}
	logMu.Unlock()

	app, err := newApp(ctx, config)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		app.Shutdown()
		return nil, fmt.Errorf("start registry: listen on %s: %w (is another registry running there? pick a free port with --addr)", addr, err)
	}
	r := &Registry{
		listener: ln,
		app:      app,
		server: &http.Server{
			Handler:           app,
			ReadHeaderTimeout: 30 * time.Second,
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(r.done)
		if err := r.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.serveErr = err
		}
	}()
	return r, nil
}

// newApp builds distribution's handler; it panics on a bad storage
// configuration, which is turned into an error here.
func newApp(ctx context.Context, config *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("start registry: %v", p)
		}
	}()
	return handlers.NewApp(ctx, config), nil
}

// Addr is the host:port the registry listens on, useful with port 0.
func (r *Registry) Addr() string { return r.listener.Addr().String() }

// Host is the reference host for this registry, e.g. "127.0.0.1:5000".
func (r *Registry) Host() string { return r.Addr() }

// URL is the base URL of the registry's HTTP API.
func (r *Registry) URL() string { return "http://" + r.Addr() }

// Done is closed when the registry has stopped serving.
func (r *Registry) Done() <-chan struct{} { return r.done }

// Close stops accepting connections, waits up to the context's deadline for
// requests in flight, and releases storage. It is safe to call more than once.
func (r *Registry) Close(ctx context.Context) error {
	var err error
	r.once.Do(func() {
		err = r.server.Shutdown(ctx)
		<-r.done
		if aerr := r.app.Shutdown(); err == nil {
			err = aerr
		}
		if err == nil {
			err = r.serveErr
		}
	})
	return err
}
