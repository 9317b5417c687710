package controllers

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/builder"

	"github.com/bargeml/barge/api/v1alpha1"
)

// Sites: the nodes of one site (the same value of the site label) fetch a
// digest from each other, so the site's uplink carries it about once.
//
// Among the nodes of a site whose NodeArtifact of one owner is on digest D,
// the site's order puts those that hold D Ready first, then those labelled
// barge.dev/seed=true, then the rest by name. The first seeds nodes fetch from the origin; every other node lists
// the seeds (follower k starting at seed k mod seeds, to spread the load),
// then the other nodes ahead of it. When a seed dies its followers fall
// through to the first live node ahead of them, which has nobody live ahead
// and so fetches from the origin: a takeover without a coordinator.
//
// A list is decided when its NodeArtifact gets D and then kept, because a
// change restarts that node's pull; it is decided again only when a node it
// names is gone, moved to another site, lost its address, or no longer has
// D. A peer whose address changed keeps its place, at the new address.

// DefaultSiteLabel is the Node label that names a node's site unless
// Options.SiteLabel says otherwise.
const DefaultSiteLabel = "topology.kubernetes.io/zone"

// sitePolicy is how the controller lists peers.
type sitePolicy struct {
	// label whose value names a node's site; a node without it is a site
	// of its own, with no peers.
	label string
	// port of the pullers' peer servers; 0 turns peers off.
	port int
	// seeds are the nodes of a site that fetch from the origin.
	seeds int
	// max peers listed on one NodeArtifact.
	max int
}

func (o Options) sitePolicy() sitePolicy {
	return sitePolicy{label: o.SiteLabel, port: o.PeerPort, seeds: o.SeedsPerSite, max: o.MaxPeers}
}

// siteNode is what peers need of a Node.
type siteNode struct {
	site string
	// address is host:port of its puller's peer server, empty when the
	// Node has no InternalIP.
	address string
	// seed: the Node carries v1alpha1.SeedLabel=true.
	seed bool
}

// siteNodes reads each node's site and peer address.
func (pol sitePolicy) siteNodes(nodes []metav1.PartialObjectMetadata, ips map[string]string) map[string]siteNode {
	out := make(map[string]siteNode, len(nodes))
	for _, n := range nodes {
		if n.DeletionTimestamp != nil {
			continue
		}
		sn := siteNode{site: n.Labels[pol.label], seed: n.Labels[v1alpha1.SeedLabel] == "true"}
		if ip := ips[n.Name]; ip != "" {
			sn.address = net.JoinHostPort(ip, strconv.Itoa(pol.port))
		}
		out[n.Name] = sn
	}
	return out
}

// internalIP is the Node's first InternalIP address, or "".
func internalIP(obj any) string {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return ""
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && a.Address != "" {
			return a.Address
		}
	}
	return ""
}

// readdress is peers at their nodes' addresses now: a node that got
// another InternalIP keeps its place in the lists that name it.
func readdress(peers []v1alpha1.Peer, nodes map[string]siteNode) []v1alpha1.Peer {
	out := slices.Clone(peers)
	for i := range out {
		out[i].Address = nodes[out[i].Node].address
	}
	return out
}

// peerMember is one NodeArtifact as it stands after a placement pass.
type peerMember struct {
	node   string
	digest string
	// ready: its puller holds digest Ready.
	ready bool
	// fresh: this pass sets its digest (a new NodeArtifact, or a move), so
	// its peers are decided anew.
	fresh bool
	// peers are its spec.peers now.
	peers []v1alpha1.Peer
}

// planPeers says the spec.peers each member should have: its current list
// when that is still valid, else a new one. With peers off, none.
func (pol sitePolicy) planPeers(members []peerMember, nodes map[string]siteNode) map[string][]v1alpha1.Peer {
	out := make(map[string][]v1alpha1.Peer, len(members))
	if pol.port <= 0 {
		return out
	}
	orders := pol.siteOrders(members, nodes)
	onDigest := map[string]string{}
	for _, m := range members {
		onDigest[m.node] = m.digest
	}
	for _, m := range members {
		if !m.fresh && pol.stillValid(m, nodes, onDigest) {
			out[m.node] = readdress(m.peers, nodes)
			continue
		}
		out[m.node] = pol.peersOf(m, nodes, orders)
	}
	return out
}

// siteKey is one digest in one site.
type siteKey struct{ site, digest string }

// siteOrders are the nodes that may serve each digest in each site, in the
// site's order: Ready first, then labelled seeds, then by name. A node without an address
// cannot serve, so it is in no order.
func (pol sitePolicy) siteOrders(members []peerMember, nodes map[string]siteNode) map[siteKey][]peerMember {
	orders := map[siteKey][]peerMember{}
	for _, m := range members {
		sn, ok := nodes[m.node]
		if !ok || sn.site == "" || sn.address == "" {
			continue
		}
		k := siteKey{sn.site, m.digest}
		orders[k] = append(orders[k], m)
	}
	for _, o := range orders {
		slices.SortFunc(o, func(a, b peerMember) int {
			if a.ready != b.ready {
				if a.ready {
					return -1
				}
				return 1
			}
			if sa, sb := nodes[a.node].seed, nodes[b.node].seed; sa != sb {
				if sa {
					return -1
				}
				return 1
			}
			return cmp.Compare(a.node, b.node)
		})
	}
	return orders
}

// peersOf decides m's peers from its site's order: none for a seed; for a
// follower the seeds, starting at seed k mod seeds for the k-th follower,
// then the followers ahead of it, at most pol.max. A node that cannot serve
// follows behind the whole order.
func (pol sitePolicy) peersOf(m peerMember, nodes map[string]siteNode, orders map[siteKey][]peerMember) []v1alpha1.Peer {
	sn, ok := nodes[m.node]
	if !ok || sn.site == "" {
		return nil
	}
	order := orders[siteKey{sn.site, m.digest}]
	pos := slices.IndexFunc(order, func(o peerMember) bool { return o.node == m.node })
	if pos < 0 {
		pos = len(order)
	}
	seeds := min(max(pol.seeds, 1), len(order))
	if pos < seeds {
		return nil
	}
	k := pos - seeds
	var out []v1alpha1.Peer
	add := func(o peerMember) {
		if len(out) < min(max(pol.max, 1), v1alpha1.MaxPeers) {
			out = append(out, v1alpha1.Peer{Node: o.node, Address: nodes[o.node].address})
		}
	}
	for i := range seeds {
		add(order[(k+i)%seeds])
	}
	for _, o := range order[seeds:pos] {
		add(o)
	}
	return out
}

// stillValid: every peer m lists is another node of m's site that is on
// m's digest and has an address, and the list is within pol.max.
func (pol sitePolicy) stillValid(m peerMember, nodes map[string]siteNode, onDigest map[string]string) bool {
	if len(m.peers) == 0 {
		return true
	}
	self, ok := nodes[m.node]
	if !ok || self.site == "" || len(m.peers) > min(max(pol.max, 1), v1alpha1.MaxPeers) {
		return false
	}
	for _, p := range m.peers {
		sn, ok := nodes[p.Node]
		if !ok || p.Node == m.node || sn.site != self.site || sn.address == "" || onDigest[p.Node] != m.digest {
			return false
		}
	}
	return true
}

// slimNode is the cache's transform of Nodes: with peers on the cache holds
// Nodes rather than their metadata, and keeps of each only what placement
// and peers read (name, labels, deletion, InternalIPs), so that it stays as
// small as the metadata it replaces. Nothing may read a Node's status or
// spec from the cache: the conditions are read uncached (nodeNotReady).
func slimNode(obj any) (any, error) {
	switch n := obj.(type) {
	case *corev1.Node:
		slim := &corev1.Node{TypeMeta: n.TypeMeta, ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Generation: n.Generation,
			CreationTimestamp: n.CreationTimestamp, DeletionTimestamp: n.DeletionTimestamp, Labels: n.Labels,
		}}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				slim.Status.Addresses = append(slim.Status.Addresses, a)
			}
		}
		return slim, nil
	case *metav1.PartialObjectMetadata:
		n.ManagedFields = nil
		return n, nil
	}
	return obj, nil
}

// slimNodes lists the cached Nodes as metadata, and their InternalIPs.
func (pl *placer) slimNodes(ctx context.Context) ([]metav1.PartialObjectMetadata, map[string]string, error) {
	var list corev1.NodeList
	if err := pl.client.List(ctx, &list); err != nil {
		return nil, nil, fmt.Errorf("list nodes: %w", err)
	}
	items := make([]metav1.PartialObjectMetadata, len(list.Items))
	ips := make(map[string]string, len(list.Items))
	for i := range list.Items {
		n := &list.Items[i]
		items[i] = metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}, ObjectMeta: n.ObjectMeta}
		if ip := internalIP(n); ip != "" {
			ips[n.Name] = ip
		}
	}
	return items, ips, nil
}

// nodeWatch is how the controllers watch Nodes: as metadata, or, with
// peers on, as slimmed Nodes, whose addresses go into spec.peers.
func nodeWatch(opts Options) []builder.WatchesOption {
	out := []builder.WatchesOption{builder.WithPredicates(nodeChanges())}
	if opts.PeerPort <= 0 {
		out = append(out, builder.OnlyMetadata)
	}
	return out
}

// peerWant is the spec.peers a NodeArtifact on digest should have.
type peerWant struct {
	digest string
	peers  []v1alpha1.Peer
}

// planPeers decides the peers of every NodeArtifact of v as it stands once
// plan is carried out: those it creates or moves to p.digest, and the
// others, whose lists are kept unless no longer valid.
func (pl *placer) planPeers(p placement, v nodeView, plan rolloutPlan) map[string]peerWant {
	pol := sitePolicy{}
	if sp := pl.sites.Load(); sp != nil {
		pol = *sp
	}
	moving := map[string]bool{}
	for _, na := range plan.move {
		moving[na.Name] = true
	}
	leaving := map[string]bool{}
	for _, na := range plan.remove {
		leaving[na.Name] = true
	}
	var members []peerMember
	for _, na := range v.existing {
		if na.DeletionTimestamp != nil || leaving[na.Name] {
			continue
		}
		m := peerMember{node: na.Spec.NodeName, digest: na.Spec.Digest, peers: na.Spec.Peers}
		if moving[na.Name] {
			m.digest, m.fresh = p.digest, true
		}
		m.ready = holds(na, m.digest)
		members = append(members, m)
	}
	for _, node := range plan.create {
		members = append(members, peerMember{node: node, digest: p.digest, fresh: true})
	}
	peers := pol.planPeers(members, pol.siteNodes(v.nodes, v.ips))
	out := make(map[string]peerWant, len(members))
	for _, m := range members {
		out[m.node] = peerWant{digest: m.digest, peers: peers[m.node]}
	}
	return out
}

// setPeers gives na the peers w decides for its digest, and reports
// whether they changed.
func setPeers(na *v1alpha1.NodeArtifact, w peerWant) bool {
	if na.Spec.Digest != w.digest || slices.Equal(na.Spec.Peers, w.peers) {
		return false
	}
	na.Spec.Peers = slices.Clone(w.peers)
	return true
}
