package netfault

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bargeml/barge/internal/testenv/netns"
)

// Everything this suite makes in the kernel is named with this prefix, so
// that a run removes what a killed earlier run left behind.
const prefix = "bnf-"

// The cloud's addresses, on a TUN device of their own in the root
// namespace (nothing is routed to it: local addresses are delivered
// locally): the registry, and the forwarder to the API server.
var (
	registryAddr = netip.MustParseAddr("10.200.0.1")
	apiAddr      = netip.MustParseAddr("10.200.0.2")
)

const nodesPerSite = 10

// ipRun runs the ip command.
func ipRun(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNS runs a command in a network namespace.
func inNS(ns string, args ...string) error {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("in %s: %s: %v: %s", ns, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// canUseNamespaces says why this machine cannot run the suite, or "".
func canUseNamespaces() string {
	if os.Geteuid() != 0 {
		return "needs root to make network namespaces and TUN devices (run as root, e.g. sudo -E go test ./test/netfault)"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "needs /dev/net/tun for the shaped uplinks: " + err.Error()
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs the ip command (iproute2)"
	}
	name := prefix + "probe"
	if err := ipRun("netns", "add", name); err != nil {
		return "cannot make a network namespace: " + err.Error()
	}
	defer ipRun("netns", "del", name)
	f, err := netns.OpenTUN(name, "bnf-probe")
	if err != nil {
		return "cannot make a TUN device in a network namespace: " + err.Error()
	}
	f.Close()
	return ""
}

// removeLeftovers deletes the namespaces of an earlier run, killing what
// still runs in them (its pullers, if it was killed). TUN devices, their
// addresses and routes went with the process that held them.
func removeLeftovers() error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		pids, _ := exec.Command("ip", "netns", "pids", f[0]).Output()
		for _, s := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(s); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if len(pids) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		errs = append(errs, ipRun("netns", "del", f[0]))
	}
	return errors.Join(errs...)
}

// cloud holds the cloud's addresses.
type cloud struct{ tun *os.File }

func startCloud() (*cloud, error) {
	tun, err := netns.OpenTUN("", prefix+"cloud")
	if err != nil {
		return nil, err
	}
	c := &cloud{tun: tun}
	for _, cmd := range [][]string{
		{"addr", "add", registryAddr.String() + "/32", "dev", prefix + "cloud"},
		{"addr", "add", apiAddr.String() + "/32", "dev", prefix + "cloud"},
		{"link", "set", prefix + "cloud", "up"},
	} {
		if err := ipRun(cmd...); err != nil {
			tun.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *cloud) close() { c.tun.Close() }

// site is a router namespace whose uplink to the cloud is a shaped wire,
// with a LAN bridge and the node namespaces on it. Node 0 is kept for a
// scripted peer (the liar); nodes 1 to nodesPerSite run real pullers.
type site struct {
	letter string // "a"
	zone   string // the value of the site label: "site-a"
	router string // namespace
	wire   *netns.Wire
	tuns   []*os.File
	nodes  []*edgeNode // 1..nodesPerSite
	liar   *edgeNode   // node 0, no puller

	mu   sync.Mutex
	busy bool
}

// edgeNode is a node namespace with one address on its site's LAN.
type edgeNode struct {
	name string // node, and namespace
	addr netip.Addr
	root string

	mu   sync.Mutex
	args []string
	p    *process
}

func (s *site) uplinkIf() string { return prefix + "u" + s.letter }

// startSite builds site number i (1, 2, ...): 10.201.i.0/30 on the wire,
// 10.210.i.0/24 on the LAN.
func startSite(i int, letter string) (_ *site, err error) {
	s := &site{letter: letter, zone: "site-" + letter, router: prefix + "r" + letter}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	cloudEnd, siteEnd := fmt.Sprintf("10.201.%d.1", i), fmt.Sprintf("10.201.%d.2", i)
	lan := fmt.Sprintf("10.210.%d", i)
	if err := ipRun("netns", "add", s.router); err != nil {
		return s, err
	}
	if err := inNS(s.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return s, err
	}
	up, err := netns.OpenTUN(s.router, prefix+"up")
	if err != nil {
		return s, err
	}
	s.tuns = append(s.tuns, up)
	down, err := netns.OpenTUN("", s.uplinkIf())
	if err != nil {
		return s, err
	}
	s.tuns = append(s.tuns, down)
	for _, cmd := range [][]string{
		{"addr", "add", cloudEnd, "peer", siteEnd, "dev", s.uplinkIf()},
		{"link", "set", s.uplinkIf(), "up"},
		{"route", "add", lan + ".0/24", "dev", s.uplinkIf()},
		{"-n", s.router, "link", "set", "lo", "up"},
		{"-n", s.router, "addr", "add", siteEnd, "peer", cloudEnd, "dev", prefix + "up"},
		{"-n", s.router, "link", "set", prefix + "up", "up"},
		{"-n", s.router, "route", "add", "default", "dev", prefix + "up"},
		{"-n", s.router, "link", "add", prefix + "lan", "type", "bridge"},
		{"-n", s.router, "addr", "add", lan + ".1/24", "dev", prefix + "lan"},
		{"-n", s.router, "link", "set", prefix + "lan", "up"},
	} {
		if err := ipRun(cmd...); err != nil {
			return s, err
		}
	}
	for k := 0; k <= nodesPerSite; k++ {
		n := &edgeNode{name: fmt.Sprintf("%s%s%02d", prefix, letter, k), addr: netip.MustParseAddr(fmt.Sprintf("%s.%d", lan, 10+k))}
		veth := fmt.Sprintf("v%s%02d", letter, k)
		for _, cmd := range [][]string{
			{"netns", "add", n.name},
			{"-n", s.router, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n.name},
			{"-n", s.router, "link", "set", veth, "master", prefix + "lan", "up"},
			{"-n", n.name, "link", "set", "lo", "up"},
			{"-n", n.name, "addr", "add", n.addr.String() + "/24", "dev", "eth0"},
			{"-n", n.name, "link", "set", "eth0", "up"},
			{"-n", n.name, "route", "add", "default", "via", lan + ".1"},
		} {
			if err := ipRun(cmd...); err != nil {
				return s, err
			}
		}
		if k == 0 {
			s.liar = n
		} else {
			s.nodes = append(s.nodes, n)
		}
	}
	s.wire = netns.NewWire(down, up)
	return s, nil
}

// close stops the site's pullers and removes its namespaces and devices.
func (s *site) close() {
	for _, n := range s.nodes {
		n.stop()
	}
	if s.wire != nil {
		s.wire.Close()
	}
	for _, f := range s.tuns {
		f.Close()
	}
	for _, n := range append(s.nodes, s.liar) {
		if n != nil {
			ipRun("netns", "del", n.name)
		}
	}
	ipRun("netns", "del", s.router)
}

// shape sets the uplink's profile, both directions alike.
func (s *site) shape(p profile) {
	s.wire.SetCut(false)
	s.wire.SetShape(netns.Shape{Rate: p.rate, Delay: p.delay, Loss: p.loss})
}

// egress is the TCP payload bytes the cloud address from sent into the
// site's uplink so far (to every node of the site when to is invalid),
// each byte of a connection once: what the registry's application sent.
func (s *site) egress(from, to netip.Addr) int64 { return s.wire.Down.Fresh(from, to) }

// onWire is egress with TCP's resends: what the uplink carried.
func (s *site) onWire(from netip.Addr) int64 { return s.wire.Down.Sent(from, netip.Addr{}) }

// blackholeAPI makes the API server's address unreachable from the site's
// LAN (packets vanish at the router), or reachable again.
func (s *site) blackholeAPI(on bool) error {
	verb := "add"
	if !on {
		verb = "del"
	}
	return ipRun("-n", s.router, "route", verb, "blackhole", apiAddr.String()+"/32")
}

func (n *edgeNode) start(bins string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, err := startProcess("puller "+n.name, n.name, bins+"/barge-edgepuller", n.args...)
	if err != nil {
		return err
	}
	n.p = p
	return nil
}

func (n *edgeNode) puller() *process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.p
}

func (n *edgeNode) stop() {
	if p := n.puller(); p != nil {
		p.stop()
	}
}
