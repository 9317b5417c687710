package controllers

import (
	"context"
	"strconv"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
)

// controllerIndex is the field index of the manager's cache that finds the
// NodeArtifacts of one owner by the UID of their controller reference: a
// pass reads its owner's few NodeArtifacts from memory instead of asking
// the API server, whose watch cache cannot index labels and so scanned
// every NodeArtifact of the namespace to return a handful.
const controllerIndex = "barge.dev/controller-uid"

// indexNodeArtifacts adds controllerIndex to mgr's cache. The cache holds
// the NodeArtifacts anyway: the controllers watch the ones they own.
func indexNodeArtifacts(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.NodeArtifact{}, controllerIndex, controllerUID)
}

func controllerUID(obj client.Object) []string {
	if ref := metav1.GetControllerOf(obj); ref != nil {
		return []string{string(ref.UID)}
	}
	return nil
}

// writeLog remembers, per owner, the NodeArtifacts the controller wrote and
// the resourceVersion each write made, until the cache shows them all. A
// rollout must decide from what it last wrote: a cache that has not seen a
// move yet would count the node as not in flight and let a pass move more
// nodes than maxConcurrentNodes allows. While a write is missing from the
// cache, the owner's NodeArtifacts are read from the API server, as before
// the cache was used; once every write is there, from the cache. The
// pullers' own writes need no such care: a stale status only makes a node
// look still in flight, which moves fewer nodes, never more.
type writeLog struct {
	mu sync.Mutex
	m  map[types.UID]map[string]written
}

// written is one write: the resourceVersion it made (gone: the object was
// deleted, or its deletion started), and when, so that an owner that
// vanished without a last pass does not keep its entries forever.
type written struct {
	resourceVersion string
	gone            bool
	at              time.Time
}

// writeLogTTL drops a write the cache has not shown after this long: the
// watch must have been re-listed, and the cache is as good as a read.
const writeLogTTL = 2 * time.Minute

// wrote records that na, as the API server returned it, was written for owner.
func (l *writeLog) wrote(owner types.UID, na *v1alpha1.NodeArtifact) {
	l.record(owner, na.Name, written{resourceVersion: na.ResourceVersion, at: time.Now()})
}

// deleted records that the deletion of name started.
func (l *writeLog) deleted(owner types.UID, name string) {
	l.record(owner, name, written{gone: true, at: time.Now()})
}

func (l *writeLog) record(owner types.UID, name string, w written) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[types.UID]map[string]written{}
	}
	if l.m[owner] == nil {
		l.m[owner] = map[string]written{}
	}
	l.m[owner][name] = w
}

// newest is the highest resourceVersion written for owner and not yet seen
// in the cache, "" when none is logged: a list not older than it shows
// every logged write. (resourceVersions are etcd revisions, integers that
// only grow; one that is not is ignored, and "" makes a consistent read.)
func (l *writeLog) newest(owner types.UID) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var top uint64
	for _, w := range l.m[owner] {
		if v, err := strconv.ParseUint(w.resourceVersion, 10, 64); err == nil && v > top {
			top = v
		}
	}
	if top == 0 {
		return ""
	}
	return strconv.FormatUint(top, 10)
}

// forget drops owner's entries: it has no NodeArtifacts left.
func (l *writeLog) forget(owner types.UID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, owner)
}

// shows reports whether the cache reflects every write logged for owner;
// those it reflects are dropped from the log. cached gets the owner's
// NodeArtifact of a name as the cache holds it, nil when the cache has
// none: one lookup per write still pending, not a list of the owner's
// NodeArtifacts, which a pass polling for a lagging cache would copy every
// few milliseconds; it stops at the first write the cache does not show.
func (l *writeLog) shows(owner types.UID, cached func(name string) (*v1alpha1.NodeArtifact, error)) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pending := l.m[owner]
	now := time.Now()
	for name, w := range pending {
		if now.Sub(w.at) > writeLogTTL {
			delete(pending, name)
			continue
		}
		na, err := cached(name)
		if err != nil {
			return false, err
		}
		if !w.reflectedIn(na) {
			return false, nil // the others are looked at again next time
		}
		delete(pending, name)
	}
	if len(pending) == 0 {
		delete(l.m, owner)
		return true, nil
	}
	return false, nil
}

// reflectedIn: the cached object (nil when absent) is this write or newer.
func (w written) reflectedIn(na *v1alpha1.NodeArtifact) bool {
	if w.gone {
		return na == nil || na.DeletionTimestamp != nil
	}
	return na != nil && notOlder(na.ResourceVersion, w.resourceVersion)
}

// notOlder compares resourceVersions. They are opaque to clients, but the
// API server's are etcd revisions, which only grow; anything else must be
// equal.
func notOlder(have, want string) bool {
	h, err1 := strconv.ParseUint(have, 10, 64)
	w, err2 := strconv.ParseUint(want, 10, 64)
	if err1 != nil || err2 != nil {
		return have == want
	}
	return h >= w
}
