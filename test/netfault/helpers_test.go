package netfault

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1 "github.com/bargeml/barge/api/v1alpha1"
)

// profile is an uplink's shape, the same both ways.
type profile struct {
	short string // a subtest's name
	name  string
	rate  int64 // bits per second
	delay time.Duration
	loss  float64
}

var (
	fast  = profile{"20mbit", "20 Mbit/s, 50 ms RTT", 20_000_000, 25 * time.Millisecond, 0}
	lossy = profile{"2mbit-loss", "2 Mbit/s, 50 ms RTT, 2% loss each way", 2_000_000, 25 * time.Millisecond, 0.02}
)

const MiB = 1 << 20

// freeSites hands each site to one test at a time.
var freeSites = sync.OnceValue(func() chan *site {
	c := make(chan *site, len(sites))
	for _, s := range sites {
		c <- s
	}
	return c
})

// takeSite waits for a site no other test uses, shapes its uplink, and
// gives it back when t ends.
func takeSite(t *testing.T, p profile) *site {
	t.Helper()
	var s *site
	select {
	case s = <-freeSites():
	case <-time.After(15 * time.Minute):
		t.Fatal("no site became free within 15 minutes")
	}
	s.shape(p)
	t.Logf("site %s, uplink %s", s.zone, p.name)
	t.Cleanup(func() {
		for _, n := range s.nodes {
			if p := n.puller(); p == nil || !p.running() {
				n.start(bins) // a test that stopped one and failed
			}
		}
		s.shape(profile{})
		freeSites() <- s
	})
	return s
}

// model is a pushed artifact of one random file.
type model struct {
	ns, name string
	repo     string
	digest   string
	size     int64
	sum      string // sha256 of weights.bin
	data     []byte
}

// pushModel pushes a fresh model of size random bytes, so that no store
// holds any of it yet.
func pushModel(t *testing.T, ns string, size int64) *model {
	t.Helper()
	m := &model{ns: ns, name: "m", repo: registry + "/netfault/" + ns, size: size, data: make([]byte, size)}
	rand.Read(m.data)
	h := sha256.Sum256(m.data)
	m.sum = hex.EncodeToString(h[:])
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "weights.bin"), m.data, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(filepath.Join(bins, "barge"), "push", "--plain-http", dir, m.repo+":1")
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "BARGE_CACHE="+filepath.Join(work, "cli-cache"), "DOCKER_CONFIG="+filepath.Join(work, "docker"))
	if err := cmd.Run(); err != nil {
		t.Fatalf("barge push: %v\n%s", err, errb.String())
	}
	for _, f := range strings.Fields(out.String()) {
		if strings.HasPrefix(f, "sha256:") {
			m.digest = f
		}
	}
	if m.digest == "" {
		t.Fatalf("barge push printed no digest:\n%s", out.String())
	}
	return m
}

// deploy creates an InferenceModel for m on every node of s at once, and
// deletes it when t ends, waiting for its NodeArtifacts to go so that the
// pullers free their disks.
func deploy(t *testing.T, s *site, m *model) {
	t.Helper()
	ctx := context.Background()
	im := &bargev1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: m.ns, Name: m.name},
		Spec: bargev1.InferenceModelSpec{
			Artifact: m.repo, TargetVersion: "1", Insecure: true,
			NodeSelector: map[string]string{zoneLabel: s.zone},
			Rollout:      bargev1.RolloutSpec{MaxConcurrentNodes: nodesPerSite + 1},
		},
	}
	if err := env.Client.Create(ctx, im); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Client.Delete(ctx, im); err != nil {
			t.Errorf("delete the model: %v", err)
			return
		}
		deadline := time.Now().Add(2 * time.Minute)
		for nas := nodeArtifacts(t, m.ns); len(nas) > 0 && time.Now().Before(deadline); nas = nodeArtifacts(t, m.ns) {
			for node, na := range nas {
				if _, ok := scripted.Load(node); ok && len(na.Finalizers) > 0 {
					// No puller runs there to release its files.
					na.Finalizers = nil
					env.Client.Update(ctx, &na)
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}

// scripted holds the names of nodes where no puller runs (the liar's):
// their NodeArtifacts' finalizers are the test's to remove.
var scripted sync.Map

func nodeArtifacts(t *testing.T, ns string) map[string]bargev1.NodeArtifact {
	t.Helper()
	var list bargev1.NodeArtifactList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]bargev1.NodeArtifact{}
	for _, na := range list.Items {
		out[na.Spec.NodeName] = na
	}
	return out
}

// waitReady waits until every one of nodes reports m Ready, and returns
// when the last did (as first seen by polling) and their NodeArtifacts.
func waitReady(t *testing.T, m *model, nodes []*edgeNode, timeout time.Duration) (time.Time, map[string]bargev1.NodeArtifact) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last time.Time
	ready := map[string]bool{}
	for {
		nas := nodeArtifacts(t, m.ns)
		for _, n := range nodes {
			if na, ok := nas[n.name]; ok && !ready[n.name] && na.Status.Phase == bargev1.NodeArtifactReady && na.Status.Digest == m.digest {
				ready[n.name], last = true, time.Now()
			}
		}
		if len(ready) == len(nodes) {
			return last, nas
		}
		if time.Now().After(deadline) {
			var missing []string
			for _, n := range nodes {
				if !ready[n.name] {
					na := nas[n.name]
					missing = append(missing, fmt.Sprintf("%s (%s %s)", n.name, na.Status.Phase, na.Status.Message))
				}
			}
			t.Fatalf("after %s, %d of %d nodes report %s Ready; not: %s", timeout, len(ready), len(nodes), m.digest, strings.Join(missing, ", "))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// holds reports whether n's disk has m's file, whole, where a workload
// finds it.
func holds(n *edgeNode, m *model) bool {
	f, err := os.Open(filepath.Join(n.root, "artifacts", m.ns, "model-"+m.name, "current", "weights.bin"))
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != m.size {
		return false
	}
	h := sha256.New()
	if k, err := io.Copy(h, f); err != nil || k != m.size {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == m.sum
}

func checkHolds(t *testing.T, m *model, nodes []*edgeNode) {
	t.Helper()
	for _, n := range nodes {
		if !holds(n, m) {
			t.Errorf("%s does not hold the model's %d bytes intact", n.name, m.size)
		}
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// figure is one measured run, for docs/benchmarks.md.
type figure struct {
	Scenario  string        `json:"scenario"`
	Profile   string        `json:"profile"`
	Peers     bool          `json:"peers"`
	Nodes     int           `json:"nodes"`
	Model     int64         `json:"model"`
	Egress    int64         `json:"egress"` // each byte once
	Wire      int64         `json:"wire"`   // with TCP's resends
	APIEgress int64         `json:"apiEgress"`
	ToReady   time.Duration `json:"toReady"`
	Origin    int64         `json:"origin"` // by the nodes' own count
	FromPeers int64         `json:"fromPeers"`
	Lost      int64         `json:"lost,omitempty"` // a killed seed's partial
}

var (
	figuresMu sync.Mutex
	figures   []figure
)

func record(t *testing.T, f figure) {
	t.Logf("%s on %s, peers %v: registry egress %.1f MiB (%.2fx the model of %d MiB, %d nodes; %.2fx with TCP resends), API egress %.1f MiB, all Ready after %s; nodes count %.1f MiB from the origin, %.1f MiB from peers",
		f.Scenario, f.Profile, f.Peers, float64(f.Egress)/MiB, float64(f.Egress)/float64(f.Model), f.Model/MiB, f.Nodes, float64(f.Wire)/float64(f.Model),
		float64(f.APIEgress)/MiB, f.ToReady.Round(100*time.Millisecond), float64(f.Origin)/MiB, float64(f.FromPeers)/MiB)
	figuresMu.Lock()
	figures = append(figures, f)
	figuresMu.Unlock()
}

// writeFigures writes the figures as JSON where BARGE_NETFAULT_FIGURES
// says (test/bench/netfault reads them).
func writeFigures() error {
	path := os.Getenv("BARGE_NETFAULT_FIGURES")
	if path == "" {
		return nil
	}
	figuresMu.Lock()
	defer figuresMu.Unlock()
	b, err := json.MarshalIndent(figures, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// sources sums the nodes' own count of bytes by source.
func sources(nas map[string]bargev1.NodeArtifact, nodes []*edgeNode) (origin, peers int64) {
	for _, n := range nodes {
		if s := nas[n.name].Status.Sources; s != nil {
			origin += s.Origin
			peers += s.Peers
		}
	}
	return origin, peers
}

// fanOut deploys a fresh model of size bytes to every node of s and
// measures it.
func fanOut(t *testing.T, s *site, p profile, scenario string, size int64, peers bool) figure {
	t.Helper()
	ns := env.Namespace(t)
	m := pushModel(t, ns, size)
	reg0, api0, wire0 := s.egress(registryAddr, netip.Addr{}), s.egress(apiAddr, netip.Addr{}), s.onWire(registryAddr)
	start := time.Now()
	deploy(t, s, m)
	last, nas := waitReady(t, m, s.nodes, readyTimeout(p, size, peers))
	checkHolds(t, m, s.nodes)
	origin, fromPeers := sources(nas, s.nodes)
	f := figure{Scenario: scenario, Profile: p.name, Peers: peers, Nodes: len(s.nodes), Model: size,
		Egress: s.egress(registryAddr, netip.Addr{}) - reg0, APIEgress: s.egress(apiAddr, netip.Addr{}) - api0, Wire: s.onWire(registryAddr) - wire0,
		ToReady: last.Sub(start), Origin: origin, FromPeers: fromPeers}
	record(t, f)
	return f
}

// readyTimeout allows three times what the uplink needs to carry the
// model once (with peers) or once per node, plus a minute.
func readyTimeout(p profile, size int64, peers bool) time.Duration {
	copies := int64(1)
	if !peers {
		copies = nodesPerSite
	}
	rate := p.rate
	if rate == 0 {
		rate = 1e9
	}
	return uplinkTime(3*copies*size, rate) + time.Minute
}

// uplinkTime is how long n bytes take at rate bits per second.
func uplinkTime(n, rate int64) time.Duration {
	return time.Duration(float64(n) * 8 / float64(rate) * float64(time.Second))
}

func deleteNode(t *testing.T, name string) {
	t.Helper()
	node := &corev1.Node{}
	node.Name = name
	if err := env.Client.Delete(context.Background(), node); client.IgnoreNotFound(err) != nil {
		t.Errorf("delete Node %s: %v", name, err)
	}
}
