package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// source is an artifact as a user's object names it, with how to reach it.
type source struct {
	Namespace string
	// Repository is HOST[:PORT]/PATH, without tag or digest.
	Repository string
	// Version is a tag, a semver range over the tags, or a sha256: digest.
	Version    string
	Insecure   bool
	PullSecret *v1alpha1.LocalObjectReference
}

func (s source) host() string {
	host, _, _ := strings.Cut(s.Repository, "/")
	return host
}

func (s source) String() string {
	if strings.HasPrefix(s.Version, "sha256:") {
		return s.Repository + "@" + s.Version
	}
	return s.Repository + ":" + s.Version
}

// resolution is the manifest a source's version names now.
type resolution struct {
	// Tag that was resolved; empty for a digest.
	Tag        string
	Descriptor ocispec.Descriptor
}

// inspected is what the controller reads from a manifest. Manifests are
// content-addressed, so it never changes for a digest and is cached.
type inspected struct {
	Artifact *artifact.Artifact
	// Dataset is the dataset's config; nil for other kinds.
	Dataset *datasetConfig
	// contentSize is the config and layers, without the manifest; for a
	// joint model, both parts'.
	contentSize int64
	// joint holds a joint model's parts; nil for any other artifact.
	joint *jointInspected
}

// datasetConfig is the part of a dataset's config (the JSON of dataset.Stats,
// written by `barge push --kind dataset`) that goes into a Dataset's status.
type datasetConfig struct {
	Format          string           `json:"format"`
	NumberOfSamples int64            `json:"numberOfSamples"`
	Classes         map[string]int64 `json:"classes"`
	Bytes           int64            `json:"bytes"`
}

// Resolver reaches registries for the reconcilers: it turns versions into
// digests, reads manifests and metrics. The zero value works with an
// anonymous client, but reading pull secrets needs Secrets.
type Resolver struct {
	// Secrets reads the Secrets named by spec.pullSecretRef. Give it an
	// uncached reader (the manager's APIReader) so the controller needs only
	// get on secrets, never a cluster-wide watch of them.
	Secrets client.Reader
	// HTTPClient sends registry requests; if nil, http.DefaultTransport is
	// used. Its Timeout, when it has none, becomes RequestTimeout.
	HTTPClient *http.Client
	// RequestTimeout bounds each registry request (manifest HEAD and GET,
	// token, a page of tags or referrers), body included; if <= 0, 30 s. A
	// registry that accepts a connection and never answers then holds a
	// worker no longer than this.
	RequestTimeout time.Duration
	// AllowedRegistries, when not empty, are the only registries (host or
	// host:port, as in spec.artifact) the controller contacts; an object
	// naming another is Stalled and nothing is fetched from it.
	AllowedRegistries []string
	// ServiceAccount is the controller's own namespace/name, named in the
	// message that says which RBAC a pull secret needs; if empty, the
	// message says "the controller's ServiceAccount".
	ServiceAccount string
	// UserAgent of registry requests; if empty, "barge-controller".
	UserAgent string
	// Credentials are the controller's own, for objects without
	// spec.pullSecretRef (the chart's read-only pull user for its own
	// registry); if nil, those objects are anonymous. A pull secret, when
	// named, replaces them.
	Credentials credentials.Store

	// MetricsRefresh is how long the status metrics of one digest are kept
	// before its referrers are read again; if <= 0, DefaultMetricsRefresh.
	// A re-resolve that finds the same digest then costs the registry one
	// HEAD, not the referrers list too (spec.selection still reads the
	// referrers of its candidates every pass: they decide the version).
	MetricsRefresh time.Duration

	mu    sync.Mutex
	cache map[string]*inspected
	// metricsCache keeps metrics by their referrers (select.go).
	metricsCache metricsCache
	// digestMetrics keeps status metrics by repository@digest.
	digestMetrics map[string]digestMetrics
}

// DefaultMetricsRefresh is how often the metrics of an unchanged digest are
// read again: metrics attached to a running version show within this long.
const DefaultMetricsRefresh = time.Hour

// digestMetrics are the status metrics of a digest, and when they were read.
type digestMetrics struct {
	metrics map[string]string
	at      time.Time
}

// maxDigestMetrics bounds digestMetrics: one per model digest, so room for
// several thousand models; past it the cache starts over.
const maxDigestMetrics = 8192

// maxCached bounds the inspection cache; past it the cache starts over.
const maxCached = 1024

// maxTagPages and maxReferrerPages bound the lists a registry hands out page
// by page (Link: next), so one that returns endless pages cannot hold a
// reconcile.
const (
	maxTagPages      = 100
	maxReferrerPages = 20
)

// errTooManyPages stops a paged list at its limit.
var errTooManyPages = errors.New("too many pages")

// ParseRegistries reads a comma-separated list of registries as
// --allowed-registries takes it: host or host:port, as spec.artifact starts.
func ParseRegistries(s string) ([]string, error) {
	var out []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if strings.Contains(item, "://") || strings.ContainsAny(item, "/@ ") {
			return nil, fmt.Errorf("%q is not a registry: write host or host:port, such as registry.example.com or 10.0.0.5:5000", item)
		}
		if _, err := registry.ParseReference(item + "/r"); err != nil {
			return nil, fmt.Errorf("%q is not a registry: write host or host:port, such as registry.example.com or 10.0.0.5:5000", item)
		}
		if !slices.Contains(out, item) {
			out = append(out, item)
		}
	}
	return out, nil
}

// checkAllowed refuses a source whose registry is not on the allow-list.
func (r *Resolver) checkAllowed(src source) error {
	if len(r.AllowedRegistries) == 0 || slices.Contains(r.AllowedRegistries, src.host()) {
		return nil
	}
	return stalledf(ReasonRegistryNotAllowed, "registry %s is not allowed: this controller fetches only from %s (--allowed-registries); push %s to one of those, or ask the cluster's operator to allow %s",
		src.host(), strings.Join(r.AllowedRegistries, ", "), src.Repository, src.host())
}

// open returns the repository of src with the credentials of its pull
// secret, or anonymous access when it has none.
func (r *Resolver) open(ctx context.Context, src source) (*remote.Repository, error) {
	repo, err := remote.NewRepository(src.Repository)
	if err != nil {
		return nil, stalledf(ReasonInvalidReference, "%q is not a repository: write it as HOST[:PORT]/PATH, such as registry.example.com/models/resnet50", src.Repository)
	}
	if err := r.checkAllowed(src); err != nil {
		return nil, err
	}
	repo.PlainHTTP = src.Insecure
	cred := auth.StaticCredential("", auth.EmptyCredential)
	if r.Credentials != nil {
		cred = credentials.Credential(r.Credentials)
	}
	if src.PullSecret != nil {
		store, err := r.credentialStore(ctx, src.Namespace, src.PullSecret.Name)
		if err != nil {
			return nil, err
		}
		cred = credentials.Credential(store)
	}
	hc := &http.Client{}
	if r.HTTPClient != nil {
		*hc = *r.HTTPClient
	}
	if hc.Timeout <= 0 {
		hc.Timeout = r.requestTimeout()
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = pageLimiter{next: next}
	ua := r.UserAgent
	if ua == "" {
		ua = "barge-controller"
	}
	repo.Client = &auth.Client{Client: hc, Cache: auth.NewCache(), Credential: cred, Header: http.Header{"User-Agent": {ua}}}
	return repo, nil
}

func (r *Resolver) requestTimeout() time.Duration {
	if r.RequestTimeout <= 0 {
		return 30 * time.Second
	}
	return r.RequestTimeout
}

// Pull secrets are read one at a time with get, uncached: never a list or a
// watch, so the controller holds no Secret it was not asked to use. This rule
// stands apart from manager.go's cluster-wide ones because the chart grants
// it per namespace (controller.secretAccess), cluster-wide only on request.
//
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

// credentialStore reads a kubernetes.io/dockerconfigjson Secret.
func (r *Resolver) credentialStore(ctx context.Context, namespace, name string) (credentials.Store, error) {
	if r.Secrets == nil {
		return nil, errors.New("no reader for pull secrets configured")
	}
	var secret corev1.Secret
	if err := r.Secrets.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, retryf(ReasonPullSecretNotFound, err, "secret %s/%s named by spec.pullSecretRef does not exist: create it with `kubectl create secret docker-registry %s -n %s --docker-server=... --docker-username=... --docker-password=...`", namespace, name, name, namespace)
		}
		if apierrors.IsForbidden(err) {
			return nil, stalledf(ReasonPullSecretForbidden, "the controller may not read secret %s/%s named by spec.pullSecretRef (%v): grant %s get on it, "+
				"with `kubectl create role barge-pull-secret -n %s --verb=get --resource=secrets --resource-name=%s` and `kubectl create rolebinding barge-pull-secret -n %s --role=barge-pull-secret --serviceaccount=%s`, "+
				"or add %s to the chart's controller.secretAccess.namespaces",
				namespace, name, err, r.serviceAccountText(), namespace, name, namespace, r.serviceAccountFlag(), namespace)
		}
		return nil, retryf(ReasonPullSecretNotFound, err, "read secret %s/%s named by spec.pullSecretRef: %v", namespace, name, err)
	}
	if secret.Type != corev1.SecretTypeDockerConfigJson {
		return nil, stalledf(ReasonInvalidPullSecret, "secret %s/%s named by spec.pullSecretRef has type %q; it must be %s (kubectl create secret docker-registry)", namespace, name, secret.Type, corev1.SecretTypeDockerConfigJson)
	}
	store, err := credentials.NewMemoryStoreFromDockerConfig(secret.Data[corev1.DockerConfigJsonKey])
	if err != nil {
		return nil, stalledf(ReasonInvalidPullSecret, "secret %s/%s: key %s is not a Docker config: %v", namespace, name, corev1.DockerConfigJsonKey, err)
	}
	return store, nil
}

func (r *Resolver) serviceAccountText() string {
	if r.ServiceAccount == "" {
		return "the controller's ServiceAccount"
	}
	return "ServiceAccount " + r.ServiceAccount
}

// serviceAccountFlag is the ServiceAccount as kubectl's --serviceaccount
// takes it.
func (r *Resolver) serviceAccountFlag() string {
	if r.ServiceAccount == "" {
		return "NAMESPACE:NAME"
	}
	return strings.Replace(r.ServiceAccount, "/", ":", 1)
}

// tagPattern is the OCI distribution spec's grammar of a tag.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// wildcardVersion is a version with an x in it, such as 1.x or 1.2.X: a valid
// tag by grammar, but what its writer means is a range.
var wildcardVersion = regexp.MustCompile(`^v?(\d+|[xX])(\.(\d+|[xX])){0,2}$`)

// isRange says whether a targetVersion is a semver range over the tags rather
// than one tag: anything that is not a tag by the OCI grammar (">=1.2 <2",
// "^1.2", "~1.2.3"), and wildcards such as 1.x.
func isRange(v string) bool {
	if !tagPattern.MatchString(v) {
		return true
	}
	return wildcardVersion.MatchString(v) && strings.ContainsAny(v, "xX")
}

// resolve asks the registry which manifest src.Version names. A tag and a
// digest cost one HEAD; only a range lists the tags.
func (r *Resolver) resolve(ctx context.Context, repo *remote.Repository, src source) (resolution, error) {
	v := src.Version
	switch {
	case strings.HasPrefix(v, "sha256:"):
		desc, err := repo.Resolve(ctx, v)
		if err != nil {
			return resolution{}, explain(err, src, fmt.Sprintf("manifest %s", v))
		}
		return resolution{Descriptor: desc}, nil
	case isRange(v):
		c, err := rangeOf(v)
		if err != nil {
			return resolution{}, err
		}
		tag, err := newestMatch(ctx, repo, src, c)
		if err != nil {
			return resolution{}, err
		}
		desc, err := repo.Resolve(ctx, tag)
		if err != nil {
			return resolution{}, explain(err, src, fmt.Sprintf("tag %q", tag))
		}
		return resolution{Tag: tag, Descriptor: desc}, nil
	default:
		desc, err := repo.Resolve(ctx, v)
		if err != nil {
			return resolution{}, explain(err, src, fmt.Sprintf("tag %q", v))
		}
		return resolution{Tag: v, Descriptor: desc}, nil
	}
}

// rangeOf reads a targetVersion that isRange as a semver range.
func rangeOf(v string) (*semver.Constraints, error) {
	c, err := semver.NewConstraint(v)
	if err != nil {
		return nil, stalledf(ReasonInvalidVersion, "targetVersion %q is neither a tag nor a semver range: %v; write a tag (1.0.0), a range (>=1.2 <2) or a digest (sha256:...)", v, err)
	}
	return c, nil
}

// newestMatch lists the tags of repo and returns the newest semantic version
// that c allows.
func newestMatch(ctx context.Context, repo *remote.Repository, src source, c *semver.Constraints) (string, error) {
	tags, err := matchingTags(ctx, repo, src, c)
	if err != nil {
		return "", err
	}
	return tags[0], nil
}

// matchingTags lists the tags of repo that c allows, newest semantic
// version first; none is a stalled failure that names the versions there
// are. Referrers tags (sha256-<hex>) and tags that are not versions are
// skipped.
func matchingTags(ctx context.Context, repo *remote.Repository, src source, c *semver.Constraints) ([]string, error) {
	type version struct {
		tag string
		v   *semver.Version
	}
	var (
		matching []version
		others   []string
	)
	err := repo.Tags(withPageBudget(ctx, maxTagPages), "", func(tags []string) error {
		for _, t := range tags {
			if strings.HasPrefix(t, "sha256-") {
				continue
			}
			sv, err := semver.NewVersion(t)
			if err != nil {
				continue
			}
			if !c.Check(sv) {
				others = append(others, t)
				continue
			}
			matching = append(matching, version{t, sv})
		}
		return nil
	})
	if errors.Is(err, errTooManyPages) {
		return nil, stalledf(ReasonRegistryError, "the tag list of %s goes on past %d pages; the controller reads no more than that for a range: name a tag or a digest in spec.targetVersion, or delete old tags", src.Repository, maxTagPages)
	}
	if err != nil {
		return nil, explain(err, src, "the tag list")
	}
	if len(matching) == 0 {
		slices.Sort(others)
		if len(others) > 10 {
			others = append(others[:10], "...")
		}
		seen := "it has no version tags"
		if len(others) > 0 {
			seen = "its versions are " + strings.Join(others, ", ")
		}
		return nil, stalledf(ReasonNoMatchingVersion, "no tag of %s matches %q (%s): push a matching version or change spec.targetVersion", src.Repository, src.Version, seen)
	}
	// Newest first; of two tags of one version (1.0 and 1.0.0), the
	// greater name, as before.
	slices.SortStableFunc(matching, func(a, b version) int {
		if c := b.v.Compare(a.v); c != 0 {
			return c
		}
		return strings.Compare(b.tag, a.tag)
	})
	out := make([]string, len(matching))
	for i, m := range matching {
		out[i] = m.tag
	}
	return out, nil
}

// explain turns a registry error into a failure that says what to do.
func explain(err error, src source, what string) *failure {
	host := src.host()
	var resp *errcode.ErrorResponse
	isStatus := func(code int) bool { return errors.As(err, &resp) && resp.StatusCode == code }
	switch {
	case errors.Is(err, errdef.ErrNotFound) || isStatus(http.StatusNotFound):
		return stalledf(ReasonVersionNotFound, "%s not found in %s: push it, or set spec.targetVersion to one that exists (`barge versions %s` lists them)", what, src.Repository, src.Repository)
	case errors.Is(err, auth.ErrBasicCredentialNotFound) || isStatus(http.StatusUnauthorized) || isStatus(http.StatusForbidden):
		if src.PullSecret == nil {
			return retryf(ReasonUnauthorized, err, "registry %s wants credentials for %s: set spec.pullSecretRef to a kubernetes.io/dockerconfigjson Secret (%v)", host, src.Repository, err)
		}
		return retryf(ReasonUnauthorized, err, "registry %s refused the credentials of secret %s/%s for %s: check the secret's auths entry for %s (%v)", host, src.Namespace, src.PullSecret.Name, src.Repository, host, err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return stalledf(ReasonInsecureRegistry, "registry %s speaks plain HTTP: set spec.insecure: true if that is intended", host)
	case errors.As(err, &resp):
		return retryf(ReasonRegistryError, err, "registry %s failed on %s of %s: %v", host, what, src.Repository, err)
	case isTimeout(err):
		return retryf(ReasonRegistryTimeout, err, "registry %s did not answer in time (%s of %s): %v; the controller gives each request --registry-timeout and each pass --reconcile-timeout, and tries again", host, what, src.Repository, err)
	case errors.Is(err, context.Canceled):
		return retryf(ReasonRegistryUnreachable, err, "registry %s: %s of %s: %v", host, what, src.Repository, err)
	}
	return retryf(ReasonRegistryUnreachable, err, "registry %s is not reachable: %v", host, err)
}

// isTimeout: a request or the pass ran out of time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// pageBudget is how many more list requests (a page of tags or referrers)
// one listing may send; pageLimiter enforces it on the wire, so pages with
// nothing in them count too.
type pageBudget struct{ left atomic.Int64 }

type pageBudgetKey struct{}

// withPageBudget lets the listings under ctx send at most pages requests.
func withPageBudget(ctx context.Context, pages int) context.Context {
	b := &pageBudget{}
	b.left.Store(int64(pages))
	return context.WithValue(ctx, pageBudgetKey{}, b)
}

// pageLimiter refuses a list request once its context's budget is spent.
type pageLimiter struct{ next http.RoundTripper }

func (p pageLimiter) RoundTrip(req *http.Request) (*http.Response, error) {
	b, ok := req.Context().Value(pageBudgetKey{}).(*pageBudget)
	list := strings.HasSuffix(req.URL.Path, "/tags/list") || strings.Contains(req.URL.Path, "/referrers/")
	if ok && list && b.left.Add(-1) < 0 {
		return nil, errTooManyPages
	}
	return p.next.RoundTrip(req)
}

// inspect reads the manifest desc and, for a dataset, its config. *repo is
// opened on first use: a pass that finds the digest in the cache needs no
// registry at all. A desc with only a digest (from status) is completed with
// a HEAD.
func (r *Resolver) inspect(ctx context.Context, repo **remote.Repository, src source, desc ocispec.Descriptor) (*inspected, error) {
	key := src.Repository + "@" + desc.Digest.String()
	r.mu.Lock()
	in, ok := r.cache[key]
	r.mu.Unlock()
	if ok {
		return in, nil
	}
	if *repo == nil {
		opened, err := r.open(ctx, src)
		if err != nil {
			return nil, err
		}
		*repo = opened
	}
	if desc.MediaType == "" {
		full, err := (*repo).Resolve(ctx, desc.Digest.String())
		if err != nil {
			return nil, explain(err, src, "manifest "+desc.Digest.String())
		}
		desc = full
	}
	a, err := artifact.Inspect(ctx, *repo, desc)
	if err != nil {
		if errors.Is(err, artifact.ErrInvalid) {
			return nil, stalledf(ReasonInvalidArtifact, "%s@%s cannot be read: %v", src.Repository, desc.Digest, err)
		}
		return nil, explain(err, src, "manifest "+desc.Digest.String())
	}
	in = &inspected{Artifact: a, contentSize: a.Size - desc.Size}
	if a.Kind == artifact.KindJoint {
		if in.joint, err = r.inspectJoint(ctx, repo, src, a); err != nil {
			return nil, err
		}
		in.contentSize = in.joint.contentSize()
	}
	if a.Kind == artifact.KindDataset && a.Config.MediaType == artifact.MediaTypeDatasetConfig {
		b, err := artifact.FetchLimited(ctx, *repo, a.Config)
		if err != nil {
			return nil, explain(err, src, "dataset config "+a.Config.Digest.String())
		}
		var cfg datasetConfig
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, stalledf(ReasonInvalidArtifact, "%s@%s: the dataset config is not valid JSON: %v", src.Repository, desc.Digest, err)
		}
		in.Dataset = &cfg
	}
	r.mu.Lock()
	if r.cache == nil || len(r.cache) >= maxCached {
		r.cache = map[string]*inspected{}
	}
	r.cache[key] = in
	r.mu.Unlock()
	return in, nil
}

// resolvedStatus is status.resolved for a resolution made now; in is nil for
// a container image, which is not read.
func resolvedStatus(res resolution, in *inspected, now time.Time) *v1alpha1.ResolvedArtifact {
	d := res.Descriptor.Digest.String()
	t := metav1.NewTime(now.Truncate(time.Second))
	out := &v1alpha1.ResolvedArtifact{Version: res.Tag, Digest: d, ShortDigest: shortDigest(d), ResolvedAt: &t}
	if in != nil {
		out.ArtifactType, out.Size = in.Artifact.ArtifactType, in.contentSize
	}
	return out
}

// resolutionOf is the resolution status.resolved records, for passes that do
// not ask the registry.
func resolutionOf(r *v1alpha1.ResolvedArtifact) resolution {
	return resolution{Tag: r.Version, Descriptor: ocispec.Descriptor{Digest: digest.Digest(r.Digest)}}
}

// metrics reads the metrics referrers of desc, newest value of each metric
// winning, as decimal text; for a digest read less than MetricsRefresh ago,
// what was read then, without asking the registry. The map is shared with
// the cache: read it, never write it.
func (r *Resolver) metrics(ctx context.Context, repo *remote.Repository, src source, desc ocispec.Descriptor) (map[string]string, error) {
	key := src.Repository + "@" + desc.Digest.String()
	refresh := r.MetricsRefresh
	if refresh <= 0 {
		refresh = DefaultMetricsRefresh
	}
	r.mu.Lock()
	got, ok := r.digestMetrics[key]
	r.mu.Unlock()
	if ok && time.Since(got.at) < refresh {
		return got.metrics, nil
	}
	read := time.Now()
	latest, err := r.latestMetrics(ctx, repo, src, desc)
	if err != nil {
		return nil, err
	}
	var out map[string]string
	if len(latest) > 0 {
		out = make(map[string]string, len(latest))
		for k, v := range latest {
			out[k] = strconv.FormatFloat(v, 'g', -1, 64)
		}
	}
	r.mu.Lock()
	if r.digestMetrics == nil || len(r.digestMetrics) >= maxDigestMetrics {
		r.digestMetrics = map[string]digestMetrics{}
	}
	r.digestMetrics[key] = digestMetrics{metrics: out, at: read}
	r.mu.Unlock()
	return out, nil
}

// metricsFailure says why the metrics of desc could not be read.
func metricsFailure(err error, src source, desc ocispec.Descriptor) error {
	if errors.Is(err, errTooManyPages) {
		return fmt.Errorf("metrics of %s@%s: the referrers list goes on past %d pages; the controller reads no more (%w)", src.Repository, desc.Digest, maxReferrerPages, err)
	}
	if errors.Is(err, artifact.ErrInvalid) {
		return fmt.Errorf("metrics of %s@%s: %w", src.Repository, desc.Digest, err)
	}
	return explain(err, src, "metrics of "+desc.Digest.String())
}

// imageSource splits a container image reference into a source, as Docker
// reads it: no registry host means Docker Hub, no tag means latest.
func imageSource(namespace, image string, insecure bool, secret *v1alpha1.LocalObjectReference) (source, error) {
	s := image
	first, _, hasSlash := strings.Cut(s, "/")
	if !hasSlash || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		if !hasSlash {
			s = "library/" + s
		}
		s = "docker.io/" + s
	}
	ref, err := registry.ParseReference(s)
	if err != nil {
		return source{}, stalledf(ReasonInvalidReference, "spec.image %q is not an image reference: write it as [HOST/]REPOSITORY[:TAG|@DIGEST]: %v", image, err)
	}
	version := ref.Reference
	if version == "" {
		version = "latest"
	}
	return source{
		Namespace:  namespace,
		Repository: ref.Registry + "/" + ref.Repository,
		Version:    version,
		Insecure:   insecure,
		PullSecret: secret,
	}, nil
}
