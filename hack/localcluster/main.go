// Command localcluster runs a Kubernetes control plane for the quickstart:
// kube-apiserver and etcd from bin/ (built from Go modules by `make tools`),
// Barge's CRDs installed, and Node objects standing for edge nodes. It
// writes a kubeconfig and runs until SIGINT or SIGTERM. There is no kubelet:
// Barge's pullers play the nodes' part.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bargeml/barge/internal/testenv"
)

func main() {
	kubeconfig := flag.String("out", "kubeconfig", "where to write the kubeconfig")
	nodes := flag.String("nodes", "edge-1,edge-2", "Node objects to create, comma-separated")
	labels := flag.String("labels", "node-role.kubernetes.io/edge=", "labels of every node, k=v comma-separated")
	flag.Parse()
	if err := run(*kubeconfig, strings.Split(*nodes, ","), *labels); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, nodes []string, labels string) error {
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
