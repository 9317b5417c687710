package netfault

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1 "github.com/bargeml/barge/api/v1alpha1"
)

// TestCollectedDataset: a dataset collected on one node goes up once and
// reaches the site's other nodes from that node. The node pushes it with
// barge push --store (its puller's store), it is labelled barge.dev/seed,
// and a Dataset selects the site: the registry sends the site almost
// nothing (manifests), the other nodes fetch the dataset from their peers.
func TestCollectedDataset(t *testing.T) {
	requireNet(t)
	t.Parallel()
	const size = 16 * MiB
	s := takeSite(t, fast)
	collector := s.nodes[len(s.nodes)/2] // not the first by name: the label must make it the seed
	ns := env.Namespace(t)

	dir := t.TempDir()
	for i := range 16 {
		class := []string{"cat", "dog"}[i%2]
		b := make([]byte, size/16)
		rand.Read(b)
		p := filepath.Join(dir, "train", class, fmt.Sprintf("%02d.jpg", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Labelled first: the controller's cache has the label long before
	// the Dataset exists.
	label(t, collector.name, bargev1.SeedLabel, "true")
	up0 := s.wire.Up.Fresh(collector.addr, registryAddr)
	repo := registry + "/netfault/" + ns
	var out, errb bytes.Buffer
	push := exec.Command("ip", "netns", "exec", collector.name, filepath.Join(bins, "barge"), "push", "--plain-http",
		"--kind", "dataset", "--store", filepath.Join(collector.root, "store"), dir, repo+":1")
	push.Stdout, push.Stderr = &out, &errb
	push.Env = append(os.Environ(), "BARGE_CACHE="+filepath.Join(t.TempDir(), "cache"), "HOME="+t.TempDir())
	if err := push.Run(); err != nil {
		t.Fatalf("barge push on %s: %v\n%s", collector.name, err, errb.String())
	}
	m := &model{ns: ns, name: "collected", repo: repo, size: size, digest: strings.TrimSpace(out.String())}
	if up := s.wire.Up.Fresh(collector.addr, registryAddr) - up0; up < size || up > size*11/10 {
		t.Errorf("the push sent %.1f MiB up the uplink for a %d MiB dataset, want it once", float64(up)/MiB, size/MiB)
	}

	reg0 := s.egress(registryAddr, netip.Addr{})
	ds := &bargev1.Dataset{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: m.name},
		Spec:       bargev1.DatasetSpec{Artifact: repo, TargetVersion: "1", Insecure: true, NodeSelector: map[string]string{zoneLabel: s.zone}},
	}
	ctx := context.Background()
	if err := env.Client.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Client.Delete(ctx, ds) })
	_, nas := waitReady(t, m, s.nodes, readyTimeout(fast, size, true))

	// Manifests and configs only: the dataset's bytes came from the node
	// that collected it.
	if down := s.egress(registryAddr, netip.Addr{}) - reg0; down > size/20 {
		t.Errorf("the registry sent the site %.2f MiB of a %d MiB dataset that one of its nodes collected, want manifests only", float64(down)/MiB, size/MiB)
	}
	if src := nas[collector.name].Status.Sources; src != nil && src.Origin+src.Peers > size/20 {
		t.Errorf("the collecting node fetched %+v bytes of its own dataset", *src)
	}
	for _, n := range s.nodes {
		if n == collector {
			continue
		}
		na := nas[n.name]
		if len(na.Spec.Peers) == 0 || na.Spec.Peers[0].Node != collector.name {
			t.Errorf("%s's peers are %v, want %s first (labelled %s)", n.name, na.Spec.Peers, collector.name, bargev1.SeedLabel)
		}
		if src := na.Status.Sources; src == nil || src.Peers < size {
			t.Errorf("%s fetched %+v, want the dataset from its peers", n.name, src)
		}
	}
	t.Logf("pushed up once; the registry sent the site %.2f MiB during the rollout of a %d MiB dataset", float64(s.egress(registryAddr, netip.Addr{})-reg0)/MiB, size/MiB)
}

// label sets a label on a Node until t ends.
func label(t *testing.T, node, key, value string) {
	t.Helper()
	set := func(v *string) {
		ctx := context.Background()
		var n corev1.Node
		if err := env.Client.Get(ctx, client.ObjectKey{Name: node}, &n); err != nil {
			t.Errorf("get Node %s: %v", node, err)
			return
		}
		patch := client.MergeFrom(n.DeepCopy())
		if v == nil {
			delete(n.Labels, key)
		} else {
			n.Labels[key] = *v
		}
		if err := env.Client.Patch(ctx, &n, patch); err != nil {
			t.Errorf("label Node %s: %v", node, err)
		}
	}
	set(&value)
	t.Cleanup(func() { set(nil) })
}
