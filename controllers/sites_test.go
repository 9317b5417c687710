package controllers

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bargeml/barge/api/v1alpha1"
)

// sitesFixture: site a of four nodes, site b of two, and x without the
// site label, all with addresses 10.0.0.<i>.
func sitesFixture() map[string]siteNode {
	nodes := map[string]siteNode{}
	for i, n := range []string{"a1", "a2", "a3", "a4", "b1", "b2", "x"} {
		site := n[:1]
		if site == "x" {
			site = ""
		}
		nodes[n] = siteNode{site: site, address: fmt.Sprintf("10.0.0.%d:5050", i+1)}
	}
	return nodes
}

// peerNames shows a plan as "node:peer,peer node:..." for the nodes given.
func peerNames(plan map[string][]v1alpha1.Peer, nodes ...string) string {
	var parts []string
	for _, n := range nodes {
		var names []string
		for _, p := range plan[n] {
			names = append(names, p.Node)
		}
		parts = append(parts, n+":"+strings.Join(names, ","))
	}
	return strings.Join(parts, " ")
}

func TestPlanPeers(t *testing.T) {
	all := []string{"a1", "a2", "a3", "a4", "b1", "b2", "x"}
	fresh := func(ready ...string) []peerMember {
		var out []peerMember
		for _, n := range all {
			out = append(out, peerMember{node: n, digest: "D", fresh: true, ready: strings.Contains(strings.Join(ready, " "), n)})
		}
		return out
	}
	pol := sitePolicy{label: "zone", port: 5050, seeds: 1, max: 4}
	tests := []struct {
		name    string
		pol     func(sitePolicy) sitePolicy
		members []peerMember
		nodes   func(map[string]siteNode)
		want    string
	}{
		{
			name:    "one seed per site; followers list it first, then the nodes ahead",
			members: fresh(),
			want:    "a1: a2:a1 a3:a1,a2 a4:a1,a2,a3 b1: b2:b1 x:",
		},
		{
			name:    "a node Ready on the digest seeds",
			members: fresh("a3"),
			want:    "a1:a3 a2:a3,a1 a3: a4:a3,a1,a2 b1: b2:b1 x:",
		},
		{
			name:    "a node labelled barge.dev/seed goes first, after the nodes Ready on the digest",
			members: fresh(),
			nodes:   func(n map[string]siteNode) { sn := n["a3"]; sn.seed = true; n["a3"] = sn },
			want:    "a1:a3 a2:a3,a1 a3: a4:a3,a1,a2 b1: b2:b1 x:",
		},
		{
			name:    "Ready goes before the seed label",
			members: fresh("a4"),
			nodes:   func(n map[string]siteNode) { sn := n["a3"]; sn.seed = true; n["a3"] = sn },
			want:    "a1:a4,a3 a2:a4,a3,a1 a3:a4 a4: b1: b2:b1 x:",
		},
		{
			name:    "two seeds spread the followers",
			pol:     func(p sitePolicy) sitePolicy { p.seeds = 2; return p },
			members: fresh(),
			want:    "a1: a2: a3:a1,a2 a4:a2,a1,a3 b1: b2: x:",
		},
		{
			name:    "max peers",
			pol:     func(p sitePolicy) sitePolicy { p.max = 2; return p },
			members: fresh(),
			want:    "a1: a2:a1 a3:a1,a2 a4:a1,a2 b1: b2:b1 x:",
		},
		{
			name:    "a node without an address is never a peer, and follows the rest",
			members: fresh(),
			nodes:   func(n map[string]siteNode) { n["a2"] = siteNode{site: "a"} },
			want:    "a1: a2:a1,a3,a4 a3:a1 a4:a1,a3 b1: b2:b1 x:",
		},
		{
			name: "only nodes on the same digest",
			members: func() []peerMember {
				m := fresh()
				m[0].digest = "E"
				return m
			}(),
			want: "a1: a2: a3:a2 a4:a2,a3 b1: b2:b1 x:",
		},
		{
			name:    "peers off",
			pol:     func(p sitePolicy) sitePolicy { p.port = 0; return p },
			members: fresh(),
			want:    "a1: a2: a3: a4: b1: b2: x:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pol
			if tt.pol != nil {
				p = tt.pol(p)
			}
			nodes := sitesFixture()
			if tt.nodes != nil {
				tt.nodes(nodes)
			}
			got := p.planPeers(tt.members, nodes)
			if s := peerNames(got, all...); s != tt.want {
				t.Errorf("peers\n got %s\nwant %s", s, tt.want)
			}
			for _, n := range all {
				for _, peer := range got[n] {
					if peer.Address != nodes[peer.Node].address {
						t.Errorf("%s lists %s at %s, want %s", n, peer.Node, peer.Address, nodes[peer.Node].address)
					}
				}
			}
		})
	}
}

// TestPlanPeersKeeps: a list once decided stays while its peers are valid,
// whatever the order says now; it is decided again when one is not.
func TestPlanPeersKeeps(t *testing.T) {
	pol := sitePolicy{label: "zone", port: 5050, seeds: 1, max: 4}
	nodes := sitesFixture()
	peer := func(n string) v1alpha1.Peer { return v1alpha1.Peer{Node: n, Address: nodes[n].address} }
	settled := func() []peerMember {
		return []peerMember{
			{node: "a1", digest: "D"},
			{node: "a2", digest: "D", peers: []v1alpha1.Peer{peer("a1")}},
			{node: "a3", digest: "D", peers: []v1alpha1.Peer{peer("a1"), peer("a2")}, ready: true},
			{node: "a4", digest: "D", peers: []v1alpha1.Peer{peer("a1"), peer("a2"), peer("a3")}},
		}
	}
	all := []string{"a1", "a2", "a3", "a4"}
	if got := peerNames(pol.planPeers(settled(), nodes), all...); got != "a1: a2:a1 a3:a1,a2 a4:a1,a2,a3" {
		t.Errorf("a Ready follower reordered the lists: %s", got)
	}

	gone := sitesFixture()
	delete(gone, "a1")
	if got := peerNames(pol.planPeers(settled()[1:], gone), all[1:]...); got != "a2:a3 a3: a4:a3,a2" {
		t.Errorf("after a1 is gone: %s", got)
	}

	moved := sitesFixture()
	moved["a2"] = siteNode{site: "a", address: "10.9.9.9:5050"}
	if got := peerNames(pol.planPeers(settled(), moved), all...); got != "a1: a2:a1 a3:a1,a2 a4:a1,a2,a3" {
		t.Errorf("after a2's address changed: %s", got)
	}
	for _, m := range []string{"a3", "a4"} {
		if p := pol.planPeers(settled(), moved)[m]; p[1].Address != "10.9.9.9:5050" {
			t.Errorf("%s still lists a2 at %s", m, p[1].Address)
		}
	}

	other := settled()
	other[1].digest = "E"
	if got := peerNames(pol.planPeers(other, nodes), all...); got != "a1: a2: a3: a4:a3,a1" {
		t.Errorf("after a2 moved to another digest: %s", got)
	}
}
