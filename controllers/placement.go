package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/bargeml/barge/api/v1alpha1"
)

const (
	// CleanupFinalizer is on every InferenceModel, Dataset and TrainingModel: deleting one
	// deletes its NodeArtifacts and waits until they are gone.
	CleanupFinalizer = "barge.dev/cleanup"

	// OwnerKindLabel and OwnerNameLabel on a NodeArtifact name the object it
	// serves, so its owner's NodeArtifacts can be listed by label.
	OwnerKindLabel = "barge.dev/owner-kind"
	OwnerNameLabel = "barge.dev/owner-name"

	kindInferenceModel = "InferenceModel"
	kindDataset        = "Dataset"
	kindTrainingModel  = "TrainingModel"
)

// namePrefix shortens a kind in NodeArtifact names.
var namePrefix = map[string]string{kindInferenceModel: "model", kindDataset: "dataset", kindTrainingModel: "train"}

// nodeArtifactName is the NodeArtifact of one object on one node:
// model-<name>-<node>-<hash>, dataset-<...> or train-<...>, cut to fit an
// object name. The hash is of kind, name and node joined by '/', which no
// name holds, so model a-b on node c and model a on node b-c differ.
func nodeArtifactName(kind, name, node string) string {
	sum := sha256.Sum256([]byte(kind + "/" + name + "/" + node))
	suffix := "-" + hex.EncodeToString(sum[:5])
	base := namePrefix[kind] + "-" + name + "-" + node
	if limit := 253 - len(suffix); len(base) > limit {
		base = strings.TrimRight(base[:limit], "-.")
	}
	return base + suffix
}

// artifactName is the directory of an object's files on every node:
// model-<name>, dataset-<name> or train-<name>, shortened to v1alpha1.MaxArtifactName so
// that namespace/artifactName fits what a puller accepts.
func artifactName(kind, name string) string {
	return shorten(namePrefix[kind]+"-"+name, v1alpha1.MaxArtifactName)
}

// labelValue is s when it fits a label value (63 characters), else a prefix
// of s with a hash of all of it. Object and node names are DNS subdomains, so
// their characters are valid in label values.
func labelValue(s string) string { return shorten(s, 63) }

func shorten(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return strings.TrimRight(s[:limit-9], "-.") + "-" + hex.EncodeToString(sum[:4])
}

// ownerLabels select the NodeArtifacts of one object.
func ownerLabels(kind, name string) map[string]string {
	return map[string]string{OwnerKindLabel: kind, OwnerNameLabel: labelValue(name)}
}

// placement is an object's wish: this digest on every node its selector
// matches, reached at most maxConcurrent nodes at a time.
type placement struct {
	owner         client.Object
	kind          string
	repository    string
	digest        string
	insecure      bool
	selector      map[string]string
	maxConcurrent int32
	// verify is the owner's spec.verify, carried to every NodeArtifact so
	// the node checks the signature again.
	verify *v1alpha1.VerifySpec
	// moveOnly, when not nil, are the only nodes that may move to digest
	// in this pass: a rollout's canary, or none while it is halted. Nil
	// lets any node move. A node without a NodeArtifact gets digest
	// whatever it says: it has no old version to keep serving.
	moveOnly map[string]bool
	// failedSettled: a node that failed digest is done, not in flight, so
	// the owner's failure policy (rollout.maxFailedNodes), not
	// maxConcurrent, decides whether the rollout goes on. Without it a
	// failed node holds the rollout.
	failedSettled bool
	// upload is a TrainingModel's round: the update each node's puller
	// uploads once its trainer is done. Nil for other owners.
	upload *v1alpha1.UploadSpec
	// maxCreates, when > 0, bounds the NodeArtifacts one pass creates; the
	// result says more are to come, and the owner requeues at once. A model
	// on 1,000 nodes then reports its digest and progress after the first
	// few hundred, and shares the workers with the other models, instead of
	// holding one for 1,000 creates and saying nothing until they are done.
	maxCreates int
}

// moveBounds limit which NodeArtifacts one pass moves.
type moveBounds struct {
	maxConcurrent int32
	only          map[string]bool
	failedSettled bool
}

func (p placement) bounds() moveBounds {
	return moveBounds{maxConcurrent: p.maxConcurrent, only: p.moveOnly, failedSettled: p.failedSettled}
}

// nodeProblem is a node whose puller reported a failure.
type nodeProblem struct{ node, message string }

// placeResult is what a placement pass found and did.
type placeResult struct {
	counts v1alpha1.NodeCounts
	// desired are the nodes the selector matches, sorted.
	desired []string
	// pending are the matching nodes that do not hold the digest yet.
	pending []string
	failed  []nodeProblem
	created []string
	moved   []string
	removed []string
	// rolloutStarted: the first nodes were moved to a new digest.
	rolloutStarted bool
	// conflicts are NodeArtifact names another object already uses.
	conflicts []string
	// repaired are NodeArtifacts whose labels or spec someone else changed,
	// set back.
	repaired []string
	// more: placement.maxCreates left nodes without a NodeArtifact; the
	// next pass creates them.
	more bool
}

// placer writes and removes NodeArtifacts.
type placer struct {
	// client reads Nodes and NodeArtifacts from the cache (NodeArtifacts
	// by controllerIndex) and writes NodeArtifacts.
	client client.Client
	// reader reads uncached: a rollout decides from what it last wrote, so
	// while the cache lacks one of its writes (writes), the owner's
	// NodeArtifacts are listed from the API server, and a stale cache can
	// never move more nodes than maxConcurrentNodes allows.
	reader client.Reader
	writes writeLog
	scheme *runtime.Scheme
	// sites is how NodeArtifacts list their peers; nil or a zero port: no
	// peers. A pointer, so that the suite can change it while it runs.
	sites atomic.Pointer[sitePolicy]
	// typedNodes: the cache holds Nodes whole (slimmed by slimNode) rather
	// than as metadata, for their addresses; only when peers are on.
	typedNodes bool
}

// rolloutPlan is what one pass changes, decided without the API server.
type rolloutPlan struct {
	// create lists matching nodes without a NodeArtifact.
	create []string
	// move are NodeArtifacts on an older digest that move now.
	move []*v1alpha1.NodeArtifact
	// remove are NodeArtifacts of nodes that no longer match.
	remove []*v1alpha1.NodeArtifact
}

// planRollout decides a pass. A NodeArtifact is in flight while its spec is
// on digest and its puller has not reported it Ready there (nor, with
// failedSettled, Failed); moves fill what maxConcurrent leaves, among the
// nodes b.only allows, nodes that serve nothing first, then by name, so
// every pass picks the same ones. New nodes get the digest at once: they
// have no old version to keep serving.
func planRollout(desired []string, existing []*v1alpha1.NodeArtifact, digest string, b moveBounds) rolloutPlan {
	var plan rolloutPlan
	want := make(map[string]bool, len(desired))
	for _, n := range desired {
		want[n] = true
	}
	have := map[string]bool{}
	inFlight := 0
	var candidates []*v1alpha1.NodeArtifact
	for _, na := range existing {
		have[na.Spec.NodeName] = true
		switch {
		case na.DeletionTimestamp != nil:
			// Its puller is removing the files; a new one follows once it
			// is gone.
		case !want[na.Spec.NodeName]:
			plan.remove = append(plan.remove, na)
		case na.Spec.Digest == digest:
			if !holds(na, digest) && !(b.failedSettled && failedNow(na)) {
				inFlight++
			}
		case b.only == nil || b.only[na.Spec.NodeName]:
			candidates = append(candidates, na)
		}
	}
	for _, n := range desired {
		if !have[n] {
			plan.create = append(plan.create, n)
		}
	}
	slices.SortFunc(candidates, func(a, b *v1alpha1.NodeArtifact) int {
		if sa, sb := serving(a), serving(b); sa != sb {
			if sa {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Spec.NodeName, b.Spec.NodeName)
	})
	budget := max(int(b.maxConcurrent), 1) - inFlight
	for i := 0; i < len(candidates) && i < budget; i++ {
		plan.move = append(plan.move, candidates[i])
	}
	return plan
}

// holds: the node's puller reports digest materialized and Ready.
func holds(na *v1alpha1.NodeArtifact, digest string) bool {
	return na.Status.Phase == v1alpha1.NodeArtifactReady && na.Status.Digest == digest
}

// serving: the node has some version Ready, which it keeps serving until
// its new one is Ready.
func serving(na *v1alpha1.NodeArtifact) bool {
	return na.Status.Phase == v1alpha1.NodeArtifactReady && na.Status.Digest != ""
}

// failedNow: the puller's failure is about the current spec, not one it
// reported before the spec moved.
func failedNow(na *v1alpha1.NodeArtifact) bool {
	return na.Status.Phase == v1alpha1.NodeArtifactFailed &&
		(na.Status.ObservedGeneration == 0 || na.Status.ObservedGeneration == na.Generation)
}

// nodeView is what placement reads before it changes anything.
type nodeView struct {
	nodes []metav1.PartialObjectMetadata
	// ips are the nodes' InternalIPs by name, when the cache has them.
	ips map[string]string
	// desired are the names of the nodes the selector matches, sorted.
	desired []string
	// labels of the desired nodes, by name.
	labels map[string]map[string]string
	// existing are the owner's NodeArtifacts.
	existing []*v1alpha1.NodeArtifact
}

// observe reads the nodes that match selector and owner's NodeArtifacts.
func (pl *placer) observe(ctx context.Context, owner client.Object, kind string, selector map[string]string) (nodeView, error) {
	var v nodeView
	nodes, ips, err := pl.nodes(ctx)
	if err != nil {
		return v, err
	}
	v.nodes, v.ips = nodes, ips
	v.labels = map[string]map[string]string{}
	sel := labels.SelectorFromSet(selector)
	for _, n := range nodes {
		if n.DeletionTimestamp == nil && sel.Matches(labels.Set(n.Labels)) {
			v.desired = append(v.desired, n.Name)
			v.labels[n.Name] = n.Labels
		}
	}
	slices.Sort(v.desired)
	v.existing, err = pl.owned(ctx, owner, kind)
	return v, err
}

// place makes the NodeArtifacts of p match the nodes and the digest.
func (pl *placer) place(ctx context.Context, p placement) (placeResult, error) {
	v, err := pl.observe(ctx, p.owner, p.kind, p.selector)
	if err != nil {
		return placeResult{}, err
	}
	return pl.apply(ctx, p, v)
}

// apply makes the NodeArtifacts of v match p. It changes v's NodeArtifacts:
// observe again before another apply.
func (pl *placer) apply(ctx context.Context, p placement, v nodeView) (placeResult, error) {
	var res placeResult
	nodes, desired, existing := v.nodes, v.desired, v.existing
	onDigest := 0
	for _, na := range existing {
		if na.Spec.Digest == p.digest {
			onDigest++
		}
	}
	plan := planRollout(desired, existing, p.digest, p.bounds())
	if p.maxCreates > 0 && len(plan.create) > p.maxCreates {
		plan.create, res.more = plan.create[:p.maxCreates], true
	}
	peers := pl.planPeers(p, v, plan)

	made, err := pl.createAll(ctx, p, plan.create, peers)
	for _, m := range made {
		switch {
		case m.conflict:
			res.conflicts = append(res.conflicts, m.na.Name)
		case m.na != nil:
			existing = append(existing, m.na)
			if m.created {
				res.created = append(res.created, m.na.Spec.NodeName)
			}
		}
	}
	if err != nil {
		return res, err
	}
	moving := map[*v1alpha1.NodeArtifact]bool{}
	for _, na := range plan.move {
		moving[na] = true
	}
	// Every NodeArtifact is set back to what the controller wants, whoever
	// changed it: the labels its puller lists it by, the directory, the
	// registry and the reference of its digest. Only the digest itself
	// moves by the rollout's rules, and its peers by the site's
	// (planPeers).
	for _, na := range existing {
		if na.DeletionTimestamp != nil {
			continue
		}
		before := na.DeepCopy()
		if moving[na] {
			na.Spec.Digest = p.digest
		}
		repaired := p.repair(na)
		repeered := setPeers(na, peers[na.Spec.NodeName])
		if !repaired && !repeered && !moving[na] {
			continue
		}
		if err := pl.client.Patch(ctx, na, client.MergeFrom(before)); err != nil {
			return res, fmt.Errorf("update NodeArtifact %s of node %s to %s: %w", na.Name, na.Spec.NodeName, p.digest, err)
		}
		pl.writes.wrote(p.owner.GetUID(), na)
		if repaired && !moving[na] {
			res.repaired = append(res.repaired, na.Name)
		}
	}
	for _, na := range plan.move {
		res.moved = append(res.moved, na.Spec.NodeName)
	}
	res.rolloutStarted = len(plan.move) > 0 && onDigest == 0
	for _, na := range plan.remove {
		if err := pl.delete(ctx, na, nodes); err != nil {
			return res, err
		}
		res.removed = append(res.removed, na.Spec.NodeName)
	}
	// A NodeArtifact already being deleted on a node that is gone would wait
	// forever for a puller that no longer exists.
	for _, na := range existing {
		if na.DeletionTimestamp != nil {
			if err := pl.releaseIfNodeGone(ctx, na, nodes); err != nil {
				return res, err
			}
		}
	}

	want := make(map[string]bool, len(desired))
	for _, n := range desired {
		want[n] = true
	}
	res.counts.Desired = int32(len(desired))
	res.desired = desired
	ready := map[string]bool{}
	for _, na := range existing {
		if na.DeletionTimestamp != nil || !want[na.Spec.NodeName] {
			continue
		}
		if holds(na, p.digest) && na.Spec.Digest == p.digest {
			res.counts.Ready++
			ready[na.Spec.NodeName] = true
		}
		if failedNow(na) {
			res.counts.Failed++
			res.failed = append(res.failed, nodeProblem{node: na.Spec.NodeName, message: na.Status.Message})
		}
	}
	for _, n := range desired {
		if !ready[n] {
			res.pending = append(res.pending, n)
		}
	}
	slices.SortFunc(res.failed, func(a, b nodeProblem) int { return strings.Compare(a.node, b.node) })
	return res, nil
}

// createWidth is how many NodeArtifacts one pass creates at once: a model
// on 1,000 nodes creates 1,000, and one at a time that is 1,000 round
// trips in a row before its status says anything.
const createWidth = 16

// made is the outcome of one create: the NodeArtifact created, or ours
// found under its name (mislabelled), or a conflict with another's.
type made struct {
	na       *v1alpha1.NodeArtifact
	created  bool
	conflict bool
}

// createAll creates the NodeArtifacts of nodes, createWidth at a time, and
// returns what became of each, in the order of nodes; on an error, those
// done before it.
func (pl *placer) createAll(ctx context.Context, p placement, nodes []string, peers map[string]peerWant) ([]made, error) {
	out := make([]made, len(nodes))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(createWidth)
	for i, node := range nodes {
		g.Go(func() error {
			m, err := pl.createOne(gctx, p, node, peers[node])
			out[i] = m
			return err
		})
	}
	err := g.Wait()
	return out, err
}

func (pl *placer) createOne(ctx context.Context, p placement, node string, peers peerWant) (made, error) {
	na, err := pl.newNodeArtifact(p, node, peers)
	if err != nil {
		return made{}, err
	}
	if err := pl.client.Create(ctx, na); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return made{}, fmt.Errorf("create NodeArtifact %s for node %s: %w", na.Name, node, err)
		}
		// Ours, with the labels that list it stripped, or another's.
		mislabelled, err := pl.ownedByName(ctx, p.owner, na.Name)
		if err != nil {
			return made{}, err
		}
		if mislabelled == nil {
			return made{na: na, conflict: true}, nil
		}
		return made{na: mislabelled}, nil
	}
	pl.writes.wrote(p.owner.GetUID(), na)
	return made{na: na, created: true}, nil
}

// remove deletes every NodeArtifact of owner and returns the nodes whose
// pullers have not yet removed theirs.
func (pl *placer) remove(ctx context.Context, owner client.Object, kind string) ([]string, error) {
	existing, err := pl.owned(ctx, owner, kind)
	if err != nil {
		return nil, err
	}
	if len(existing) == 0 {
		pl.writes.forget(owner.GetUID())
		return nil, nil
	}
	nodes, _, err := pl.nodes(ctx)
	if err != nil {
		return nil, err
	}
	var waiting []string
	for _, na := range existing {
		if err := pl.delete(ctx, na, nodes); err != nil {
			return nil, err
		}
		if nodeExists(na.Spec.NodeName, nodes) {
			waiting = append(waiting, na.Spec.NodeName)
		}
	}
	slices.Sort(waiting)
	return waiting, nil
}

// delete deletes a NodeArtifact; its puller removes the files and then the
// finalizer, or, when the node is gone, the controller removes the finalizer.
func (pl *placer) delete(ctx context.Context, na *v1alpha1.NodeArtifact, nodes []metav1.PartialObjectMetadata) error {
	if err := pl.releaseIfNodeGone(ctx, na, nodes); err != nil {
		return err
	}
	if na.DeletionTimestamp != nil {
		return nil
	}
	if err := pl.client.Delete(ctx, na); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete NodeArtifact %s of node %s: %w", na.Name, na.Spec.NodeName, err)
	}
	if ref := metav1.GetControllerOf(na); ref != nil {
		pl.writes.deleted(ref.UID, na.Name)
	}
	return nil
}

// releaseIfNodeGone removes the files finalizer of a NodeArtifact whose node
// does not exist, after asking the API server rather than trusting the cache.
func (pl *placer) releaseIfNodeGone(ctx context.Context, na *v1alpha1.NodeArtifact, nodes []metav1.PartialObjectMetadata) error {
	if !controllerutil.ContainsFinalizer(na, v1alpha1.FilesFinalizer) || nodeExists(na.Spec.NodeName, nodes) {
		return nil
	}
	node := &metav1.PartialObjectMetadata{}
	node.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	err := pl.reader.Get(ctx, client.ObjectKey{Name: na.Spec.NodeName}, node)
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("get node %s: %w", na.Spec.NodeName, err)
	}
	before := na.DeepCopy()
	controllerutil.RemoveFinalizer(na, v1alpha1.FilesFinalizer)
	if err := pl.client.Patch(ctx, na, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer %s of NodeArtifact %s (node %s is gone): %w", v1alpha1.FilesFinalizer, na.Name, na.Spec.NodeName, err)
	}
	if ref := metav1.GetControllerOf(na); ref != nil {
		// The last finalizer gone, the object is too.
		pl.writes.deleted(ref.UID, na.Name)
	}
	return nil
}

func nodeExists(name string, nodes []metav1.PartialObjectMetadata) bool {
	for i := range nodes {
		if nodes[i].Name == name {
			return true
		}
	}
	return false
}

// nodes lists the Nodes' metadata from the cache: labels are all placement
// needs, and metadata keeps the cache small on large clusters. With peers
// on, the cache holds slimmed Nodes instead (one informer either way), and
// their InternalIPs come back too.
func (pl *placer) nodes(ctx context.Context) ([]metav1.PartialObjectMetadata, map[string]string, error) {
	if pl.typedNodes {
		return pl.slimNodes(ctx)
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	if err := pl.client.List(ctx, list); err != nil {
		return nil, nil, fmt.Errorf("list nodes: %w", err)
	}
	return list.Items, nil, nil
}

// owned lists the NodeArtifacts owner controls: from the cache, by
// controllerIndex, once it shows every write of this controller for owner
// (writeLog), which takes milliseconds; should it take longer than
// cacheWait, from the API server.
func (pl *placer) owned(ctx context.Context, owner client.Object, kind string) ([]*v1alpha1.NodeArtifact, error) {
	list, err := pl.ownedCached(ctx, owner, kind)
	if err != nil {
		return nil, err
	}
	if list == nil {
		// Not older than the writes the cache has not shown: the API
		// server answers that from its own watch cache. A consistent read
		// would be answered from etcd whenever that cache lags too, as it
		// does under load, decoding every NodeArtifact of the cluster.
		opts := &client.ListOptions{Namespace: owner.GetNamespace(), LabelSelector: labels.SelectorFromSet(ownerLabels(kind, owner.GetName()))}
		if rv := pl.writes.newest(owner.GetUID()); rv != "" {
			opts.Raw = &metav1.ListOptions{ResourceVersion: rv, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan}
		}
		list = &v1alpha1.NodeArtifactList{}
		if err := pl.reader.List(ctx, list, opts); err != nil {
			return nil, fmt.Errorf("list NodeArtifacts of %s %s/%s: %w", kind, owner.GetNamespace(), owner.GetName(), err)
		}
	}
	var out []*v1alpha1.NodeArtifact
	for i := range list.Items {
		na := &list.Items[i]
		if ref := metav1.GetControllerOf(na); ref != nil && ref.UID == owner.GetUID() {
			out = append(out, na)
		}
	}
	return out, nil
}

// cacheWait is how long a pass waits for the cache to show the writes of
// the passes before it, before it lists from the API server instead.
const cacheWait = 10 * time.Second

// ownedCached lists owner's NodeArtifacts from the cache once it shows
// every write logged for owner, polling for up to cacheWait; nil when it
// did not.
func (pl *placer) ownedCached(ctx context.Context, owner client.Object, kind string) (*v1alpha1.NodeArtifactList, error) {
	deadline := time.Now().Add(cacheWait)
	poll := 20 * time.Millisecond // doubling: a cache seconds behind is not asked 50 times a second
	cached := func(name string) (*v1alpha1.NodeArtifact, error) {
		na := &v1alpha1.NodeArtifact{}
		err := pl.client.Get(ctx, client.ObjectKey{Namespace: owner.GetNamespace(), Name: name}, na)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("get NodeArtifact %s/%s from the cache: %w", owner.GetNamespace(), name, err)
		}
		if ref := metav1.GetControllerOf(na); ref == nil || ref.UID != owner.GetUID() {
			return nil, nil // another owner's: not in this owner's list
		}
		return na, nil
	}
	for {
		shown, err := pl.writes.shows(owner.GetUID(), cached)
		if err != nil {
			return nil, err
		}
		if shown {
			// The cache only moves forward: the list shows them too.
			list := &v1alpha1.NodeArtifactList{}
			if err := pl.client.List(ctx, list, client.InNamespace(owner.GetNamespace()), client.MatchingFields{controllerIndex: string(owner.GetUID())}); err != nil {
				return nil, fmt.Errorf("list NodeArtifacts of %s %s/%s from the cache: %w", kind, owner.GetNamespace(), owner.GetName(), err)
			}
			return list, nil
		}
		if time.Now().After(deadline) {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
			poll = min(2*poll, 320*time.Millisecond)
		}
	}
}

// ownedByName gets the NodeArtifact name if owner controls it, else nil.
func (pl *placer) ownedByName(ctx context.Context, owner client.Object, name string) (*v1alpha1.NodeArtifact, error) {
	na := &v1alpha1.NodeArtifact{}
	if err := pl.reader.Get(ctx, client.ObjectKey{Namespace: owner.GetNamespace(), Name: name}, na); err != nil {
		return nil, client.IgnoreNotFound(fmt.Errorf("get NodeArtifact %s: %w", name, err))
	}
	if ref := metav1.GetControllerOf(na); ref == nil || ref.UID != owner.GetUID() {
		return nil, nil
	}
	return na, nil
}

func (pl *placer) newNodeArtifact(p placement, node string, peers peerWant) (*v1alpha1.NodeArtifact, error) {
	na := &v1alpha1.NodeArtifact{
		ObjectMeta: metav1.ObjectMeta{
			Name:       nodeArtifactName(p.kind, p.owner.GetName(), node),
			Namespace:  p.owner.GetNamespace(),
			Finalizers: []string{v1alpha1.FilesFinalizer},
		},
		Spec: v1alpha1.NodeArtifactSpec{NodeName: node, Digest: p.digest},
	}
	p.repair(na)
	setPeers(na, peers)
	if err := controllerutil.SetControllerReference(p.owner, na, pl.scheme); err != nil {
		return nil, err
	}
	return na, nil
}

// repair sets what the controller decides of na, but for its digest and
// node: the labels by which the owner and the node's puller list it, the
// directory, the reference (the repository at na's own digest) and the
// registry's transport. It reports whether anything changed.
func (p placement) repair(na *v1alpha1.NodeArtifact) bool {
	changed := false
	set := func(field *string, want string) {
		if *field != want {
			*field, changed = want, true
		}
	}
	if na.Labels == nil {
		na.Labels = map[string]string{}
	}
	for k, v := range ownerLabels(p.kind, p.owner.GetName()) {
		if na.Labels[k] != v {
			na.Labels[k], changed = v, true
		}
	}
	if want := labelValue(na.Spec.NodeName); na.Labels[v1alpha1.NodeLabel] != want {
		na.Labels[v1alpha1.NodeLabel], changed = want, true
	}
	set(&na.Spec.ArtifactName, artifactName(p.kind, p.owner.GetName()))
	set(&na.Spec.Reference, p.repository+"@"+na.Spec.Digest)
	if na.Spec.Insecure != p.insecure {
		na.Spec.Insecure, changed = p.insecure, true
	}
	if !equality.Semantic.DeepEqual(na.Spec.Upload, p.upload) {
		na.Spec.Upload, changed = p.upload.DeepCopy(), true
	}
	// The verify policy goes with the digest it was checked for: a node
	// still on an older digest keeps the policy that admitted it.
	if na.Spec.Digest == p.digest && !equality.Semantic.DeepEqual(na.Spec.Verify, p.verify) {
		na.Spec.Verify, changed = p.verify.DeepCopy(), true
	}
	return changed
}

// edgeOutcome says how far a placement got, in the terms of conditions.
func edgeOutcome(resolved *v1alpha1.ResolvedArtifact, res placeResult) outcome {
	v := versionText(resolved)
	c := res.counts
	switch {
	case len(res.failed) > 0:
		f := res.failed[0]
		return outcome{progressReason: ReasonNodeFailed, progressMessage: fmt.Sprintf("%d of %d nodes failed to pull %s; %s: %s", c.Failed, c.Desired, v, f.node, f.message)}
	case len(res.pending) > 0:
		return outcome{progressReason: ReasonRollingOut, progressMessage: fmt.Sprintf("%d of %d nodes hold %s; waiting for %s", c.Ready, c.Desired, v, listNodes(res.pending))}
	case c.Desired == 0:
		return outcome{readyMessage: fmt.Sprintf("%s resolved; no node matches spec.nodeSelector", v)}
	}
	return outcome{readyMessage: fmt.Sprintf("%s on %d of %d nodes", v, c.Ready, c.Desired)}
}

// conflictFailure reports NodeArtifact names another object holds.
func conflictFailure(res placeResult) error {
	if len(res.conflicts) == 0 {
		return nil
	}
	return retryf(ReasonNodeConflict, nil, "NodeArtifact %s already exists and belongs to another object: delete it, or rename this one", strings.Join(res.conflicts, ", "))
}

func listNodes(nodes []string) string {
	if len(nodes) > 5 {
		return strings.Join(nodes[:5], ", ") + fmt.Sprintf(" and %d more", len(nodes)-5)
	}
	return strings.Join(nodes, ", ")
}
