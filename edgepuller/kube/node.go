package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/edgepuller/agent"
)

// DefaultQPS and DefaultBurst are the client-side limit of a puller's API
// requests when Options.Config sets none: the kubelet's own defaults
// (kubeAPIQPS 50, kubeAPIBurst 100), which the node already sends at. A node
// given 1,000 artifacts reports about 1,000 status patches (one per quick
// pull); at 10 a second, the former limit, that alone took 100 s.
const (
	DefaultQPS   = 50
	DefaultBurst = 100
)

// DefaultProgressEvery and DefaultListPageSize are Options.ProgressEvery and
// Options.ListPageSize when left unset.
const (
	DefaultProgressEvery = time.Second
	DefaultListPageSize  = 500
)

// Options configures a Node. Config, NodeName and ArtifactDir are required.
type Options struct {
	// Config reaches the API server, or KubeEdge's MetaServer on an edge
	// node.
	Config *rest.Config
	// NodeName is the node whose NodeArtifacts (label barge.dev/node=NodeName)
	// are kept.
	NodeName string
	// ArtifactDir is where the agent keeps an artifact (agent.Agent.ArtifactDir):
	// a deleting NodeArtifact keeps its finalizer while the directory exists.
	ArtifactDir func(name string) string
	// ProgressEvery is the least time between two status patches of one
	// NodeArtifact that only move its byte counts or say it is still
	// unfinished (Pending, Pulling); if <= 0, DefaultProgressEvery. An
	// unfinished status is sent only once the artifact has been unfinished
	// that long, so a pull quicker than that makes one patch, its Ready.
	// Any other change of phase, digest, path or message is sent at once.
	ProgressEvery time.Duration
	// ListPageSize is how many NodeArtifacts one list request asks for; the
	// rest follow in further pages, each within its own timeout, so a slow
	// link never has to carry all of a large node's list in one answer. If
	// <= 0, DefaultListPageSize.
	ListPageSize int
	// Backoff is the wait before trying again after the API server could not
	// be reached for the attempt-th time in a row (1 for the first). If nil,
	// 1 s doubling up to 30 s, with jitter.
	Backoff func(attempt int) time.Duration
	// WatchTimeout is how long one watch request lasts before the server
	// ends it and the Node watches again from where it was; if <= 0, 5 to
	// 10 minutes at random.
	WatchTimeout time.Duration
	// UnknownGrace is how long a NodeArtifact that was already being deleted
	// when this process first listed, and that has no directory, keeps its
	// finalizer: time for the agent to remove what it may have been pulling
	// from its persisted list. If <= 0, 30 s.
	UnknownGrace time.Duration
	// Log receives the Node's log. If nil, slog.Default() is used.
	Log *slog.Logger
}

// requestTimeout bounds a list, get or patch: a link that went silent must
// not hold the statuses queued behind it for ever.
const requestTimeout = 30 * time.Second

// Node is one node's side of the NodeArtifact contract: the agent's Source
// (Watch) and Reporter (Report), and the agent's Removed hook. Create it
// with New.
type Node struct {
	opts     Options
	rc       *rest.RESTClient
	log      *slog.Logger
	selector string

	kick chan struct{} // new work for the sender
	up   chan struct{} // the API server answered: stop backing off

	mu     sync.Mutex
	listed time.Time // first successful list of this process; zero before
	// all holds the node's NodeArtifacts by UID; objects the one of them
	// that owns each agent name (directory), and shadowed the others, which
	// name a directory an older object owns (see own).
	all       map[types.UID]*v1alpha1.NodeArtifact
	objects   map[string]*v1alpha1.NodeArtifact // by agent name, namespace/artifactName
	shadowed  map[types.UID]*v1alpha1.NodeArtifact
	delivered map[string]bool   // names in the last list given to the agent
	ever      map[string]bool   // names given to the agent by this process
	removed   map[string]bool   // names the agent removed since it last got them
	last      []agent.Desired   // the last list given to the agent
	queue     map[string]*entry // status to send, by name
	released  map[string]bool   // UIDs whose finalizer was patched away
}

// New checks opts and prepares a client; nothing is requested before Watch.
func New(opts Options) (*Node, error) {
	if opts.Config == nil {
		return nil, errors.New("kube: no API server configuration")
	}
	if opts.NodeName == "" {
		return nil, errors.New("kube: no node name")
	}
	if errs := validation.IsValidLabelValue(opts.NodeName); len(errs) > 0 {
		return nil, fmt.Errorf("kube: node name %q cannot be a label value: %s", opts.NodeName, strings.Join(errs, "; "))
	}
	if opts.ArtifactDir == nil {
		return nil, errors.New("kube: no ArtifactDir")
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = DefaultProgressEvery
	}
	if opts.ListPageSize <= 0 {
		opts.ListPageSize = DefaultListPageSize
	}
	if opts.Backoff == nil {
		opts.Backoff = defaultBackoff
	}
	if opts.UnknownGrace <= 0 {
		opts.UnknownGrace = 30 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	cfg := rest.CopyConfig(opts.Config)
	cfg.GroupVersion = &v1alpha1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = "barge-edgepuller/" + opts.NodeName
	}
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = DefaultQPS, DefaultBurst
	}
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: client for %s: %w", cfg.Host, err)
	}
	return &Node{
		opts:      opts,
		rc:        rc,
		log:       opts.Log.With("node", opts.NodeName),
		selector:  labels.Set{v1alpha1.NodeLabel: opts.NodeName}.String(),
		kick:      make(chan struct{}, 1),
		up:        make(chan struct{}, 1),
		all:       map[types.UID]*v1alpha1.NodeArtifact{},
		objects:   map[string]*v1alpha1.NodeArtifact{},
		shadowed:  map[types.UID]*v1alpha1.NodeArtifact{},
		delivered: map[string]bool{},
		ever:      map[string]bool{},
		removed:   map[string]bool{},
		queue:     map[string]*entry{},
		released:  map[string]bool{},
	}, nil
}

// defaultBackoff waits 1 s doubling up to 30 s, less up to a half at random
// so that the nodes of a site that lost its link do not all call back at once.
func defaultBackoff(attempt int) time.Duration {
	d := 30 * time.Second
	if attempt < 6 {
		d = min(d, time.Second<<max(attempt-1, 0))
	}
	return d/2 + rand.N(d/2+1)
}

// Name is the agent's name for a NodeArtifact, which is also its directory
// under the agent's root: namespace/spec.artifactName (the same on every
// node), or namespace/name when the controller set none.
func Name(na *v1alpha1.NodeArtifact) string {
	if na.Spec.ArtifactName != "" {
		return na.Namespace + "/" + na.Spec.ArtifactName
	}
	return na.Namespace + "/" + na.Name
}

// Watch keeps set informed of the node's NodeArtifacts until ctx ends, and
// sends what Report queues meanwhile. It gives a list only after a list
// request succeeded, so the agent serves its persisted list until then.
// It returns only when ctx ends: lost connections are retried with backoff.
func (n *Node) Watch(ctx context.Context, set func([]agent.Desired)) error {
	var wg sync.WaitGroup
	wg.Go(func() { n.send(ctx) })
	defer wg.Wait()

	rv := ""
	seen := "" // the newest resourceVersion this process has read: no list may go back before it
	failures := 0
	for ctx.Err() == nil {
		var err error
		if rv == "" {
			rv, err = n.list(ctx, set, seen)
			if err == nil && failures > 0 {
				n.log.Info("NodeArtifacts listed again", "failures", failures)
			}
		}
		if err == nil {
			seen = rv
			rv, err = n.watch(ctx, rv, set)
			if rv != "" {
				seen = rv
			}
		}
		if err == nil {
			failures = 0 // only now: a list that works and a watch that fails at once must still back off
			continue
		}
		if ctx.Err() != nil {
			continue
		}
		failures++
		rv = "" // list again when the link is back: events may have been missed
		wait := n.opts.Backoff(failures)
		msg := "cannot list or watch NodeArtifacts; serving and finishing what is known"
		if failures == 1 || failures%20 == 0 {
			n.log.Warn(msg, "err", err, "retry_in", wait.Round(time.Millisecond))
		} else {
			n.log.Debug(msg, "err", err, "attempt", failures, "retry_in", wait.Round(time.Millisecond))
		}
		sleep(ctx, wait)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// list replaces what the Node knows with the server's list, not older than
// minRV, and returns its resourceVersion, from which to watch.
func (n *Node) list(ctx context.Context, set func([]agent.Desired), minRV string) (string, error) {
	items, rv, err := n.listPages(ctx, minRV)
	if err != nil {
		return "", err
	}
	all := map[types.UID]*v1alpha1.NodeArtifact{}
	for _, na := range items {
		if n.mine(na) {
			all[na.UID] = na
		}
	}
	n.mu.Lock()
	n.all = all
	n.own()
	if n.listed.IsZero() {
		n.listed = time.Now()
	}
	for name := range n.queue {
		if n.objects[name] == nil {
			delete(n.queue, name) // nothing to patch
		}
	}
	for uid := range n.released {
		if all[types.UID(uid)] == nil {
			delete(n.released, uid)
		}
	}
	n.mu.Unlock()
	n.log.Debug("NodeArtifacts listed", "count", len(all), "resourceVersion", rv)
	n.deliver(set)
	n.signal(n.up)
	return rv, nil
}

// listPages lists the node's NodeArtifacts ListPageSize at a time, each page
// within requestTimeout, and returns them with the resourceVersion of the
// list (every page is of the first page's snapshot). A continue token that
// expired between pages (the server compacted meanwhile) starts the list
// over, a few times, before giving up.
//
// A list again (minRV set: what the node has already read) is read from
// the API server's watch cache, not older than minRV, and paginated there.
// Only the first list of a process is a consistent read: the API server
// answers those from etcd when its cache lags behind, decoding every
// NodeArtifact of the cluster to find the node's few, and a thousand
// pullers relisting together after an outage or a watch cut would do that
// a thousand times. (resourceVersion 0 would read the cache too, but the
// cache does not paginate it.) The watch that follows from the list's
// resourceVersion brings what a cache a moment behind had not yet seen.
func (n *Node) listPages(ctx context.Context, minRV string) ([]*v1alpha1.NodeArtifact, string, error) {
	const restarts = 3
	for attempt := 1; ; attempt++ {
		items, rv, err := n.listOnce(ctx, minRV)
		if err == nil || !apierrors.IsResourceExpired(err) || attempt > restarts {
			return items, rv, err
		}
		n.log.Debug("list of NodeArtifacts expired between pages; listing again", "err", err)
	}
}

func (n *Node) listOnce(ctx context.Context, minRV string) ([]*v1alpha1.NodeArtifact, string, error) {
	var items []*v1alpha1.NodeArtifact
	rv, next := "", ""
	for page := 1; ; page++ {
		lctx, cancel := context.WithTimeout(ctx, requestTimeout)
		var list v1alpha1.NodeArtifactList
		req := n.rc.Get().Resource("nodeartifacts").Param("labelSelector", n.selector).
			Param("limit", strconv.Itoa(n.opts.ListPageSize))
		switch {
		case next != "":
			req = req.Param("continue", next)
		case minRV != "":
			req = req.Param("resourceVersion", minRV).Param("resourceVersionMatch", string(metav1.ResourceVersionMatchNotOlderThan))
		}
		err := req.Do(lctx).Into(&list)
		cancel()
		if err != nil {
			return nil, "", fmt.Errorf("list NodeArtifacts with label %s (page %d of %d objects): %w", n.selector, page, n.opts.ListPageSize, err)
		}
		if page == 1 {
			rv = list.ResourceVersion
		}
		for i := range list.Items {
			items = append(items, &list.Items[i])
		}
		if next = list.Continue; next == "" {
			return items, rv, nil
		}
	}
}

// mine filters what the label selector let through: spec.nodeName decides.
func (n *Node) mine(na *v1alpha1.NodeArtifact) bool {
	if na.Spec.NodeName != n.opts.NodeName {
		n.log.Warn("NodeArtifact labelled for this node names another in spec.nodeName; ignored",
			"nodeartifact", Name(na), "spec.nodeName", na.Spec.NodeName)
		return false
	}
	return true
}

// watch applies events from rv on until the watch ends. It returns the
// resourceVersion to watch from next, or "" to list again.
func (n *Node) watch(ctx context.Context, rv string, set func([]agent.Desired)) (string, error) {
	timeout := n.opts.WatchTimeout
	if timeout <= 0 {
		timeout = 5*time.Minute + rand.N(5*time.Minute)
	}
	timeout = max(timeout.Round(time.Second), time.Second)
	// The server ends the watch after timeoutSeconds; the client's own
	// deadline ends it too when a proxy in between ignores that.
	wctx, cancel := context.WithTimeout(ctx, timeout+15*time.Second)
	defer cancel()
	start := time.Now()
	w, err := n.rc.Get().Resource("nodeartifacts").
		Param("labelSelector", n.selector).
		Param("watch", "true").
		Param("resourceVersion", rv).
		Param("allowWatchBookmarks", "true").
		Param("timeoutSeconds", strconv.Itoa(int(timeout/time.Second))).
		Watch(wctx)
	if err != nil {
		return "", fmt.Errorf("watch NodeArtifacts with label %s: %w", n.selector, err)
	}
	defer w.Stop()
	// Creates, deletes and spec changes are gathered for up to deliverAfter
	// and handed over together: each hand-over costs a pass over all the
	// node's artifacts here and in the agent, so one per event made a
	// burst of n creates cost n².
	var gathered <-chan time.Time // set while changes wait
	defer func() {
		if gathered != nil {
			n.handOver(set)
		}
	}()
	for {
		var ev watch.Event
		var ok bool
		select {
		case <-ctx.Done():
			return rv, nil
		case <-gathered:
			gathered = nil
			n.handOver(set)
			continue
		case ev, ok = <-w.ResultChan():
		}
		if !ok {
			// client-go ends a watch whose connection broke as if it had
			// ended normally: only the time it lasted tells them apart.
			if time.Since(start) < timeout*9/10 {
				return "", errors.New("watch NodeArtifacts: the connection to the API server was lost")
			}
			return rv, nil
		}
		switch ev.Type {
		case watch.Error:
			err := apierrors.FromObject(ev.Object)
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				n.log.Debug("watch expired; listing again", "resourceVersion", rv)
				return "", nil
			}
			return "", fmt.Errorf("watch NodeArtifacts: %w", err)
		case watch.Bookmark:
			if m, err := meta.Accessor(ev.Object); err == nil {
				rv = m.GetResourceVersion()
			}
			continue
		}
		na, isNA := ev.Object.(*v1alpha1.NodeArtifact)
		if !isNA {
			continue
		}
		rv = na.ResourceVersion
		name := Name(na)
		n.mu.Lock()
		if ev.Type == watch.Modified && n.replace(na) {
			// Only the status or other fields nothing here reads changed
			// (most often this puller's own patch coming back): no pass
			// over the node's other artifacts.
			shadowed := n.shadowed[na.UID] != nil
			n.mu.Unlock()
			n.signal(n.up)
			if shadowed {
				n.signal(n.kick) // its Failed status may need saying again
			}
			continue
		}
		if ev.Type == watch.Deleted || !n.mine(na) {
			delete(n.all, na.UID)
			delete(n.released, string(na.UID))
			if owner := n.objects[name]; owner != nil && owner.UID == na.UID {
				delete(n.queue, name)
			}
		} else {
			n.all[na.UID] = na
		}
		n.mu.Unlock()
		if gathered == nil {
			gathered = time.After(deliverAfter)
		}
		n.signal(n.up)
	}
}

// deliverAfter is how long the changes a watch brings are gathered before
// they are handed to the agent: the most a new artifact waits for its pull.
const deliverAfter = 200 * time.Millisecond

// handOver works out which object owns each directory and gives the
// agent the list, if it changed.
func (n *Node) handOver(set func([]agent.Desired)) {
	n.mu.Lock()
	n.own()
	n.mu.Unlock()
	n.deliver(set)
}

// replace puts na in place of the object with its UID when it changes
// nothing that own, deliver or flush's finalizer pass read: same
// generation (so the same spec), labels, finalizers and deletion. It
// reports whether it did. Call with n.mu held.
func (n *Node) replace(na *v1alpha1.NodeArtifact) bool {
	old := n.all[na.UID]
	if old == nil || old.Generation != na.Generation || na.Spec.NodeName != n.opts.NodeName ||
		(old.DeletionTimestamp == nil) != (na.DeletionTimestamp == nil) ||
		!slices.Equal(old.Finalizers, na.Finalizers) || !maps.Equal(old.Labels, na.Labels) {
		return false
	}
	n.all[na.UID] = na
	if cur := n.objects[Name(na)]; cur != nil && cur.UID == na.UID {
		n.objects[Name(na)] = na
	}
	if n.shadowed[na.UID] != nil {
		n.shadowed[na.UID] = na
	}
	return true
}

// own picks, for every agent name, the NodeArtifact that owns its directory:
// the oldest, then the least UID, so every pass and every restart picks the
// same one. Two objects must never share files: the others are shadowed,
// reported Failed and released at once when deleted, having no files. The
// controller never names two objects alike; a person or a bug might.
// Call with n.mu held.
func (n *Node) own() {
	objects := make(map[string]*v1alpha1.NodeArtifact, len(n.all))
	shadowed := map[types.UID]*v1alpha1.NodeArtifact{}
	for _, na := range n.all {
		name := Name(na)
		cur := objects[name]
		if cur == nil {
			objects[name] = na
			continue
		}
		if older(na, cur) {
			objects[name], na = na, cur
		}
		shadowed[na.UID] = na
	}
	for uid, na := range shadowed {
		if n.shadowed[uid] == nil {
			n.log.Error("NodeArtifact names a directory another owns; not pulled", "nodeartifact", na.Namespace+"/"+na.Name,
				"directory", Name(na), "owner", objects[Name(na)].Name)
		}
	}
	n.objects, n.shadowed = objects, shadowed
}

func older(a, b *v1alpha1.NodeArtifact) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.UID < b.UID
}

// deliver gives the agent the NodeArtifacts not being deleted, if that
// changes what it has, and wakes the sender: a status may now be sendable,
// or a finalizer releasable.
func (n *Node) deliver(set func([]agent.Desired)) {
	n.mu.Lock()
	var list []agent.Desired
	for name, na := range n.objects {
		if na.DeletionTimestamp != nil {
			continue
		}
		d := agent.Desired{Name: name, Reference: na.Spec.Reference, Insecure: na.Spec.Insecure, Peers: peersOf(na)}
		if v := na.Spec.Verify; v != nil {
			d.Verify = agent.VerifyRef{Provider: v.Provider, Keys: v.KeyMaterialName(), Index: v.SignedIndex}
		}
		if u := na.Spec.Upload; u != nil {
			// The agent's directory for it, root/uploads/<name>/round-<N>,
			// is v1alpha1.UploadDir: name is namespace/artifactName.
			d.Upload = agent.UploadRef{Round: int(u.Round), Repository: u.Repository, Run: u.Run}
		}
		list = append(list, d)
	}
	slices.SortFunc(list, func(a, b agent.Desired) int { return strings.Compare(a.Name, b.Name) })
	changed := n.last == nil || !slices.Equal(list, n.last)
	if changed {
		n.last = list
		if n.last == nil {
			n.last = []agent.Desired{}
		}
		n.delivered = map[string]bool{}
		for _, d := range list {
			n.delivered[d.Name] = true
			delete(n.removed, d.Name)
			// The agent refuses an invalid entry without ever having its
			// files: nothing will be removed, nothing to wait for.
			if d.Validate() == nil {
				n.ever[d.Name] = true
			}
		}
	}
	n.mu.Unlock()
	if changed {
		n.log.Info("desired artifacts", "count", len(list))
		set(list)
	}
	n.signal(n.kick)
}

// peersOf is spec.peers as Desired.Peers: node=address pairs, in order.
// The agent validates them. White space inside a node or an address is
// made '_', which the agent refuses: "1.2.3.4:5050 evil=…" in one
// address fails the entry rather than adding a peer.
func peersOf(na *v1alpha1.NodeArtifact) string {
	field := func(s string) string {
		return strings.Join(strings.Fields(s), "_")
	}
	var parts []string
	for _, p := range na.Spec.Peers {
		parts = append(parts, field(p.Node)+"="+field(p.Address))
	}
	return strings.Join(parts, " ")
}

// Removed is the agent's hook: name's files are gone.
func (n *Node) Removed(name string) {
	n.mu.Lock()
	if !n.delivered[name] {
		n.removed[name] = true
		delete(n.queue, name)
	}
	n.mu.Unlock()
	n.signal(n.kick)
}

func (n *Node) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
