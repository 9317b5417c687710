package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// useSites runs the suite's controller with other site flags for one test.
func useSites(t *testing.T, edit func(*sitePolicy)) {
	t.Helper()
	before := *sites.sites.Load()
	pol := before
	edit(&pol)
	sites.sites.Store(&pol)
	t.Cleanup(func() { sites.sites.Store(&before) })
}

// siteNodes creates count nodes of zone (none when empty), each with the
// InternalIP prefix.<i>, and returns them sorted by name: the site's order
// while none is Ready.
func siteNodes(t *testing.T, ns, zone, prefix string, count int) []string {
	t.Helper()
	var labels map[string]string
	if zone != "" {
		labels = map[string]string{DefaultSiteLabel: zone}
	}
	names := nodes(t, ns, labels, count)
	for i, name := range names {
		setInternalIP(t, name, fmt.Sprintf("%s.%d", prefix, i+1))
	}
	slices.Sort(names)
	return names
}

// setInternalIP is the kubelet reporting a node's address.
func setInternalIP(t *testing.T, node, ip string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	get(t, n)
	before := n.DeepCopy()
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: node}, {Type: corev1.NodeInternalIP, Address: ip}}
	if err := k8s.Status().Patch(context.Background(), n, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

func nodeIP(t *testing.T, node string) string {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	get(t, n)
	return internalIP(n)
}

// wantPeers is what spec.peers of each node should be: the nodes, in
// order, at their InternalIPs and the suite's peer port.
type wantPeers map[string][]string

// check compares the NodeArtifacts with w: every node of w has one, on
// digest, listing exactly w's peers.
func (w wantPeers) check(t *testing.T, nas map[string]*v1alpha1.NodeArtifact, digest string) error {
	for node, peers := range w {
		na := nas[node]
		if na == nil || na.Spec.Digest != digest {
			return fmt.Errorf("%s: no NodeArtifact on %s", node, digest)
		}
		var want []v1alpha1.Peer
		for _, p := range peers {
			want = append(want, v1alpha1.Peer{Node: p, Address: fmt.Sprintf("%s:%d", nodeIP(t, p), testPeerPort)})
		}
		if !slices.Equal(na.Spec.Peers, want) {
			return fmt.Errorf("%s lists %v, want %v", node, na.Spec.Peers, want)
		}
	}
	return nil
}

// sitesCluster is a model on a site of four nodes, a site of two,
// and a node without the site label.
type sitesCluster struct {
	ns     string
	a, b   []string
	lone   string
	model  *v1alpha1.InferenceModel
	digest string
}

func newSitesCluster(t *testing.T) *sitesCluster {
	t.Helper()
	c := &sitesCluster{ns: env.Namespace(t)}
	ref := repoName(t, "m")
	c.digest = pushModel(t, openRepo(t, ref), "1.0", map[string]string{"m.onnx": "weights"}, artifact.Metadata{}).Digest.String()
	c.a = siteNodes(t, c.ns, "shop-a", "10.1.0", 4)
	c.b = siteNodes(t, c.ns, "shop-b", "10.2.0", 2)
	c.lone = siteNodes(t, c.ns, "", "10.3.0", 1)[0]
	c.model = edgeModel(c.ns, "m", ref, "1.0")
	c.model.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	return c
}

func (c *sitesCluster) waitPeers(t *testing.T, what string, want wantPeers) map[string]*v1alpha1.NodeArtifact {
	t.Helper()
	return waitNodeArtifacts(t, c.ns, what, func(nas map[string]*v1alpha1.NodeArtifact) error {
		return want.check(t, nas, c.digest)
	})
}

// TestSitePeers: each site's first node fetches from the origin and the
// others list it first, then the nodes ahead of them, at their
// InternalIPs; no node lists one of another site, and a node without the
// site label lists none. The lists stay when another node's status
// changes, follow a peer's new address, and drop a peer whose node is
// deleted.
func TestSitePeers(t *testing.T) {
	c := newSitesCluster(t)
	a, b := c.a, c.b
	create(t, c.model)
	nas := c.waitPeers(t, "peers by site", wantPeers{
		a[0]: nil, a[1]: {a[0]}, a[2]: {a[0], a[1]}, a[3]: {a[0], a[1], a[2]},
		b[0]: nil, b[1]: {b[0]},
		c.lone: nil,
	})

	// The last node of site a is Ready first: it would be the site's
	// first now, but the lists are kept, as a change restarts a pull.
	generations := map[string]int64{}
	for node, na := range nas {
		generations[node] = na.Generation
	}
	puller(t, nas[a[3]], v1alpha1.NodeArtifactReady, c.digest, "")
	eventually(t, "the model counts the Ready node", func() error {
		get(t, c.model)
		if c.model.Status.Nodes.Ready != 1 {
			return fmt.Errorf("nodes %+v", c.model.Status.Nodes)
		}
		return nil
	})
	for node, na := range nodeArtifacts(t, c.ns) {
		if na.Generation != generations[node] {
			t.Errorf("%s: spec rewritten (generation %d, was %d) after another node became Ready: peers %v", node, na.Generation, generations[node], na.Spec.Peers)
		}
	}

	// a[1] gets another address: the lists that name it follow.
	setInternalIP(t, a[1], "10.1.9.9")
	c.waitPeers(t, "a[1] at its new address", wantPeers{a[2]: {a[0], a[1]}, a[3]: {a[0], a[1], a[2]}})

	// The seed's node is deleted: nobody lists it; the site's order is
	// decided again, the Ready node first.
	if err := k8s.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a[0]}}); err != nil {
		t.Fatal(err)
	}
	c.waitPeers(t, "the deleted node dropped", wantPeers{
		a[1]: {a[3]}, a[2]: {a[3], a[1]}, a[3]: nil,
		b[0]: nil, b[1]: {b[0]},
	})
	for node, na := range nodeArtifacts(t, c.ns) {
		for _, p := range na.Spec.Peers {
			if p.Node == a[0] {
				t.Errorf("%s still lists the deleted node %s", node, a[0])
			}
		}
	}
}

// TestSitePeersSeeds: with --seeds-per-site 2 the first two nodes of a site
// fetch from the origin, and the followers start at alternate seeds.
func TestSitePeersSeeds(t *testing.T) {
	useSites(t, func(p *sitePolicy) { p.seeds = 2 })
	c := newSitesCluster(t)
	a, b := c.a, c.b
	create(t, c.model)
	c.waitPeers(t, "two seeds per site", wantPeers{
		a[0]: nil, a[1]: nil, a[2]: {a[0], a[1]}, a[3]: {a[1], a[0], a[2]},
		b[0]: nil, b[1]: nil,
		c.lone: nil,
	})
}

// TestSitePeersOff: with --peer-port 0 NodeArtifacts list no peers, and a
// controller restarted so takes away the peers it had listed.
func TestSitePeersOff(t *testing.T) {
	c := newSitesCluster(t)
	a := c.a
	create(t, c.model)
	c.waitPeers(t, "peers while on", wantPeers{a[1]: {a[0]}})

	useSites(t, func(p *sitePolicy) { p.port = 0 })
	// Any event wakes the model; a restarted controller passes over every
	// object at start.
	labelNode(t, a[0], "barge-test-touch", "1")
	nas := waitNodeArtifacts(t, c.ns, "no peers", func(nas map[string]*v1alpha1.NodeArtifact) error {
		var listing []string
		for node, na := range nas {
			if len(na.Spec.Peers) > 0 {
				listing = append(listing, node)
			}
		}
		if len(listing) > 0 {
			return fmt.Errorf("%s still list peers", strings.Join(listing, ", "))
		}
		return nil
	})
	if len(nas) != 7 {
		t.Errorf("%d NodeArtifacts, want 7", len(nas))
	}
}
