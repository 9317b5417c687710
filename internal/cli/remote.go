package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// remoteFlags are the flags every command that talks to a registry has.
type remoteFlags struct {
	plainHTTP bool
}

// plainHTTP says whether to reach host over plain HTTP: when --plain-http
// says so, or for a registry on this machine that does not answer a TLS
// handshake. Docker and barge have always taken loopback registries for
// plain HTTP; a `barge serve --tls-cert` on 127.0.0.1, or a port-forward to
// the chart's HTTPS registry, is reached over HTTPS instead.
func (f remoteFlags) plainHTTPFor(host string) bool {
	return f.plainHTTP || (isLoopback(host) && !speaksTLS(host))
}

// speaksTLS tries a TLS handshake with host (port 443 if none), once per
// host per process. The certificate is not checked here, only that TLS is
// spoken: the requests that follow check it.
func speaksTLS(host string) bool {
	if v, ok := tlsProbes.Load(host); ok {
		return v.(bool)
	}
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		addr = net.JoinHostPort(strings.Trim(host, "[]"), "443")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: &tls.Config{InsecureSkipVerify: true}} // #nosec G402: a probe; no data is sent
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	ok := err == nil
	if ok {
		conn.Close()
	}
	tlsProbes.Store(host, ok)
	return ok
}

var tlsProbes sync.Map // host → bool

// isLoopback says whether host (without port) is this machine.
func isLoopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// parseRef parses a reference such as registry.example.com/models/resnet:1.0.
func parseRef(s string) (registry.Reference, error) {
	ref, err := registry.ParseReference(s)
	if err != nil {
		return registry.Reference{}, fmt.Errorf("%q is not a reference: write it as HOST[:PORT]/REPOSITORY[:TAG|@DIGEST], e.g. 127.0.0.1:5000/models/resnet:1.0 (%v)", s, err)
	}
	return ref, nil
}

// repository opens the repository a reference names, with credentials from
// the Docker config and its credential helpers.
func (f remoteFlags) repository(ref registry.Reference) (*remote.Repository, error) {
	repo, err := remote.NewRepository(ref.Registry + "/" + ref.Repository)
	if err != nil {
		return nil, err
	}
	repo.PlainHTTP = f.plainHTTPFor(ref.Registry)
	// A referrer (metrics, a signature) pushed where the registry has no
	// referrers API replaces the sha256-<hex> tag's index; deleting the old
	// index would fail on a registry that refuses deletes (barge serve's and
	// the chart's default) and fail the push with it. It is a few hundred
	// bytes left behind.
	repo.SkipReferrersGC = true
	store, err := credentialStore()
	if err != nil {
		return nil, err
	}
	repo.Client = &auth.Client{
		Client:     retry.DefaultClient,
		Cache:      auth.NewCache(),
		Credential: credentials.Credential(store),
		Header:     http.Header{"User-Agent": {"barge/" + Version}},
	}
	return repo, nil
}

func credentialStore() (credentials.Store, error) {
	store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{AllowPlaintextPut: true})
	if err != nil {
		return nil, fmt.Errorf("read registry credentials (Docker config): %w", err)
	}
	return store, nil
}

// open parses a reference and opens its repository.
func (f remoteFlags) open(arg string) (registry.Reference, *remote.Repository, error) {
	ref, err := parseRef(arg)
	if err != nil {
		return ref, nil, err
	}
	repo, err := f.repository(ref)
	return ref, repo, err
}

// explain turns a registry error into one that says what to do.
func explain(err error, ref registry.Reference) error {
	if err == nil {
		return nil
	}
	host := ref.Registry
	var errResp *errcode.ErrorResponse
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w\nregistry %s is not reachable (connection refused): is it running? `barge serve` starts one", err, host)
	case isDNS(err):
		return fmt.Errorf("%w\nregistry host %s is not known: check the reference", err, host)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w\nregistry %s speaks plain HTTP: add --plain-http", err, host)
	case errors.Is(err, auth.ErrBasicCredentialNotFound) || (errors.As(err, &errResp) && errResp.StatusCode == http.StatusUnauthorized):
		return fmt.Errorf("%w\nregistry %s wants credentials: run `barge login %s`", err, host, host)
	case errors.As(err, &errResp) && errResp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w\nyour credentials for %s do not allow this: check the repository name and your access", err, host)
	case errors.As(err, &errResp) && lostUpload(errResp):
		return fmt.Errorf("%w\nregistry %s does not know the upload it started: if several replicas serve %s, give them all the same `barge serve --upload-secret-file` (the chart does)", err, host, host)
	case errors.Is(err, errdef.ErrNotFound) || (errors.As(err, &errResp) && errResp.StatusCode == http.StatusNotFound):
		return fmt.Errorf("%s not found: check the name, and list versions with `barge versions %s/%s`", ref, ref.Registry, ref.Repository)
	}
	return err
}

// lostUpload says whether the registry refused an upload session it
// handed out: what a replica answers for a session signed by another
// replica's secret.
func lostUpload(e *errcode.ErrorResponse) bool {
	for _, x := range e.Errors {
		if x.Code == "BLOB_UPLOAD_UNKNOWN" || x.Code == "BLOB_UPLOAD_INVALID" {
			return true
		}
	}
	return false
}

func isDNS(err error) bool {
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr)
}

// resolve turns a tag or digest into the manifest's descriptor with a HEAD.
func resolve(ctx context.Context, repo *remote.Repository, ref registry.Reference) (ocispec.Descriptor, error) {
	desc, err := repo.Resolve(ctx, ref.ReferenceOrDefault())
	return desc, explain(err, ref)
}
