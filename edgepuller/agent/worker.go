package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/gc"
	"github.com/bargeml/barge/edgepuller/unpack"
)

// stateFile, in an artifact's directory, remembers what its reference
// resolved to, so that a restart without the registry knows whether the
// current version is the desired one, and which digest to finish pulling.
const stateFile = "state.json"

type artifactState struct {
	Reference  string        `json:"reference"`
	Target     digest.Digest `json:"target,omitempty"`
	ResolvedAt time.Time     `json:"resolvedAt,omitzero"`
}

// resolveTimeout bounds one tag resolution, retries included.
const resolveTimeout = time.Minute

// worker keeps one artifact as desired. It alone writes its directory,
// apart from the garbage collector, which it excludes through Agent.disk.
type worker struct {
	a        *Agent
	d        Desired
	root     string
	ref      registry.Reference
	state    artifactState
	failures int
	pin      *pinOwner // whose pin this worker holds

	mu sync.Mutex
	up UploadStatus // carried by every report while d.Upload is set
	// sources and dropped are the last pull's, carried by every report
	// (see Status.Sources).
	sources *ByteSources
	dropped []DroppedPeer
}

func (w *worker) run(ctx context.Context) {
	w.ref, _ = registry.ParseReference(w.d.Reference) // Validate accepted it
	w.state = w.a.loadState(w.d)
	cur := w.current()
	target := w.a.knownTarget(w.d, w.state)
	if w.d.Upload.Round > 0 {
		w.setUpload(UploadStatus{Phase: UploadWaiting, Message: fmt.Sprintf("waiting for the base model %s to be on the node", target)})
	}
	switch {
	case cur == "":
		w.report(Pending, cur, "not pulled yet")
	case cur == target:
		w.report(Ready, cur, "")
	default:
		w.report(Pending, cur, "a newer version is to be pulled; serving the current one meanwhile")
	}
	for {
		wait := w.step(ctx)
		if ctx.Err() != nil {
			return
		}
		if wait < 0 {
			if w.d.Upload.Round > 0 {
				w.upload(ctx, w.current()) // Ready: current is the digest the reference names
			}
			<-ctx.Done()
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// step brings the artifact one step closer to its desired version and
// returns how long to wait before the next step, < 0 for ever.
func (w *worker) step(ctx context.Context) time.Duration {
	cur := w.current()
	target, resolveErr := w.target(ctx)
	if ctx.Err() != nil {
		return 0
	}
	if target == "" {
		return w.fail(cur, resolveErr)
	}
	if target == cur {
		w.failures = 0
		w.a.unpin(w.pin)
		msg := ""
		if resolveErr != nil {
			msg = fmt.Sprintf("serving %s from disk; cannot check for a newer version: %v", cur, resolveErr)
		}
		w.report(Ready, cur, msg)
		return w.nextResolve()
	}
	if resolveErr != nil {
		w.a.log.Warn("cannot resolve the tag; finishing the version it named last time", "artifact", w.d.Name, "digest", target, "err", resolveErr)
	}
	if err := w.pull(ctx, cur, target); err != nil {
		if ctx.Err() != nil {
			return 0
		}
		return w.fail(w.current(), err)
	}
	w.failures = 0
	return w.nextResolve()
}

func (w *worker) nextResolve() time.Duration {
	if _, err := w.ref.Digest(); err == nil {
		return -1 // a digest never moves
	}
	return w.a.opts.ResolveInterval
}

func (w *worker) fail(cur digest.Digest, err error) time.Duration {
	w.failures++
	wait := w.a.opts.Backoff(w.failures)
	w.report(Failed, cur, fmt.Sprintf("%v (attempt %d; next in %s)", err, w.failures, wait.Round(100*time.Millisecond)))
	return wait
}

// target returns the manifest digest the reference names: itself for a
// digest; for a tag, what the origin says now, or, when it cannot be asked,
// what it said last time (with the error).
func (w *worker) target(ctx context.Context) (digest.Digest, error) {
	if d, err := w.ref.Digest(); err == nil {
		return d, nil
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	repo := &remote.Repository{Client: w.a.client, Reference: w.ref, PlainHTTP: w.d.Insecure}
	desc, err := repo.Resolve(rctx, w.ref.Reference)
	if err != nil {
		return w.state.Target, fmt.Errorf("resolve %s: %w", w.d.Reference, err)
	}
	if desc.Digest != w.state.Target {
		w.state.Target, w.state.ResolvedAt = desc.Digest, time.Now().UTC()
		if err := w.a.saveState(w.d, w.state); err != nil {
			w.a.log.Warn("cannot remember what the tag resolved to", "artifact", w.d.Name, "err", err)
		}
	}
	return desc.Digest, nil
}

func (w *worker) current() digest.Digest {
	cur, err := unpack.Current(w.root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		w.a.log.Warn("cannot tell which version is current", "artifact", w.d.Name, "err", err)
	}
	return cur
}

// pull fetches target into the store and makes it current.
func (w *worker) pull(ctx context.Context, cur, target digest.Digest) error {
	select {
	case w.a.slots <- struct{}{}:
	default:
		w.report(Pending, cur, "waiting for a free download slot")
		select {
		case w.a.slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() { <-w.a.slots }()

	w.a.pin(w.pin, target)
	w.setSources(nil, nil)
	start := time.Now()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &progress{w: w, cur: cur, target: target, done: map[digest.Digest]int64{}, cancel: cancel}
	w.report(Pulling, cur, "")
	opts := w.a.opts.Fetch
	opts.PlainHTTP = w.d.Insecure
	opts.Progress = p.event
	if w.a.opts.Verify != nil {
		opts.Verify = func(ctx context.Context, desc ocispec.Descriptor) error { return w.a.opts.Verify(ctx, w.d, desc) }
	}
	opts.Peers, _ = ParsePeers(w.d.Peers) // Validate accepted it
	if len(opts.Peers) > 0 && opts.PeerTLS == nil {
		w.a.log.Warn("site peers are listed but this puller has no peer TLS configuration: fetching without them", "artifact", w.d.Name, "peers", len(opts.Peers))
	}
	pinned := w.ref.Registry + "/" + w.ref.Repository + "@" + target.String()
	_, art, res, err := fetch.Pull(pctx, w.a.st, pinned, opts)
	w.a.metrics.pulled(res)
	w.setSources(sourcesOf(res))
	for _, d := range res.Dropped {
		w.a.log.Warn("site peer dropped for this pull", "artifact", w.d.Name, "peer", d.Node, "reason", d.Reason, "err", d.Err)
	}
	if refused := p.refusal(); refused != nil {
		w.a.unpin(w.pin) // its layers are not wanted
		return refused
	}
	if err == nil {
		err = activatable(art, w.d.Reference)
	}
	if err != nil {
		if ok, _ := w.a.st.Exists(ctx, ocispec.Descriptor{Digest: target}); !ok {
			// Nothing of it is known to the store: a pin would only stop
			// the collector from deleting anything.
			w.a.unpin(w.pin)
		}
		return err
	}
	path, err := w.a.activate(ctx, w.pin, w.root, cur, target, art.FileLayers())
	if err != nil {
		return err
	}
	w.a.metrics.duration.Observe(time.Since(start).Seconds())
	w.a.log.Info("version activated", "artifact", w.d.Name, "digest", target, "dir", path,
		"fetched", res.Fetched, "fromOrigin", res.FromOrigin, "fromPeers", res.FromPeers, "fromMirrors", res.FromMirrors,
		"reused", res.Reused, "resumed", res.Resumed, "retries", res.Retries,
		"took", time.Since(start).Round(time.Millisecond))
	w.report(Ready, target, "")
	w.a.kickGC()
	return nil
}

// activatable refuses what has no files to materialize.
func activatable(a *artifact.Artifact, ref string) error {
	switch {
	case a.Kind == artifact.KindImage:
		return fmt.Errorf("%s is a container image: run it with a container runtime; the edge puller materializes model, code and dataset files", ref)
	case a.Kind == artifact.KindJoint:
		return fmt.Errorf("%s is a joint model (an index of an edge and a cloud model): reference its edge member by digest", ref)
	case len(a.Files) == 0:
		return fmt.Errorf("%s has no file layers (none has an org.opencontainers.image.title): nothing to materialize", ref)
	}
	return nil
}

// activate switches root/current to target, recording when the version it
// replaces was last used so the collector keeps the most recent ones.
func (a *Agent) activate(ctx context.Context, pin *pinOwner, root string, cur, target digest.Digest, layers []ocispec.Descriptor) (string, error) {
	a.disk.RLock()
	defer a.disk.RUnlock()
	now := time.Now()
	path, err := unpack.Activate(ctx, a.st, layers, root, target, unpack.Options{})
	if err != nil {
		return "", err
	}
	if cur != "" && cur != target {
		_ = gc.Touch(root, cur, now) // best effort: it only orders eviction
	}
	_ = gc.Touch(root, target, now)
	a.unpin(pin) // a version now: the collector keeps it as such
	return path, nil
}

func (a *Agent) pin(owner *pinOwner, d digest.Digest) {
	a.disk.RLock() // not while a collection has already listed the pins
	defer a.disk.RUnlock()
	a.mu.Lock()
	a.pins[owner] = d
	a.mu.Unlock()
}

func (a *Agent) unpin(owner *pinOwner) {
	a.mu.Lock()
	delete(a.pins, owner)
	a.mu.Unlock()
}

// pinPersisted protects, from the first collection on, the blobs of a
// version the previous run was pulling and did not activate.
func (a *Agent) pinPersisted(owner *pinOwner, d Desired) {
	st := a.loadState(d)
	target := a.knownTarget(d, st)
	if target == "" {
		return
	}
	if cur, _ := unpack.Current(a.ArtifactDir(d.Name)); cur == target {
		return
	}
	if ok, _ := a.st.Exists(context.Background(), ocispec.Descriptor{Digest: target}); ok {
		a.pin(owner, target)
	}
}

// knownTarget is the digest d names without asking a registry, if known.
func (a *Agent) knownTarget(d Desired, st artifactState) digest.Digest {
	ref, err := registry.ParseReference(d.Reference)
	if err != nil {
		return ""
	}
	if dg, err := ref.Digest(); err == nil {
		return dg
	}
	return st.Target
}

func (a *Agent) loadState(d Desired) artifactState {
	fresh := artifactState{Reference: d.Reference}
	b, err := os.ReadFile(filepath.Join(a.ArtifactDir(d.Name), stateFile))
	if err != nil {
		return fresh
	}
	var st artifactState
	if json.Unmarshal(b, &st) != nil || st.Reference != d.Reference {
		return fresh
	}
	return st
}

func (a *Agent) saveState(d Desired, st artifactState) error {
	dir := a.ArtifactDir(d.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, stateFile), append(b, '\n'))
}

func (w *worker) report(phase Phase, cur digest.Digest, msg string) {
	s := Status{Name: w.d.Name, Reference: w.d.Reference, Phase: phase, Digest: cur, Message: msg, Upload: w.uploadStatus()}
	s.Sources, s.DroppedPeers = w.lastSources()
	if cur != "" {
		s.Path = filepath.Join(w.root, "current")
	}
	if phase == Ready {
		s.BytesTotal = w.a.sizeOf(cur)
		s.BytesDone = s.BytesTotal
	}
	w.a.report(s)
}

func (w *worker) setSources(s *ByteSources, dropped []DroppedPeer) {
	w.mu.Lock()
	w.sources, w.dropped = s, dropped
	w.mu.Unlock()
}

// lastSources returns the last pull's sources and dropped peers; the
// caller may keep them: they are never changed, only replaced.
func (w *worker) lastSources() (*ByteSources, []DroppedPeer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sources, w.dropped
}

// sizeOf is the bytes of a version's config and layers, from its manifest
// in the store; 0 if unknown.
func (a *Agent) sizeOf(d digest.Digest) int64 {
	path := a.st.BlobPath(d)
	if path == "" {
		return 0
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) > artifact.MaxManifestBytes {
		return 0
	}
	art, err := artifact.Parse(ocispec.Descriptor{Digest: d}, b)
	if err != nil {
		return 0
	}
	return art.Size - int64(len(b))
}

// progress turns fetch events into Pulling reports, about once a second.
type progress struct {
	w           *worker
	cur, target digest.Digest

	cancel context.CancelFunc // stops the pull

	mu      sync.Mutex
	done    map[digest.Digest]int64
	checked bool
	refused error
	total   int64
	last    time.Time
}

// check refuses, before any layer is downloaded, an artifact that cannot
// be materialized (a container image of several GiB, say): fetch stores
// the manifest, then fetches the config, then the layers, so at the first
// event the manifest can be read from the store. Called with mu held.
func (p *progress) check() {
	p.checked = true
	b, err := os.ReadFile(p.w.a.st.BlobPath(p.target))
	if err != nil || len(b) > artifact.MaxManifestBytes {
		return // fetch reports what is wrong
	}
	art, err := artifact.Parse(ocispec.Descriptor{Digest: p.target}, b)
	if err != nil {
		return
	}
	p.total = art.Size - int64(len(b))
	if err := activatable(art, p.w.d.Reference); err != nil {
		p.refused = err
		p.cancel()
	}
}

func (p *progress) refusal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

const progressEvery = time.Second

func (p *progress) event(e fetch.Event) {
	p.mu.Lock()
	switch e.Kind {
	case fetch.Done, fetch.Skipped:
		p.done[e.Digest] = e.Total
	case fetch.Started, fetch.Progress, fetch.Resumed, fetch.Retrying:
		p.done[e.Digest] = e.Offset
	}
	if !p.checked {
		p.check()
	}
	now := time.Now()
	if now.Sub(p.last) < progressEvery {
		p.mu.Unlock()
		return
	}
	p.last = now
	var done int64
	for _, n := range p.done {
		done += n
	}
	total := p.total
	p.mu.Unlock()
	w := p.w
	s := Status{Name: w.d.Name, Reference: w.d.Reference, Phase: Pulling, Digest: p.cur, BytesDone: done, BytesTotal: total, Upload: w.uploadStatus()}
	s.Sources, s.DroppedPeers = w.lastSources()
	if p.cur != "" {
		s.Path = filepath.Join(w.root, "current")
	}
	w.a.report(s)
}
