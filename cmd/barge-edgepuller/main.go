// Command barge-edgepuller keeps a node's models and datasets as desired: it
// pulls them from an OCI registry into a content-addressed store, with resume
// and dedup, and switches each artifact's current version atomically. In the
// standalone mode a YAML file lists what is desired; in the Kubernetes mode
// the NodeArtifacts labelled with the node do, and their status is reported.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/gc"
	"github.com/bargeml/barge/edgepuller/kube"
	"github.com/bargeml/barge/edgepuller/peer"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/edgepuller/trust"
	"github.com/bargeml/barge/internal/kuberate"
)

const usage = `Usage:
  barge-edgepuller --root DIR --desired FILE.yaml [flags]                   standalone mode
  barge-edgepuller --root DIR [--kubeconfig FILE] --node-name NODE [flags]  Kubernetes mode

Standalone mode keeps the artifacts listed in FILE.yaml materialized under
DIR/artifacts/<name>/current, re-reading the file when it changes. The file:

  artifacts:
    - name: resnet
      reference: registry.example.com:5000/models/resnet:1.0
      insecure: false   # true: plain HTTP

Kubernetes mode keeps the NodeArtifacts labelled barge.dev/node=NODE materialized
under DIR/artifacts/<namespace>/<name>/current and writes their status. Without
--kubeconfig it uses the pod's in-cluster configuration; on a KubeEdge edge node,
point --kubeconfig at a file naming the MetaServer (http://127.0.0.1:10550).
Registry credentials come only from --registry-config; the training updates
a NodeArtifact's spec.upload asks for are pushed with --push-credentials only.

Site peers: with --peer-tls-dir DIR (ca.crt, tls.crt and tls.key: the chart's
peer Secret, mounted), the puller fetches from the peers it is given (a
NodeArtifact's spec.peers) before mirrors and the origin, over mutual TLS; with
--peer-listen ADDR as well, it serves its own store read-only to them, blobs
still arriving included. Peers need no API access and no registry credentials.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fl := flag.NewFlagSet("barge-edgepuller", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprint(stderr, usage)
		fl.PrintDefaults()
	}
	var (
		root        = fl.String("root", v1alpha1.DefaultEdgeRoot, "directory for the blob store, the artifacts and the persisted desired state")
		desired     = fl.String("desired", "", "standalone mode: YAML file listing the desired artifacts")
		kubeconfig  = fl.String("kubeconfig", "", "Kubernetes mode: kubeconfig file; empty for the in-cluster configuration when KUBERNETES_SERVICE_HOST is set")
		nodeName    = fl.String("node-name", os.Getenv("NODE_NAME"), "Kubernetes mode: this node's name (default $NODE_NAME)")
		metricsAddr = fl.String("metrics-addr", ":9090", "address serving /metrics, /healthz and /status; empty to disable")
		concurrency = fl.Int("concurrency", 2, "artifacts pulled at once")
		layers      = fl.Int("layers", 4, "layers of one artifact downloaded at once")
		resolve     = fl.Duration("resolve-interval", 5*time.Minute, "how often tags are resolved again to roll out a moved tag")
		poll        = fl.Duration("poll-interval", time.Second, "how often the desired file is checked for changes")
		gcInterval  = fl.Duration("gc-interval", time.Hour, "how often garbage is collected, besides after each activation")
		keep        = fl.Int("keep-previous", 1, "versions kept besides the current one, per artifact, for rollback")
		logLevel    = fl.String("log-level", "info", "debug, info, warn or error")
		reqTimeout  = fl.Duration("request-timeout", fetch.DefaultRequestTimeout, "bound on each manifest, tag lookup and token request to a registry or mirror, body included")
		pullTimeout = fl.Duration("pull-timeout", fetch.DefaultTimeout, "bound on one pull of one artifact; a pull cut by it resumes on the next attempt")
		regConfig   = fl.String("registry-config", "", "registry credentials in Docker config format (a mounted kubernetes.io/dockerconfigjson Secret); anonymous when empty")
		pushConfig  = fl.String("push-credentials", "", "credentials for uploading training updates, in Docker config format (a mounted kubernetes.io/dockerconfigjson Secret), used only for uploads and only to the repository a NodeArtifact's spec.upload names; anonymous uploads when empty")
		verifyDir   = fl.String("verify-dir", "", "key material for signature checks before activation, DIR/NAMESPACE/KEYS/ (mounted ConfigMaps); without it, an artifact that asks for verification fails")
		peerListen  = fl.String("peer-listen", "", "address serving this node's store to its site's peers over mutual TLS, such as :5050; empty: not served (needs --peer-tls-dir)")
		apiQPS      = fl.Float64("kube-api-qps", kube.DefaultQPS, "Kubernetes mode: client-side limit of API requests per second (a quick pull is one status patch, so a new node with 1,000 artifacts sends about 1,000); 0 for none, leaving the API server's priority and fairness to pace the puller")
		apiBurst    = fl.Int("kube-api-burst", kube.DefaultBurst, "Kubernetes mode: requests above --kube-api-qps allowed in a burst")
		peerTLSDir  = fl.String("peer-tls-dir", "", "peer TLS directory: ca.crt, tls.crt and tls.key (the chart's peer Secret, mounted); needed to serve peers (--peer-listen) and to fetch from them")
		mirrors     []string
		limitRate   int64
		limitUp     int64
		quota       int64
	)
	fl.Func("mirror", "registry mirror tried before the origin, host[:port] or http://host[:port] (repeatable, tried in order)", func(s string) error {
		mirrors = append(mirrors, s)
		return nil
	})
	fl.Func("limit-rate", "cap on the node's download rate in bytes per second, with an optional K, M or G suffix (e.g. 2M)", func(s string) (err error) {
		limitRate, err = fetch.ParseBytes(s)
		return err
	})
	fl.Func("limit-upload-rate", "cap on the node's upload rate (training updates) in bytes per second, with an optional K, M or G suffix (e.g. 1M); apart from --limit-rate", func(s string) (err error) {
		limitUp, err = fetch.ParseBytes(s)
		return err
	})
	fl.Func("quota", "disk quota for the store and artifacts together, such as 10G; least recently used old versions go first", func(s string) (err error) {
		quota, err = fetch.ParseBytes(s)
		return err
	})
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	nodeNameSet := false
	fl.Visit(func(f *flag.Flag) { nodeNameSet = nodeNameSet || f.Name == "node-name" })
	kubeMode, err := chooseMode(*desired, *kubeconfig, *nodeName, nodeNameSet, fl.NArg())
	if err != nil {
		fmt.Fprintf(stderr, "barge-edgepuller: %v\n\n", err)
		fl.Usage()
		return 2
	}
	if *peerListen != "" && *peerTLSDir == "" {
		fmt.Fprintf(stderr, "barge-edgepuller: --peer-listen needs --peer-tls-dir: peers are served only over mutual TLS\n\n")
		fl.Usage()
		return 2
	}
	if err := kuberate.Check(*apiQPS, *apiBurst); err != nil {
		fmt.Fprintf(stderr, "barge-edgepuller: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "barge-edgepuller: --log-level %q: use debug, info, warn or error\n", *logLevel)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	previous := *keep
	if previous == 0 {
		previous = -1 // gc.Options: 0 means the default, negative means none
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := agent.Options{
		Root:            *root,
		Concurrency:     *concurrency,
		ResolveInterval: *resolve,
		GC:              gc.Options{Previous: previous, Quota: quota},
		GCInterval:      *gcInterval,
		Metrics:         reg,
		Log:             log,
	}
	opts.Fetch.Mirrors = mirrors
	opts.Fetch.LimitRate = limitRate
	opts.UploadLimitRate = limitUp
	opts.Fetch.Concurrency = *layers
	opts.Fetch.RequestTimeout = *reqTimeout
	opts.Fetch.Timeout = *pullTimeout
	if *regConfig != "" {
		store, err := credentials.NewStore(*regConfig, credentials.StoreOptions{})
		if err != nil {
			log.Error("cannot read registry credentials", "file", *regConfig, "err", err)
			return 1
		}
		opts.Fetch.Client = &auth.Client{Client: retry.DefaultClient, Cache: auth.NewCache(), Credential: credentials.Credential(store)}
	}
	if *pushConfig != "" {
		store, err := credentials.NewStore(*pushConfig, credentials.StoreOptions{})
		if err != nil {
			log.Error("cannot read push credentials", "file", *pushConfig, "err", err)
			return 1
		}
		opts.PushCredential = credentials.Credential(store)
	}
	peers, err := peerServer(*root, *peerListen, *peerTLSDir, &opts, log, reg)
	if err != nil {
		log.Error("cannot set up site peers", "err", err)
		return 1
	}
	// Always set: with no --verify-dir, an entry that asks for a signature
	// check fails rather than being activated unchecked.
	opts.Verify = trust.FromDir(*verifyDir, opts.Fetch.Client)
	var (
		a   *agent.Agent
		src agent.Source
	)
	if kubeMode {
		cfg, err := kubeConfig(*kubeconfig)
		if err != nil {
			log.Error("cannot reach Kubernetes", "err", err)
			return 1
		}
		kuberate.Set(cfg, *apiQPS, *apiBurst)
		node, err := kube.New(kube.Options{
			Config:   cfg,
			NodeName: *nodeName,
			// Read only once Run has started, when a is set.
			ArtifactDir: func(name string) string { return a.ArtifactDir(name) },
			Log:         log,
		})
		if err != nil {
			log.Error("cannot start", "err", err)
			return 1
		}
		opts.Reporter, opts.Removed, src = node, node.Removed, node
		opts.NodeName = *nodeName
	}
	a, err = agent.New(opts)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			log.Error("cannot serve metrics", "addr", *metricsAddr, "err", err)
			return 1
		}
		srv := &http.Server{Handler: handler(a, reg), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("serving metrics", "addr", ln.Addr().String())
	}
	if peers != nil {
		ln, err := net.Listen("tcp", *peerListen)
		if err != nil {
			log.Error("cannot serve peers", "addr", *peerListen, "err", err)
			return 1
		}
		go func() {
			if err := peers.Serve(ctx, ln); err != nil {
				log.Error("stopped serving peers", "err", err)
			}
		}()
		log.Info("serving peers", "addr", ln.Addr().String())
	}

	if kubeMode {
		log.Info("starting in Kubernetes mode", "root", *root, "node", *nodeName, "kubeconfig", *kubeconfig)
	} else {
		log.Info("starting", "root", *root, "desired", *desired)
		src = &fileSource{path: *desired, interval: *poll, log: log}
	}
	if err := a.Run(ctx, src); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped; partial downloads are kept for the next run")
	return 0
}

// peerServer sets up the site's peers: with a TLS directory, pulls may
// fetch from peers (opts.Fetch.PeerTLS); with a listen address as well, a
// server of the node's store, told by every pull what is arriving
// (opts.Fetch.Announce). It returns nil when the node serves no peers.
func peerServer(root, listen, tlsDir string, opts *agent.Options, log *slog.Logger, reg prometheus.Registerer) (*peer.Server, error) {
	if tlsDir == "" {
		return nil, nil
	}
	serverTLS, clientTLS, err := peer.LoadTLS(tlsDir)
	if err != nil {
		return nil, fmt.Errorf("--peer-tls-dir: %w", err)
	}
	opts.Fetch.PeerTLS = clientTLS
	if listen == "" {
		return nil, nil
	}
	// The agent's own store (agent.New opens the same directory): a
	// store is safe to share between instances.
	st, err := store.Open(filepath.Join(root, "store"), opts.Store)
	if err != nil {
		return nil, err
	}
	srv, err := peer.New(st, peer.Options{TLS: serverTLS, Log: log, Metrics: reg})
	if err != nil {
		return nil, err
	}
	opts.Fetch.Announce = srv.Announce
	return srv, nil
}

// chooseMode tells the Kubernetes mode (true) from the standalone mode, or
// says why the flags name neither or both.
func chooseMode(desired, kubeconfig, nodeName string, nodeNameSet bool, nargs int) (bool, error) {
	inCluster := os.Getenv("KUBERNETES_SERVICE_HOST") != ""
	switch {
	case nargs > 0:
		return false, errors.New("no arguments are taken, only flags")
	case desired != "" && kubeconfig != "":
		return false, errors.New("--desired (standalone mode) and --kubeconfig (Kubernetes mode) exclude each other: give one")
	case desired != "" && nodeNameSet:
		return false, errors.New("--node-name is for the Kubernetes mode; the standalone mode (--desired) takes none")
	case desired != "":
		return false, nil
	case kubeconfig == "" && !inCluster:
		return false, errors.New("choose a mode: --desired FILE.yaml (standalone), or --kubeconfig FILE --node-name NODE (Kubernetes; in a pod the in-cluster configuration is used without --kubeconfig)")
	case nodeName == "":
		return false, errors.New("the Kubernetes mode needs --node-name NODE or $NODE_NAME (in a DaemonSet, from fieldRef spec.nodeName)")
	}
	return true, nil
}

// kubeConfig reads the kubeconfig file, or the in-cluster configuration
// when there is none.
func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

func handler(a *agent.Agent, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.Statuses())
	})
	return mux
}
