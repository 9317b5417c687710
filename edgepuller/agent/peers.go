package agent

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/bargeml/barge/edgepuller/fetch"
)

// maxPeers is how many peers an entry lists at most, as a NodeArtifact's
// spec.peers does.
const maxPeers = 16

// nodeName is a Kubernetes node name: a DNS subdomain.
var nodeName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)

// ParsePeers reads Desired.Peers, "node=host:port node=host:port", into
// the peers to try in order. It comes from the API server, written by the
// controller from Node objects: refuse what it would not write.
func ParsePeers(s string) ([]fetch.Peer, error) {
	fields := strings.Fields(s)
	if len(fields) > maxPeers {
		return nil, fmt.Errorf("%d peers, more than %d", len(fields), maxPeers)
	}
	var peers []fetch.Peer
	seen := map[string]bool{}
	for _, f := range fields {
		node, addr, ok := strings.Cut(f, "=")
		if !ok || !nodeName.MatchString(node) {
			return nil, fmt.Errorf("peer %q: want node=host:port with the node's name (lower-case letters, digits, '-' and '.')", f)
		}
		if seen[node] {
			return nil, fmt.Errorf("peer %s is listed twice", node)
		}
		seen[node] = true
		if err := checkPeerAddr(addr); err != nil {
			return nil, fmt.Errorf("peer %s: address %q: %w", node, addr, err)
		}
		peers = append(peers, fetch.Peer{Node: node, Addr: addr})
	}
	return peers, nil
}

// checkPeerAddr accepts host:port, the host an IP address or a DNS name.
func checkPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port of the peer's puller")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a port number (1-65535)", port)
	}
	if net.ParseIP(host) == nil && !nodeName.MatchString(strings.ToLower(host)) {
		return fmt.Errorf("host %q is neither an IP address nor a DNS name", host)
	}
	return nil
}
