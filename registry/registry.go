package registry

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // auth "htpasswd"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // storage driver "filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"   // storage driver "inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"     // storage driver "s3"
	"github.com/sirupsen/logrus"
)

// DefaultAddr is where Serve listens when Options.Addr is empty: loopback
// only, so an embedded registry is never exposed by accident.
const DefaultAddr = "127.0.0.1:5000"

// Options configures a Registry. The zero value serves from memory on
// DefaultAddr with logging off, no auth and deletes refused.
type Options struct {
	// Addr is the listen address, host:port. If empty, DefaultAddr is used;
	// port 0 picks a free port (see Registry.Addr). An address that is not
	// loopback needs TLS and auth, or InsecureListen.
	Addr string
	// Root is the storage directory. If empty (and Storage names no
	// driver), content is kept in memory and lost on Close.
	Root string
	// Storage picks one of distribution's storage drivers instead of Root,
	// such as "s3" for S3-compatible object storage, which several
	// replicas can share.
	Storage Storage
	// Htpasswd is the path of an htpasswd file (bcrypt entries) of users
	// who may pull and push. When it or HtpasswdReadOnly is set, every
	// request needs HTTP basic credentials from one of them. The files are
	// read again when they change.
	Htpasswd string
	// HtpasswdReadOnly is the path of an htpasswd file of users who may
	// only pull (GET and HEAD); anything else is refused with 403.
	HtpasswdReadOnly string
	// TLSCert and TLSKey are PEM files of the server certificate (with its
	// chain) and key; when set, the registry speaks HTTPS only. They are
	// read again when the certificate file changes, so a renewed
	// certificate (cert-manager) needs no restart.
	TLSCert, TLSKey string
	// EnableDelete lets clients delete manifests and blobs. Off by
	// default: a registry that pullers read from should not lose content
	// to a stolen credential.
	EnableDelete bool
	// Secret signs the upload state that clients carry between the
	// requests of one upload. If empty, a random one is made at Start,
	// which is right for one replica; replicas behind one address need the
	// same secret.
	Secret string
	// InsecureListen allows an address that is not loopback without TLS
	// or without auth.
	InsecureListen bool
	// Log receives the registry's access and error log. If nil, logs are
	// discarded.
	Log io.Writer
}

// Storage is the storage section of distribution's configuration: a driver
// and its parameters, spelled as distribution documents them
// (https://distribution.github.io/distribution/storage-drivers/).
type Storage struct {
	// Driver is "filesystem", "inmemory" or "s3". If empty, Root decides
	// between filesystem and inmemory.
	Driver string
	// Parameters are the driver's options, such as bucket, region,
	// regionendpoint and forcepathstyle for s3. Values may be strings
	// ("true", "5242880") as on a command line. The s3 driver takes its
	// credentials from accesskey and secretkey, or when they are absent
	// from the AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
	// a web identity token, an instance role).
	Parameters map[string]any
	// Redirect lets the registry answer a blob GET with a redirect to a
	// presigned URL of the object store, so that the bytes bypass the
	// registry. Off by default: pullers on edge nodes often cannot reach
	// the object store, or do not trust its certificate.
	Redirect bool
}

// StorageDrivers are the drivers this build registers.
var StorageDrivers = []string{"filesystem", "inmemory", "s3"}

// configuration returns distribution's storage section for s and root.
func (s Storage) configuration(root string, deletes bool) (configuration.Storage, error) {
	driver, params := s.Driver, maps.Clone(s.Parameters)
	switch {
	case driver == "" && root != "":
		driver, params = "filesystem", configuration.Parameters{"rootdirectory": root}
	case driver == "":
		driver = "inmemory"
	case root != "":
		return nil, fmt.Errorf("give a storage directory or a storage driver (%s), not both", driver)
	case !slices.Contains(StorageDrivers, driver):
		return nil, fmt.Errorf("unknown storage driver %q: this build has %s", driver, strings.Join(StorageDrivers, ", "))
	}
	if params == nil {
		params = configuration.Parameters{}
	}
	return configuration.Storage{
		driver:   params,
		"delete": configuration.Parameters{"enabled": deletes},
		// Without a redirect, distribution serves blobs itself.
		"redirect": configuration.Parameters{"disable": !s.Redirect},
		// Upload purging is a background goroutine that outlives Close;
		// the embedded registry has no abandoned uploads worth a timer.
		// On object storage, a lifecycle rule removes abandoned multipart
		// uploads instead.
		"maintenance": configuration.Parameters{
			"uploadpurging": map[any]any{"enabled": false},
		},
	}, nil
}

// ErrInsecureListen is returned by Start for a non-loopback address without
// TLS and auth, unless Options.InsecureListen is set.
var ErrInsecureListen = errors.New("refusing to listen beyond loopback without TLS and auth")

// Registry is a running embedded registry.
type Registry struct {
	listener net.Listener
	tls      bool
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
	if (opts.TLSCert == "") != (opts.TLSKey == "") {
		return nil, errors.New("start registry: give both a TLS certificate and its key, or neither")
	}
	secure := opts.TLSCert != "" && (opts.Htpasswd != "" || opts.HtpasswdReadOnly != "")
	if !secure && !opts.InsecureListen && !isLoopback(addr) {
		var missing []string
		if opts.TLSCert == "" {
			missing = append(missing, "TLS")
		}
		if opts.Htpasswd == "" && opts.HtpasswdReadOnly == "" {
			missing = append(missing, "auth")
		}
		return nil, fmt.Errorf("start registry on %s: %w: %s is not a loopback address and the registry has no %s, so anyone who reaches it reads and pushes in the clear", addr, ErrInsecureListen, addr, strings.Join(missing, " and no "))
	}
	var auth *authenticator
	if opts.Htpasswd != "" || opts.HtpasswdReadOnly != "" {
		var err error
		if auth, err = newAuthenticator(opts.Htpasswd, opts.HtpasswdReadOnly); err != nil {
			return nil, fmt.Errorf("start registry: %w", err)
		}
	}
	var certs *certReloader
	if opts.TLSCert != "" {
		var err error
		if certs, err = newCertReloader(opts.TLSCert, opts.TLSKey); err != nil {
			return nil, fmt.Errorf("start registry: %w", err)
		}
	}
	secret := opts.Secret
	if secret == "" {
		secret = rand.Text()
	}
	storage, err := opts.Storage.configuration(opts.Root, opts.EnableDelete)
	if err != nil {
		return nil, fmt.Errorf("start registry: %w", err)
	}

	config := &configuration.Configuration{}
	config.Log.Level = "error"
	config.HTTP.Addr = addr
	config.HTTP.Secret = secret
	config.Storage = storage

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
	var handler http.Handler = app
	if auth != nil {
		handler = auth.wrap(app)
	}
	r := &Registry{
		listener: ln,
		app:      app,
		server: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 30 * time.Second,
			// TLS handshake failures (scanners, clients without the CA)
			// go where the registry's log goes, not to stderr.
			ErrorLog: log.New(cmp.Or[io.Writer](opts.Log, io.Discard), "", log.LstdFlags),
		},
		done: make(chan struct{}),
	}
	if certs != nil {
		r.tls = true
		r.listener = tls.NewListener(ln, &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.get,
			NextProtos:     []string{"h2", "http/1.1"},
		})
		ln = r.listener
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
func (r *Registry) URL() string {
	if r.tls {
		return "https://" + r.Addr()
	}
	return "http://" + r.Addr()
}

// TLS says whether the registry speaks HTTPS.
func (r *Registry) TLS() bool { return r.tls }

// isLoopback says whether a listen address only accepts connections from
// this machine. An empty host (":5000") means every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

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
