package netfault

import (
	"net/netip"
	"testing"
	"time"
)

// TestFanOut: a model reaches the ten nodes of a site while the registry
// sends it over the uplink once, on both profiles, well before the uplink
// could have carried it once per node.
func TestFanOut(t *testing.T) {
	requireNet(t)
	t.Parallel()
	for _, c := range []struct {
		p    profile
		size int64
	}{
		{fast, 64 * MiB},
		{lossy, 8 * MiB},
	} {
		t.Run(c.p.short, func(t *testing.T) {
			t.Parallel()
			s := takeSite(t, c.p)
			f := fanOut(t, s, c.p, "fan-out", c.size, true)
			if limit := f.Model * 11 / 10; f.Egress > limit {
				t.Errorf("with peers the registry sent %.1f MiB to the site for a %d MiB model: %.2fx, want at most 1.1x",
					float64(f.Egress)/MiB, f.Model/MiB, float64(f.Egress)/float64(f.Model))
			}
			// Without peers the uplink carries the model ten times: no run
			// can be faster than that.
			if least := uplinkTime(nodesPerSite*f.Model, c.p.rate); f.ToReady >= least {
				t.Errorf("with peers every node was Ready after %s; without peers the uplink alone needs %s", f.ToReady, least)
			}
		})
	}
}

// TestAPIServerUnreachable: for 60 s packets from one site to the API
// server vanish at its router, while a pull runs. The nodes finish the
// pull (the files are on disk) in the meantime, and once the route is
// back their status catches up.
func TestAPIServerUnreachable(t *testing.T) {
	requireNet(t)
	t.Parallel()
	s := takeSite(t, fast)
	size := int64(64 * MiB)
	ns := env.Namespace(t)
	m := pushModel(t, ns, size)
	deploy(t, s, m)
	// Every puller has seen its NodeArtifact and the pull is under way.
	waitFor(t, "every node pulling", 2*time.Minute, func() bool {
		nas := nodeArtifacts(t, ns)
		for _, n := range s.nodes {
			if na, ok := nas[n.name]; !ok || na.Status.Phase == "" || na.Status.Phase == "Pending" {
				return false
			}
		}
		return s.egress(registryAddr, netip.Addr{}) > size/8
	})
	if err := s.blackholeAPI(true); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := s.blackholeAPI(false); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	const outage = 60 * time.Second
	held := map[string]bool{}
	for {
		for _, n := range s.nodes {
			if !held[n.name] && holds(n, m) {
				held[n.name] = true
			}
		}
		if done := len(held); done == len(s.nodes) {
			t.Logf("every node held the model %s into the outage", time.Since(cut).Round(time.Second))
			break
		}
		if time.Since(cut) > outage {
			t.Fatalf("%d of %d nodes hold the model %s after the API server became unreachable", len(held), len(s.nodes), outage)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, na := range nodeArtifacts(t, ns) {
		if na.Status.Phase == "Ready" {
			t.Errorf("%s reported Ready with the API server unreachable: the outage did not hold", na.Spec.NodeName)
		}
	}
	time.Sleep(time.Until(cut.Add(outage)))
	restore()
	back := time.Now()
	last, nas := waitReady(t, m, s.nodes, 3*time.Minute)
	t.Logf("status caught up %s after the route came back", last.Sub(back).Round(100*time.Millisecond))
	// The seed kept serving its followers through the outage.
	if _, fromPeers := sources(nas, s.nodes); fromPeers == 0 {
		t.Errorf("no node counts bytes from a peer: the site fetched without its peers during the outage")
	}
}

// TestUplinkCut: the uplink is cut for 10 s in the middle of a pull; every
// node completes without its puller restarting, and the registry sends
// barely more than without the cut.
func TestUplinkCut(t *testing.T) {
	requireNet(t)
	t.Parallel()
	uplinkCut(t, takeSite(t, fast), 64*MiB)
}

func uplinkCut(t *testing.T, s *site, size int64) figure {
	t.Helper()
	ns := env.Namespace(t)
	m := pushModel(t, ns, size)
	pids := map[string]int{}
	for _, n := range s.nodes {
		pids[n.name] = n.puller().cmd.Process.Pid
	}
	reg0, wire0 := s.egress(registryAddr, netip.Addr{}), s.onWire(registryAddr)
	start := time.Now()
	deploy(t, s, m)
	waitFor(t, "a third of the pull", 2*time.Minute, func() bool {
		return s.egress(registryAddr, netip.Addr{})-reg0 > size/3
	})
	s.wire.SetCut(true)
	time.Sleep(10 * time.Second)
	s.wire.SetCut(false)
	last, nas := waitReady(t, m, s.nodes, readyTimeout(fast, size, true)+10*time.Second)
	checkHolds(t, m, s.nodes)
	for _, n := range s.nodes {
		if p := n.puller(); !p.running() || p.cmd.Process.Pid != pids[n.name] {
			t.Errorf("%s's puller restarted during the cut", n.name)
		}
	}
	origin, fromPeers := sources(nas, s.nodes)
	f := figure{Scenario: "uplink cut for 10 s at a third", Profile: fast.name, Peers: true, Nodes: len(s.nodes), Model: size,
		Egress: s.egress(registryAddr, netip.Addr{}) - reg0, Wire: s.onWire(registryAddr) - wire0, ToReady: last.Sub(start), Origin: origin, FromPeers: fromPeers}
	record(t, f)
	if limit := size * 105 / 100; f.Egress > limit {
		t.Errorf("the registry sent %.1f MiB to the site for a %d MiB model: %.3fx; want at most 1.05x",
			float64(f.Egress)/MiB, size/MiB, float64(f.Egress)/float64(size))
	}
	return f
}

// TestLyingPeer: the controller lists a peer that serves corrupt layer
// bytes (its Node sorts first, so it is the site's seed). Every node
// completes with intact files, from the origin or honest peers, and the
// nodes that asked the liar name it in status.droppedPeers as Corrupt.
func TestLyingPeer(t *testing.T) {
	requireNet(t)
	t.Parallel()
	s := takeSite(t, fast)
	// The Node first, so that the controller knows it well before the
	// model selects it.
	scripted.Store(s.liar.name, true)
	if err := createNode(s.liar, s.zone); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteNode(t, s.liar.name) })
	ns := env.Namespace(t)
	m := pushModel(t, ns, 16*MiB)
	lr := startLiar(t, s, m)
	reg0, wire0 := s.egress(registryAddr, netip.Addr{}), s.onWire(registryAddr)
	start := time.Now()
	deploy(t, s, m)
	last, nas := waitReady(t, m, s.nodes, readyTimeout(fast, m.size, true))
	checkHolds(t, m, s.nodes)
	if lr.served.Load() == 0 {
		t.Fatalf("nobody fetched a layer from the liar %s: peers %v", s.liar.name, nas[s.nodes[0].name].Spec.Peers)
	}
	var named []string
	for _, n := range s.nodes {
		for _, d := range nas[n.name].Status.DroppedPeers {
			if d.Node == s.liar.name && d.Reason == "Corrupt" {
				named = append(named, n.name)
			}
		}
	}
	if len(named) == 0 {
		t.Errorf("the liar served %d corrupt bytes, and no node's status.droppedPeers names %s as Corrupt", lr.served.Load(), s.liar.name)
	}
	origin, fromPeers := sources(nas, s.nodes)
	record(t, figure{Scenario: "a lying peer", Profile: fast.name, Peers: true, Nodes: len(s.nodes), Model: m.size,
		Egress: s.egress(registryAddr, netip.Addr{}) - reg0, Wire: s.onWire(registryAddr) - wire0, ToReady: last.Sub(start), Origin: origin, FromPeers: fromPeers})
	t.Logf("the liar served %.1f MiB of corrupt layers; dropped as Corrupt by %v", float64(lr.served.Load())/MiB, named)
}

// TestSeedKilled: the seed's puller is SIGKILLed in the middle of the pull.
// Another node takes over from the origin; the registry sends the model
// once more than the seed's lost partial at most; the seed, started again
// later, completes too.
func TestSeedKilled(t *testing.T) {
	requireNet(t)
	t.Parallel()
	seedKilled(t, takeSite(t, fast), 64*MiB)
}

func seedKilled(t *testing.T, s *site, size int64) figure {
	t.Helper()
	ns := env.Namespace(t)
	m := pushModel(t, ns, size)
	seed, rest := s.nodes[0], s.nodes[1:]
	reg0, seed0, wire0 := s.egress(registryAddr, netip.Addr{}), s.egress(registryAddr, seed.addr), s.onWire(registryAddr)
	start := time.Now()
	deploy(t, s, m)
	waitFor(t, "the seed a third through the model", 2*time.Minute, func() bool {
		return s.egress(registryAddr, seed.addr)-seed0 > m.size/3
	})
	seed.puller().kill()
	time.Sleep(time.Second) // what was in flight to the seed arrives or is lost
	lost := s.egress(registryAddr, seed.addr) - seed0
	last, nas := waitReady(t, m, rest, readyTimeout(fast, m.size, true))
	checkHolds(t, m, rest)
	egress := s.egress(registryAddr, netip.Addr{}) - reg0
	var takers []string
	for _, n := range rest {
		if src := nas[n.name].Status.Sources; src != nil && src.Origin > 0 {
			takers = append(takers, n.name)
		}
	}
	if len(takers) == 0 {
		t.Errorf("no node but the killed seed counts bytes from the origin")
	}
	origin, fromPeers := sources(nas, rest)
	f := figure{Scenario: "seed SIGKILLed at a third", Profile: fast.name, Peers: true, Nodes: len(rest), Model: m.size,
		Egress: egress, Wire: s.onWire(registryAddr) - wire0, ToReady: last.Sub(start), Origin: origin, FromPeers: fromPeers, Lost: lost}
	record(t, f)
	// Slack: the registry's HTTP headers, and the manifest and config that
	// the node taking over fetches again: 1% of the model and 256 KiB.
	if limit := m.size + lost + m.size/100 + 256<<10; egress > limit {
		t.Errorf("the registry sent %.1f MiB to the site; want at most the model (%d MiB) + the seed's lost partial (%.1f MiB) + slack",
			float64(egress)/MiB, m.size/MiB, float64(lost)/MiB)
	}
	t.Logf("the seed had %.1f MiB when killed; %v took over from the origin; the registry sent %.2fx the model",
		float64(lost)/MiB, takers, float64(egress)/float64(m.size))
	if err := seed.start(bins); err != nil {
		t.Fatal(err)
	}
	waitReady(t, m, []*edgeNode{seed}, readyTimeout(fast, m.size, true))
	checkHolds(t, m, []*edgeNode{seed})
	return f
}
