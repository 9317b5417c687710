// Package netfault runs Barge on a real network: the cloud (registry, API
// server, controller) in the root network namespace, and two edge sites,
// each a router namespace whose uplink to the cloud is a shaped wire and
// ten node namespaces on the router's LAN, each running a real
// barge-edgepuller with its own address. It measures what crosses each
// uplink and asserts what a site operator would notice: the registry's
// egress per site, time to Ready, completion through cuts, kills, a lying
// peer and an unreachable API server.
//
// netem (delay, loss) is not in every kernel, so the uplink is a program
// (internal/testenv/netns): TUN devices at both ends, real kernel TCP
// stacks and real packets. It needs root and /dev/net/tun; elsewhere the
// tests skip, saying why, unless BARGE_NETFAULT_REQUIRED=1 (CI) makes that
// a failure.
package netfault

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bargeml/barge/internal/testenv"
)

const (
	zoneLabel   = "topology.kubernetes.io/zone"
	peerPort    = 5050
	metricsPort = 9090
)

var (
	// skipReason is why this machine cannot run the suite ("" if it can).
	skipReason string

	env        *testenv.Env
	work       string
	bins       string
	kubeconfig string // the cloud's: the API server on 127.0.0.1
	nodeConfig string // the nodes': the API server through apiAddr
	peerTLS    string // ca.crt, tls.crt, tls.key for every puller
	registry   string // host:port of barge serve on registryAddr
	sites      []*site

	ctrlMu sync.Mutex
	ctrl   *process
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

// requireNet skips a test where the machine forbids namespaces.
func requireNet(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip("test/netfault " + skipReason)
	}
}

func run(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		return m.Run() // listing tests (make fuzz does) needs no network
	}
	if os.Geteuid() == 0 {
		unlock, err := lockMachine()
		if err != nil {
			fmt.Fprintln(os.Stderr, "test/netfault:", err)
			return 1
		}
		defer unlock()
	}
	if err := removeLeftovers(); err != nil && os.Geteuid() == 0 {
		fmt.Fprintln(os.Stderr, "test/netfault: remove the namespaces of an earlier run:", err)
	}
	if skipReason = canUseNamespaces(); skipReason != "" {
		if os.Getenv("BARGE_NETFAULT_REQUIRED") == "1" {
			fmt.Fprintln(os.Stderr, "test/netfault: BARGE_NETFAULT_REQUIRED=1, but the suite", skipReason)
			return 1
		}
		return m.Run()
	}
	stop, err := setUp()
	defer stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/netfault:", err)
		return 1
	}
	code := m.Run()
	if err := writeFigures(); err != nil {
		fmt.Fprintln(os.Stderr, "test/netfault: write the figures:", err)
		code = 1
	}
	if code != 0 {
		if p := controller(); p != nil {
			fmt.Fprintf(os.Stderr, "controller log:\n%s\n", p.logs.tail(60))
		}
	}
	return code
}

// lockMachine waits until no other run of this suite uses the machine:
// the names of its namespaces and devices are fixed, and a second run
// would remove the first one's as leftovers.
func lockMachine() (unlock func(), err error) {
	const path = "/run/barge-netfault.lock"
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	deadline := time.Now().Add(30 * time.Minute)
	for said := false; ; said = true {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			return func() { f.Close() }, nil
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another run of test/netfault has held %s for 30 minutes", path)
		}
		if !said {
			fmt.Fprintf(os.Stderr, "test/netfault: waiting for another run of the suite to finish (it holds %s)\n", path)
		}
		time.Sleep(time.Second)
	}
}

// setUp builds the binaries and starts the cloud and the sites; stop
// undoes whatever was done, also after an error.
func setUp() (stop func(), err error) {
	var undo []func()
	stop = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	if work, err = os.MkdirTemp("", "barge-netfault-"); err != nil {
		return stop, err
	}
	undo = append(undo, func() { os.RemoveAll(work) })
	bins = filepath.Join(work, "bin")
	build := exec.Command("go", "build", "-o", bins+"/", "github.com/bargeml/barge/cmd/...")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return stop, fmt.Errorf("build: %w", err)
	}

	c, err := startCloud()
	if err != nil {
		return stop, err
	}
	undo = append(undo, c.close)
	if env, err = testenv.Start(); err != nil {
		return stop, err
	}
	undo = append(undo, func() { env.Stop() })
	kubeconfig = filepath.Join(work, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return stop, err
	}
	fwd, err := forwardAPI()
	if err != nil {
		return stop, err
	}
	undo = append(undo, func() { fwd.Close() })
	if peerTLS, err = writePeerTLS(filepath.Join(work, "peer-tls")); err != nil {
		return stop, err
	}

	reg, err := startProcess("registry", "", filepath.Join(bins, "barge"), "serve", "--insecure-listen", "--addr", registryAddr.String()+":5000", "--root", filepath.Join(work, "registry"))
	if err != nil {
		return stop, err
	}
	undo = append(undo, reg.stop)
	m, err := reg.waitLog(regexp.MustCompile(`Serving an OCI registry on http://([^,]+),`), 30*time.Second)
	if err != nil {
		return stop, err
	}
	registry = m[1]

	for i, letter := range []string{"a", "b"} {
		s, err := startSite(i+1, letter)
		if err != nil {
			return stop, fmt.Errorf("site %s: %w", letter, err)
		}
		undo = append(undo, s.close)
		sites = append(sites, s)
	}
	for _, s := range sites {
		for _, n := range s.nodes {
			if err := createNode(n, s.zone); err != nil {
				return stop, err
			}
			n.root = filepath.Join(work, "nodes", n.name)
			n.args = []string{"--kubeconfig", nodeConfig, "--node-name", n.name, "--root", n.root,
				"--metrics-addr", fmt.Sprintf("%s:%d", n.addr, metricsPort),
				"--peer-listen", fmt.Sprintf("%s:%d", n.addr, peerPort), "--peer-tls-dir", peerTLS}
			if err := n.start(bins); err != nil {
				return stop, err
			}
		}
	}
	if err := startController(true); err != nil {
		return stop, err
	}
	undo = append(undo, func() {
		if p := controller(); p != nil {
			p.stop()
		}
	})
	return stop, nil
}

// startController (re)starts barge-controller, with peers on the nodes or
// without (--peer-port 0), for a comparison in one run.
func startController(peers bool) error {
	ctrlMu.Lock()
	defer ctrlMu.Unlock()
	if ctrl != nil {
		ctrl.stop()
	}
	port := 0
	if peers {
		port = peerPort
	}
	args := []string{"--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--site-label", zoneLabel, "--peer-port", fmt.Sprint(port)}
	p, err := startProcess("controller", "", filepath.Join(bins, "barge-controller"), args...)
	if err != nil {
		return err
	}
	ctrl = p
	return nil
}

func controller() *process {
	ctrlMu.Lock()
	defer ctrlMu.Unlock()
	return ctrl
}

// forwardAPI makes the API server (envtest binds 127.0.0.1) reachable on
// apiAddr, and writes the nodes' kubeconfig naming that address. The
// server's certificate is for localhost; the kubeconfig says so.
func forwardAPI() (net.Listener, error) {
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", netip.AddrPortFrom(apiAddr, 6443).String())
	if err != nil {
		return nil, fmt.Errorf("forwarder to the API server: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", u.Host)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { io.Copy(s, c); s.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, s)
			}()
		}
	}()
	cfg, err := clientcmd.Load(env.KubeConfig)
	if err != nil {
		l.Close()
		return nil, err
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + l.Addr().String()
		c.TLSServerName = "localhost"
	}
	nodeConfig = filepath.Join(work, "node-kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, nodeConfig); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// writePeerTLS writes a site CA and one certificate signed by it for the
// peer server name, as the chart's Secret holds them.
func writePeerTLS(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "barge netfault peer CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "barge-peer"}, DNSNames: []string{"barge-peer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	for name, block := range map[string]*pem.Block{
		"ca.crt":  {Type: "CERTIFICATE", Bytes: caDER},
		"tls.crt": {Type: "CERTIFICATE", Bytes: der},
		"tls.key": {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// createNode creates n's Node object in zone, Ready, with n's address as
// its InternalIP, as a kubelet would report it.
func createNode(n *edgeNode, zone string) error {
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{zoneLabel: zone, "node-role.kubernetes.io/edge": ""}}}
	if err := env.Client.Create(ctx, node); err != nil {
		return fmt.Errorf("create Node %s: %w", n.name, err)
	}
	node.Status = corev1.NodeStatus{
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.addr.String()}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
	}
	if err := env.Client.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("set the status of Node %s: %w", n.name, err)
	}
	return nil
}
