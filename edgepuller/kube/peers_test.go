package kube_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/edgepuller/agent"
)

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestPeersAndSources: spec.peers reach the pull, and status.sources and
// status.droppedPeers say, as the chart's puller identity may write them,
// where the bytes came from and which peer the pull dropped. A restarted
// puller keeps that record while the version stays; a malformed peer fails
// the NodeArtifact instead of naming another peer.
func TestPeersAndSources(t *testing.T) {
	s := newSite(t)
	s.peerTLS = &tls.Config{ServerName: "barge-peer"} // any: the one peer is down
	m := s.push("models/site", map[string]string{"weights.bin": randomString(64<<10, 3)})
	dead := closedAddr(t)
	s.createWith("site", node, m, func(na *v1alpha1.NodeArtifact) {
		na.Spec.Peers = []v1alpha1.Peer{{Node: "edge-9", Address: dead}}
	})
	p := s.start(nil, nil)

	got := s.waitReady("site", m).Status
	if got.Sources == nil || got.Sources.Origin < m.bytes || got.Sources.Peers != 0 || got.Sources.Mirrors != 0 {
		t.Errorf("status.sources %+v, want every byte (at least %d) from the origin", got.Sources, m.bytes)
	}
	if len(got.DroppedPeers) != 1 || got.DroppedPeers[0].Node != "edge-9" || got.DroppedPeers[0].Reason != "Unreachable" ||
		!strings.Contains(got.DroppedPeers[0].Message, dead) {
		t.Errorf("status.droppedPeers %+v, want edge-9 Unreachable", got.DroppedPeers)
	}

	// A restarted puller has pulled nothing: the record stays.
	p.stop(t)
	p2 := s.start(nil, nil)
	waitFor(t, "the restarted puller to find the artifact Ready", func() bool { return p2.status(s.ns+"/site").Phase == agent.Ready })
	time.Sleep(500 * time.Millisecond) // its reports are sent at once
	if after, _ := s.get("site"); after.Status.Sources == nil || len(after.Status.DroppedPeers) != 1 {
		t.Errorf("after a restart status.sources %+v and droppedPeers %+v, want the last pull's kept", after.Status.Sources, after.Status.DroppedPeers)
	}

	// One address that would add a peer of its own fails the entry.
	m2 := s.push("models/evil", map[string]string{"weights.bin": "evil"})
	s.createWith("evil", node, m2, func(na *v1alpha1.NodeArtifact) {
		na.Spec.Peers = []v1alpha1.Peer{{Node: "edge-2", Address: "10.0.0.2:5050 evil=203.0.113.9:5050"}}
	})
	st := s.waitStatus("evil", "Failed", func(st v1alpha1.NodeArtifactStatus) bool { return st.Phase == v1alpha1.NodeArtifactFailed }).Status
	if !strings.Contains(st.Message, "peers: peer edge-2: address") {
		t.Errorf("status.message %q, want it to name the bad peer address", st.Message)
	}
}
