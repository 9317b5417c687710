// Command localcluster runs a Kubernetes control plane for the quickstart:
// kube-apiserver and etcd from bin/ (built from Go modules by `make tools`),
// Barge's CRDs installed, and Node objects standing for edge nodes. It
// writes a kubeconfig and runs until SIGINT or SIGTERM. There is no kubelet:
// Barge's pullers play the nodes' part, and with --run-pods the tests' stand-in
// for the kubelet and the Job controller (testenv.StartProcessKubelet) runs
// the pods and Jobs of one namespace as local processes, each node's
// directories under --nodes-dir/<node> (its puller's root) and
// --hosts-dir/<node> (host paths outside the edge root).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/internal/testenv"
)

func main() {
	kubeconfig := flag.String("out", "kubeconfig", "where to write the kubeconfig")
	nodes := flag.String("nodes", "edge-1,edge-2", "Node objects to create, comma-separated")
	labels := flag.String("labels", "node-role.kubernetes.io/edge=", "labels of every node, k=v comma-separated")
	var pods podRunner
	flag.StringVar(&pods.namespace, "run-pods", "", "run the pods and Jobs of this namespace as local processes")
	flag.StringVar(&pods.nodes, "nodes-dir", "nodes", "with --run-pods: DIR/<node> is the node's puller root")
	flag.StringVar(&pods.hosts, "hosts-dir", "hosts", "with --run-pods: DIR/<node> stands in for the node's file system root")
	flag.Parse()
	if err := run(*kubeconfig, strings.Split(*nodes, ","), *labels, pods); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, nodes []string, labels string, pods podRunner) error {
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer env.Stop()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	lbls := map[string]string{}
	for _, kv := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			lbls[k] = v
		}
	}
	for _, name := range nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
		for k, v := range lbls {
			node.Labels[k] = v
		}
		if err := env.Client.Create(ctx, node); err != nil {
			return fmt.Errorf("create node %s: %w", name, err)
		}
	}
	if pods.namespace != "" {
		defer pods.start(env, nodes)()
	}
	if err := os.WriteFile(kubeconfig+".tmp", env.KubeConfig, 0o600); err != nil {
		return err
	}
	// Renamed into place only when the nodes exist: its appearance means ready.
	if err := os.Rename(kubeconfig+".tmp", kubeconfig); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "control plane at %s, nodes %s, kubeconfig %s\n", env.Config.Host, strings.Join(nodes, ", "), kubeconfig)
	<-ctx.Done()
	return nil
}

// podRunner runs the stand-in kubelet outside a test.
type podRunner struct {
	namespace, nodes, hosts string
	cleanups                []func()
	tmp                     string
}

// start runs the stand-in; the function it returns stops it.
func (p *podRunner) start(env *testenv.Env, nodes []string) func() {
	testenv.StartProcessKubelet(p, env.Client, p.namespace, testenv.ProcessConfig{
		EdgeRoot: v1alpha1.DefaultEdgeRoot,
		NodeRoot: func(node string) string { return filepath.Join(p.nodes, node) },
		HostRoot: func(node string) string { return filepath.Join(p.hosts, node) },
	}, nodes...)
	return func() {
		for i := len(p.cleanups) - 1; i >= 0; i-- {
			p.cleanups[i]()
		}
		if p.tmp != "" {
			os.RemoveAll(p.tmp)
		}
	}
}

func (p *podRunner) Helper()                         {}
func (p *podRunner) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (p *podRunner) Cleanup(f func())                { p.cleanups = append(p.cleanups, f) }
func (p *podRunner) Failed() bool                    { return false }

func (p *podRunner) TempDir() string {
	if p.tmp == "" {
		dir, err := os.MkdirTemp("", "localcluster-pods-")
		if err != nil {
			panic(err)
		}
		p.tmp = dir
	}
	dir, err := os.MkdirTemp(p.tmp, "")
	if err != nil {
		panic(err)
	}
	return dir
}
