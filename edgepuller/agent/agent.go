package agent

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/gc"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/edgepuller/upload"
)

// Options configures an Agent. Only Root is required.
type Options struct {
	// Root holds everything: root/store (blobs), root/artifacts/<name>
	// (versions and current), root/desired.json (the last desired list).
	Root string
	// Concurrency is how many artifacts are pulled at once; if <= 0, 2.
	Concurrency int
	// Fetch configures downloads: mirrors, layers per pull, credentials.
	// PlainHTTP comes from each Desired.Insecure, and Progress is the
	// agent's. LimitRate caps the node: all the pulls running at once share
	// one limiter, so one pull alone gets the whole rate.
	Fetch fetch.Options
	// ResolveInterval is how often a tag is resolved again, to roll out a
	// version the tag was moved to; if <= 0, 5 minutes.
	ResolveInterval time.Duration
	// Backoff is the wait before retrying an artifact after its attempt
	// number attempt (1 for the first) failed. If nil, 1 s doubling up to
	// 5 minutes, with jitter.
	Backoff func(attempt int) time.Duration
	// GC configures garbage collection, which runs after each activation
	// and every GCInterval; if GCInterval <= 0, hourly.
	GC         gc.Options
	GCInterval time.Duration
	// Reporter, if set, receives every artifact's status.
	Reporter Reporter
	// Removed, if set, is called with an artifact's name once the directory
	// of an artifact no longer desired is gone from disk (or was never
	// there), so that whoever waits for the files to go, such as a
	// NodeArtifact's finalizer, can let go. A removal that fails is not
	// reported.
	Removed func(name string)
	// Metrics, if set, gets the agent's Prometheus collectors.
	Metrics prometheus.Registerer
	// Log receives the agent's log. If nil, slog.Default() is used.
	Log *slog.Logger
	// Store tunes the blob store; the zero value is what production wants.
	Store store.Options
	// Verify, if set, is asked before a version is activated, with the
	// fetched manifest's descriptor; an error keeps the current version and
	// reports the artifact Failed with it. If nil, nothing is verified.
	Verify func(ctx context.Context, d Desired, desc ocispec.Descriptor) error

	// NodeName is annotated on the updates this node uploads; if empty,
	// the host name.
	NodeName string
	// PushCredential, if set, gives the credential for uploads
	// (Desired.Upload), and only for the registry of the upload's
	// repository; without it uploads are anonymous. Fetch's credentials
	// are never used for uploads, nor this one for pulls.
	PushCredential auth.CredentialFunc
	// Upload tunes the resumable uploads of updates. Its StateDir, where an
	// unfinished upload is resumed from after a restart, is
	// root/upload-state when empty; Progress is the agent's.
	Upload upload.Options
	// UploadLimitRate caps the rate of the node's uploads together, in
	// bytes per second, apart from the downloads' Fetch.LimitRate: an
	// update going up a shared link leaves room for the workloads. If <=
	// 0, uploads are not paced.
	UploadLimitRate int64
	// UploadPoll is how often the directory of an update to upload is
	// checked for the trainer's DONE; if <= 0, 2 s.
	UploadPoll time.Duration
}

// Agent keeps a node's artifacts as desired. Create it with New and start
// it with Run.
type Agent struct {
	opts    Options
	log     *slog.Logger
	st      *store.Store
	metrics *metrics
	client  remote.Client // resolves tags at the origin
	// pushCache keeps the upload tokens, apart from the pull client's.
	pushCache auth.Cache
	slots     chan struct{} // one per pull allowed at once
	// upLimit paces every upload of the node; nil for none.
	upLimit *fetch.Limiter

	// disk orders what changes artifact directories against garbage
	// collection: activation, pinning and removal hold it for reading, a
	// collection for writing. unpack requires Activate and Remove on one
	// root never to overlap, and a pull must pin its manifest before a
	// collection can see the blobs it reuses.
	disk sync.RWMutex

	mu       sync.Mutex
	pins     map[*pinOwner]digest.Digest // manifest being pulled, by the task pulling it
	statuses map[string]Status
	desired  []Desired // as applied; the GC works on these roots
	known    bool      // a desired list was applied: until then the GC waits

	gcKick chan struct{}
}

// New opens the store under opts.Root and returns an agent ready to Run.
func New(opts Options) (*Agent, error) {
	if opts.Root == "" {
		return nil, errors.New("agent: no root directory")
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 2
	}
	if opts.ResolveInterval <= 0 {
		opts.ResolveInterval = 5 * time.Minute
	}
	if opts.Backoff == nil {
		opts.Backoff = defaultBackoff
	}
	if opts.GCInterval <= 0 {
		opts.GCInterval = time.Hour
	}
	if opts.Fetch.Limiter == nil {
		opts.Fetch.Limiter = fetch.NewLimiter(opts.Fetch.LimitRate)
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.NodeName == "" {
		opts.NodeName, _ = os.Hostname()
	}
	if opts.Upload.StateDir == "" {
		opts.Upload.StateDir = filepath.Join(opts.Root, "upload-state")
	}
	if opts.Upload.Log == nil {
		opts.Upload.Log = opts.Log
	}
	if opts.UploadPoll <= 0 {
		opts.UploadPoll = 2 * time.Second
	}
	if opts.Fetch.Client == nil {
		opts.Fetch.Client = &auth.Client{
			Client: retry.DefaultClient,
			Header: http.Header{"User-Agent": {"barge-edgepuller"}},
			Cache:  auth.NewCache(),
		}
	}
	reg := opts.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry() // nobody scrapes it
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("agent: register metrics: %w", err)
	}
	for _, dir := range []string{opts.Root, filepath.Join(opts.Root, "artifacts")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	st, err := store.Open(filepath.Join(opts.Root, "store"), opts.Store)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return &Agent{
		opts:      opts,
		log:       opts.Log,
		st:        st,
		metrics:   m,
		client:    fetch.WithRequestTimeout(opts.Fetch.Client, opts.Fetch.RequestTimeout),
		pushCache: auth.NewCache(),
		upLimit:   fetch.NewLimiter(opts.UploadLimitRate),
		slots:     make(chan struct{}, opts.Concurrency),
		pins:      map[*pinOwner]digest.Digest{},
		statuses:  map[string]Status{},
		gcKick:    make(chan struct{}, 1),
	}, nil
}

// defaultBackoff waits 1 s doubling up to 5 minutes, less up to a half at
// random so that nodes that failed together do not retry together.
func defaultBackoff(attempt int) time.Duration {
	d := 5 * time.Minute
	if attempt < 10 {
		d = min(d, time.Second<<max(attempt-1, 0))
	}
	return d/2 + rand.N(d/2+1)
}

// ArtifactDir is where the artifact name lives: its versions/ and current.
func (a *Agent) ArtifactDir(name string) string {
	return filepath.Join(a.opts.Root, "artifacts", filepath.FromSlash(name))
}

func (a *Agent) desiredPath() string { return filepath.Join(a.opts.Root, "desired.json") }

// task is the goroutine that owns one artifact directory: a worker keeping
// it as desired, or a removal.
type task struct {
	name    string
	desired Desired // zero for a removal
	cancel  context.CancelFunc
	done    chan struct{}
	pin     *pinOwner
}

// pinOwner holds one task's pin. Pins are the task's, not the name's: a
// worker replaced by a newer one for the same name (its entry changed) or
// a removal may finish after the newer one pinned what it is about to
// pull, and must not take that pin away with its own.
// It is not empty so that every owner has its own address.
type pinOwner struct{ name string }

// Run keeps the artifacts as src wants them until ctx ends, then stops
// every pull (their partial downloads stay for the next run) and returns.
// Before src delivers anything, it serves and finishes the list persisted
// by the previous run.
func (a *Agent) Run(ctx context.Context, src Source) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu     sync.Mutex
		latest []Desired
		got    bool
		signal = make(chan struct{}, 1)
	)
	set := func(list []Desired) {
		mu.Lock()
		latest, got = slices.Clone(list), true
		mu.Unlock()
		select {
		case signal <- struct{}{}:
		default:
		}
	}

	r := &runner{a: a, ctx: ctx, tasks: map[string]*task{}, finished: make(chan *task)}
	if list, ok, err := loadDesired(a.desiredPath()); err != nil {
		a.log.Error(err.Error())
	} else if ok {
		a.log.Info("serving the desired state persisted by the last run until the source sends one", "artifacts", len(list))
		r.apply(list, false)
	}

	var bg sync.WaitGroup
	bg.Go(func() {
		if err := src.Watch(ctx, set); err != nil && ctx.Err() == nil {
			a.log.Error("desired-state source stopped; keeping the last desired state", "err", err)
		}
	})
	bg.Go(func() { a.collectLoop(ctx) })

	for {
		select {
		case <-ctx.Done():
			r.stop()
			bg.Wait()
			return nil
		case <-signal:
			mu.Lock()
			list, ok := latest, got
			mu.Unlock()
			if ok {
				r.apply(list, true)
			}
		case t := <-r.finished:
			r.forget(t)
		}
	}
}

// runner is the state of one Run, owned by its loop.
type runner struct {
	a        *Agent
	ctx      context.Context
	applied  bool
	current  []Desired
	tasks    map[string]*task // workers by name
	retiring []*task          // canceled workers and removals not done yet
	finished chan *task
}

// apply makes the tasks match list.
func (r *runner) apply(list []Desired, persist bool) {
	a := r.a
	list = r.valid(list)
	if r.applied && slices.Equal(list, r.current) {
		return
	}
	if persist {
		if err := saveDesired(a.desiredPath(), list); err != nil {
			a.log.Error("cannot persist the desired state; a restart without the source would not know it", "err", err)
		}
	}
	r.applied, r.current = true, list
	a.mu.Lock()
	a.desired, a.known = list, true
	a.mu.Unlock()
	defer a.kickGC()

	want := map[string]Desired{}
	for _, d := range list {
		want[d.Name] = d
	}
	var dropped []string
	for name, t := range r.tasks {
		if d, ok := want[name]; !ok || d != t.desired {
			t.cancel()
			r.retiring = append(r.retiring, t)
			delete(r.tasks, name)
			if !ok {
				dropped = append(dropped, name)
			}
		}
	}
	// Whatever directory is not desired goes: dropped entries, and those
	// dropped while the agent was not running.
	for _, name := range append(dropped, a.artifactsOnDisk()...) {
		if _, ok := want[name]; ok || r.removing(name) {
			continue
		}
		r.retiring = append(r.retiring, r.start(name, Desired{}))
	}
	for _, d := range list {
		if _, ok := r.tasks[d.Name]; !ok {
			r.tasks[d.Name] = r.start(d.Name, d)
		}
	}
}

// valid drops and reports the entries that Validate refuses, keeping the
// others.
func (r *runner) valid(list []Desired) []Desired {
	var out []Desired
	var taken names
	for i, d := range list {
		if err := taken.add(d); err != nil {
			err = &EntryError{Index: i, Name: d.Name, Err: err}
			r.a.log.Error("desired artifact ignored", "err", err)
			if rep := r.a.opts.Reporter; rep != nil && d.Name != "" {
				rep.Report(Status{Name: d.Name, Reference: d.Reference, Phase: Failed, Message: err.Error()})
			}
			continue
		}
		out = append(out, d)
	}
	return out
}

func (r *runner) removing(name string) bool {
	for _, t := range r.retiring {
		if t.name == name && t.desired == (Desired{}) {
			return true
		}
	}
	return false
}

// start runs a task for name once every task on an overlapping directory
// has finished.
func (r *runner) start(name string, d Desired) *task {
	var before []chan struct{}
	for _, t := range r.retiring {
		if overlaps(t.name, name) {
			before = append(before, t.done)
		}
	}
	ctx, cancel := context.WithCancel(r.ctx)
	t := &task{name: name, desired: d, cancel: cancel, done: make(chan struct{}), pin: &pinOwner{name: name}}
	if d != (Desired{}) {
		// Before a collection can run: protect what the last run was pulling.
		r.a.pinPersisted(t.pin, d)
	}
	go func() {
		defer func() {
			r.a.unpin(t.pin)
			close(t.done)
			select {
			case r.finished <- t:
			case <-r.ctx.Done():
			}
		}()
		for _, ch := range before {
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
		if d == (Desired{}) {
			r.a.remove(ctx, name)
			return
		}
		(&worker{a: r.a, d: d, root: r.a.ArtifactDir(name), pin: t.pin}).run(ctx)
	}()
	return t
}

func (r *runner) forget(t *task) {
	r.retiring = slices.DeleteFunc(r.retiring, func(x *task) bool { return x == t })
}

func (r *runner) stop() {
	for _, t := range r.tasks {
		t.cancel()
		<-t.done
	}
	for _, t := range r.retiring {
		t.cancel()
		<-t.done
	}
}

// artifactsOnDisk lists the names of the artifact directories under root:
// directories that hold versions/ or current, one level deep or, for
// namespaced names, two.
func (a *Agent) artifactsOnDisk() []string {
	base := filepath.Join(a.opts.Root, "artifacts")
	isArtifact := func(dir string) bool {
		for _, sub := range []string{"versions", "current", stateFile} {
			if _, err := os.Lstat(filepath.Join(dir, sub)); err == nil {
				return true
			}
		}
		return false
	}
	var names []string
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !e.IsDir() {
			if strings.HasPrefix(e.Name(), ".trash-") {
				os.RemoveAll(filepath.Join(base, e.Name())) // a removal a crash interrupted
			}
			continue
		}
		if isArtifact(filepath.Join(base, e.Name())) {
			names = append(names, e.Name())
			continue
		}
		sub, _ := os.ReadDir(filepath.Join(base, e.Name()))
		for _, s := range sub {
			if s.IsDir() && !strings.HasPrefix(s.Name(), ".") && isArtifact(filepath.Join(base, e.Name(), s.Name())) {
				names = append(names, e.Name()+"/"+s.Name())
			}
		}
	}
	return names
}

// remove deletes the directory of an artifact no longer desired. Renaming
// it away first means a reader sees the whole directory or nothing.
func (a *Agent) remove(ctx context.Context, name string) {
	a.disk.RLock()
	defer a.disk.RUnlock()
	dir := a.ArtifactDir(name)
	trash := filepath.Join(a.opts.Root, "artifacts", ".trash-"+crand.Text())
	gone := true
	if err := os.Rename(dir, trash); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.log.Error("cannot remove the directory of an artifact no longer desired", "artifact", name, "err", err)
			gone = false
		}
	} else if err := os.RemoveAll(trash); err != nil {
		a.log.Error("cannot remove the directory of an artifact no longer desired", "artifact", name, "err", err)
		gone = false
	} else {
		a.log.Info("artifact removed: no longer desired", "artifact", name, "dir", dir)
	}
	// A trainer's updates were made from the node's data: they go with
	// the artifact they were trained from.
	if err := os.RemoveAll(filepath.Join(a.opts.Root, "uploads", filepath.FromSlash(name))); err != nil {
		a.log.Warn("cannot remove the training updates of an artifact no longer desired", "artifact", name, "err", err)
	}
	if ns, _, ok := strings.Cut(name, "/"); ok {
		os.Remove(filepath.Join(a.opts.Root, "artifacts", ns)) // only if empty
		os.Remove(filepath.Join(a.opts.Root, "uploads", ns))
	}
	a.mu.Lock()
	delete(a.statuses, name)
	a.mu.Unlock()
	a.updateGauge()
	a.kickGC()
	if gone && a.opts.Removed != nil {
		a.opts.Removed(name)
	}
}

// report records and passes on an artifact's status.
func (a *Agent) report(s Status) {
	a.mu.Lock()
	prev, had := a.statuses[s.Name]
	a.statuses[s.Name] = s
	a.mu.Unlock()
	if !had || prev.Phase != s.Phase || prev.Digest != s.Digest || prev.Message != s.Message {
		a.logStatus(s)
		a.updateGauge()
	}
	if a.opts.Reporter != nil {
		a.opts.Reporter.Report(s)
	}
}

func (a *Agent) logStatus(s Status) {
	attrs := []any{"artifact", s.Name, "reference", s.Reference, "phase", s.Phase}
	if s.Digest != "" {
		attrs = append(attrs, "digest", s.Digest)
	}
	if s.Message != "" {
		attrs = append(attrs, "message", s.Message)
	}
	switch s.Phase {
	case Failed:
		a.log.Warn("artifact failed", attrs...)
	case Ready:
		a.log.Info("artifact ready", append(attrs, "path", s.Path)...)
	default:
		a.log.Info("artifact "+strings.ToLower(string(s.Phase)), attrs...)
	}
}

func (a *Agent) updateGauge() {
	counts := map[Phase]int{}
	a.mu.Lock()
	for _, s := range a.statuses {
		counts[s.Phase]++
	}
	a.mu.Unlock()
	for _, p := range Phases {
		a.metrics.artifacts.WithLabelValues(string(p)).Set(float64(counts[p]))
	}
}

// Statuses returns the last status of every desired artifact.
func (a *Agent) Statuses() []Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Status, 0, len(a.statuses))
	for _, s := range a.statuses {
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y Status) int { return strings.Compare(x.Name, y.Name) })
	return out
}
