// Command barge-controller runs Barge's controllers: InferenceModels and
// Datasets become digests, NodeArtifacts for the edge pullers, and cloud
// Deployments and Services; TrainingModels become rounds of NodeArtifacts,
// trainer Jobs on the nodes and aggregation Jobs in the cloud. The flags
// are controller-runtime's usual ones plus the images cloud models and
// aggregations run with.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/pprof"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"oras.land/oras-go/v2/registry/remote/credentials"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/controllers"
	"github.com/bargeml/barge/internal/kuberate"
)

// version is set at build time with -ldflags "-X main.version=..."; it is
// the tag of the default --barge-image.
var version = "dev"

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "barge-controller:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("barge-controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config.RegisterFlags(fs) // --kubeconfig
	var (
		metricsAddr = fs.String("metrics-bind-address", ":8080", `address of the Prometheus /metrics endpoint; "0" disables it`)
		probeAddr   = fs.String("health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
		leaderElect = fs.Bool("leader-elect", false, "elect a leader, so that only one of several replicas reconciles")
		bargeImage  = fs.String("barge-image", defaultBargeImage(), "image whose `barge pull` init container fetches a cloud model's files, and whose `barge aggregate fedavg` a TrainingModel's aggregation Jobs run")
		serving     = fs.String("serving-images", "", servingHelp())
		regTimeout  = fs.Duration("registry-timeout", 30*time.Second, "bound on each registry request (manifest, token, a page of tags or referrers), body included")
		passTimeout = fs.Duration("reconcile-timeout", 2*time.Minute, "bound on one reconcile pass of one object")
		allowed     = fs.String("allowed-registries", "", "comma-separated `host[:port],...` of the only registries objects may name; any registry when empty")
		grace       = fs.Duration("deletion-grace-period", 10*time.Minute, "how long a deletion waits for a node's puller before the object's status names the node; a NotReady node's files finalizer is then released")
		account     = fs.String("service-account", "", "the controller's own `namespace/name`, named in messages that say what RBAC to grant it")
		regConfig   = fs.String("registry-config", "", "registry credentials in Docker config format (a mounted kubernetes.io/dockerconfigjson Secret) for objects without spec.pullSecretRef; anonymous when empty")
		dataRoots   = fs.String("local-dataset-roots", "", "comma-separated absolute `dirs` on the nodes, the only ones a TrainingModel's spec.localDataset may name; any directory outside --edge-root when empty")
		edgeRoot    = fs.String("edge-root", v1alpha1.DefaultEdgeRoot, "the edge pullers' --root on the nodes: an edge server or a trainer mounts its model from `DIR`/artifacts/NAMESPACE/NAME/versions/DIGEST, a trainer writes its update under DIR/uploads")
		siteLabel   = fs.String("site-label", controllers.DefaultSiteLabel, "Node `label` whose value names a node's site: the nodes of one site fetch a digest from each other; a node without it has no peers")
		peerPort    = fs.Int("peer-port", 0, "`port` of the edge pullers' peer servers (their --peer-listen), reached at each Node's InternalIP; 0 turns peers off")
		seeds       = fs.Int("seeds-per-site", 1, "how many nodes of a site fetch a digest from the origin; the others fetch from them")
		maxPeers    = fs.Int("max-peers", 4, fmt.Sprintf("how many peers one NodeArtifact lists, 1 to %d", v1alpha1.MaxPeers))
		apiQPS      = fs.Float64("kube-api-qps", 200, "client-side limit of Kubernetes API requests per second (creating a model's NodeArtifacts on 1,000 nodes is 1,000 requests); 0 for none, leaving the API server's priority and fairness to pace the controller")
		metricsRef  = fs.Duration("metrics-refresh", controllers.DefaultMetricsRefresh, "how long the status.metrics of an unchanged digest are kept before its metrics referrers are read again; a re-resolve that finds the same digest otherwise costs the registry one HEAD")
		profiling   = fs.Bool("profiling", false, "serve Go's /debug/pprof/ on the metrics address, for measuring the controller; off in production, as it shows the process's memory and stacks")
		workers     = fs.Int("concurrent-reconciles", 16, "passes run at once per kind (InferenceModel, Dataset, TrainingModel); a pass mostly waits on the API server and registries, so more workers make a 1,000-model rollout faster without more CPU")
		apiBurst    = fs.Int("kube-api-burst", 400, "requests above --kube-api-qps allowed in a burst")
	)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts), zap.WriteTo(stderr)))

	images, err := controllers.LoadServingImages(*serving)
	if err != nil {
		return err
	}
	registries, err := controllers.ParseRegistries(*allowed)
	if err != nil {
		return fmt.Errorf("--allowed-registries: %w", err)
	}
	for name, d := range map[string]time.Duration{"registry-timeout": *regTimeout, "reconcile-timeout": *passTimeout, "deletion-grace-period": *grace, "metrics-refresh": *metricsRef} {
		if d <= 0 {
			return fmt.Errorf("--%s %s: must be positive", name, d)
		}
	}
	if !strings.HasPrefix(*edgeRoot, "/") {
		return fmt.Errorf("--edge-root %q: must be an absolute path on the nodes, the edge pullers' --root", *edgeRoot)
	}
	if err := checkSites(*siteLabel, *peerPort, *seeds, *maxPeers); err != nil {
		return err
	}
	if err := kuberate.Check(*apiQPS, *apiBurst); err != nil {
		return err
	}
	if *workers < 1 {
		return fmt.Errorf("--concurrent-reconciles %d: must be at least 1", *workers)
	}
	roots, err := parseRoots(*dataRoots)
	if err != nil {
		return fmt.Errorf("--local-dataset-roots: %w", err)
	}
	var creds credentials.Store
	if *regConfig != "" {
		if creds, err = credentials.NewStore(*regConfig, credentials.StoreOptions{}); err != nil {
			return fmt.Errorf("--registry-config %s: %w", *regConfig, err)
		}
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	kuberate.Set(cfg, *apiQPS, *apiBurst)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         controllers.CacheOptions(),
		Metrics:                       server.Options{BindAddress: *metricsAddr, ExtraHandlers: profilingHandlers(*profiling)},
		HealthProbeBindAddress:        *probeAddr,
		LeaderElection:                *leaderElect,
		LeaderElectionID:              "barge-controller.barge.dev",
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if err := controllers.Setup(mgr, controllers.Options{
		BargeImage:              *bargeImage,
		ServingImages:           images,
		RequestTimeout:          *regTimeout,
		ReconcileTimeout:        *passTimeout,
		AllowedRegistries:       registries,
		DeletionGracePeriod:     *grace,
		ServiceAccount:          *account,
		Credentials:             creds,
		EdgeRoot:                path.Clean(*edgeRoot),
		LocalDatasetRoots:       roots,
		SiteLabel:               *siteLabel,
		PeerPort:                *peerPort,
		SeedsPerSite:            *seeds,
		MaxPeers:                *maxPeers,
		MetricsRefresh:          *metricsRef,
		MaxConcurrentReconciles: *workers,
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("barge-controller").Info("starting", "version", version, "bargeImage", *bargeImage, "allowedRegistries", registries, "peerPort", *peerPort, "siteLabel", *siteLabel)
	return mgr.Start(ctx)
}

// checkSites checks the site flags.
func checkSites(label string, port, seeds, maxPeers int) error {
	if errs := validation.IsQualifiedName(label); len(errs) > 0 {
		return fmt.Errorf("--site-label %q: not a label key: %s", label, strings.Join(errs, "; "))
	}
	switch {
	case port < 0 || port > 65535:
		return fmt.Errorf("--peer-port %d: give a port from 1 to 65535, or 0 to turn peers off", port)
	case seeds < 1:
		return fmt.Errorf("--seeds-per-site %d: must be at least 1", seeds)
	case maxPeers < 1 || maxPeers > v1alpha1.MaxPeers:
		return fmt.Errorf("--max-peers %d: must be from 1 to %d", maxPeers, v1alpha1.MaxPeers)
	}
	return nil
}

// profilingHandlers are net/http/pprof's, when on.
func profilingHandlers(on bool) map[string]http.Handler {
	if !on {
		return nil
	}
	return map[string]http.Handler{
		"/debug/pprof/":        http.HandlerFunc(pprof.Index),
		"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
		"/debug/pprof/heap":    pprof.Handler("heap"),
	}
}

// parseRoots reads a comma-separated list of absolute directories.
func parseRoots(s string) ([]string, error) {
	var out []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.HasPrefix(item, "/") || path.Clean(item) == "/" {
			return nil, fmt.Errorf("%q: give absolute directories other than /", item)
		}
		out = append(out, path.Clean(item))
	}
	return out, nil
}

func defaultBargeImage() string {
	tag := version
	if tag == "" || tag == "dev" || strings.HasSuffix(tag, "-dirty") {
		tag = "latest"
	}
	return controllers.DefaultBargeImage + ":" + tag
}

// servingHelp lists the built-in serving runtimes in the flag's help.
func servingHelp() string {
	var b strings.Builder
	b.WriteString("YAML `file` mapping a frameworkType to the serving runtime of cloud models of that framework " +
		"({image, command, args, env, port}; $(MODEL_DIR) and $(MODEL_NAME) are expanded), laid over the built-in ones:")
	images := controllers.DefaultServingImages()
	for _, name := range slices.Sorted(maps.Keys(images)) {
		rt := images[name]
		fmt.Fprintf(&b, "\n  %s: %s, port %d", name, rt.Image, rt.Port)
		if len(rt.Args) > 0 {
			fmt.Fprintf(&b, ", args %s", strings.Join(rt.Args, " "))
		}
	}
	return b.String()
}
