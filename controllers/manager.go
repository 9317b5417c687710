package controllers

import (
	"context"
	"fmt"
	"net/http"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"oras.land/oras-go/v2/registry/remote/credentials"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
)

// The controller's whole access: it reads the objects users write and
// patches only their finalizers and status (finalizers/update lets it set
// blockOwnerDeletion on what it owns); it owns NodeArtifacts, Deployments,
// Services, the edge serving DaemonSets and the ConfigMap that gives a joint
// model's edge part its cloud part's address, written by patch and
// server-side apply; it lists the DaemonSets' pods and deletes one to restart
// it on a new version; it watches Nodes (labels, and InternalIPs for a
// site's peers); it creates and deletes a TrainingModel's Jobs (a trainer
// pinned to each participant, an aggregation in the cloud), never patches
// them; a Lease for --leader-elect. The pull Secrets the objects name are
// read one by one, with the rule of the marker in resolve.go, which the
// chart grants per namespace.
//
// +kubebuilder:rbac:groups=barge.dev,resources=inferencemodels;datasets;trainingmodels,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=barge.dev,resources=inferencemodels/status;datasets/status;trainingmodels/status,verbs=patch
// +kubebuilder:rbac:groups=barge.dev,resources=inferencemodels/finalizers;datasets/finalizers;trainingmodels/finalizers,verbs=update
// +kubebuilder:rbac:groups=barge.dev,resources=nodeartifacts,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch;delete
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=list;watch;create;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update

// DefaultBargeImage is the image of the init container that pulls a cloud
// model's files, without its tag; the controller's version is the tag.
const DefaultBargeImage = "ghcr.io/bargeml/barge"

// Options configures the controllers. The zero value works.
type Options struct {
	// BargeImage runs `barge pull` in the init container of cloud models,
	// and `barge aggregate` in a TrainingModel's aggregation Jobs; if
	// empty, DefaultBargeImage:latest.
	BargeImage string
	// ServingImages chooses the serving container of cloud models by
	// frameworkType; if nil, DefaultServingImages().
	ServingImages ServingImages
	// TrainerImages chooses a TrainingModel's trainer by frameworkType
	// when it names no image; if nil, DefaultTrainerImages().
	TrainerImages TrainerImages
	// RetryInterval is how soon a pass that failed on something that may
	// heal (a registry that is down) is tried again; if <= 0, 30 s. It is
	// never longer than the object's spec.interval.
	RetryInterval time.Duration
	// MaxConcurrentReconciles per kind; if <= 0, 4, so one slow registry does
	// not hold up every object.
	MaxConcurrentReconciles int
	// HTTPClient sends registry requests; if nil, http.DefaultTransport with
	// RequestTimeout.
	HTTPClient *http.Client
	// RequestTimeout bounds each registry request, body included; if <= 0,
	// 30 s.
	RequestTimeout time.Duration
	// ReconcileTimeout bounds one reconcile pass, however many requests it
	// makes; if <= 0, 2 minutes. The status patch that reports the pass gets
	// its own few seconds after it.
	ReconcileTimeout time.Duration
	// AllowedRegistries, when not empty, are the only registries (host or
	// host:port) objects may name; others are Stalled and never contacted.
	AllowedRegistries []string
	// DeletionGracePeriod is how long a deletion waits for a node's puller to
	// remove the files before the owner's status names the node as blocking
	// it; a NotReady node's NodeArtifact is released once it has passed. If
	// <= 0, 10 minutes.
	DeletionGracePeriod time.Duration
	// ServiceAccount is the controller's own namespace/name, for messages
	// that say what RBAC to grant it; optional.
	ServiceAccount string
	// Credentials are the controller's own registry credentials, for
	// objects without spec.pullSecretRef; anonymous when nil.
	Credentials credentials.Store
	// LocalDatasetRoots, when not empty, are the only host directories
	// (and their subdirectories) a TrainingModel's spec.localDataset may
	// name; any absolute path outside EdgeRoot when empty.
	LocalDatasetRoots []string
	// EdgeRoot is the edge pullers' --root on the nodes: an edge server
	// mounts <EdgeRoot>/artifacts/<namespace>/<name>/versions/<digest>;
	// if empty, v1alpha1.DefaultEdgeRoot.
	EdgeRoot string
	// SiteLabel is the Node label whose value names a node's site; if
	// empty, DefaultSiteLabel. A node without it is a site of its own.
	SiteLabel string
	// PeerPort is the port of the edge pullers' peer servers (the chart's
	// edgePuller.peers.port), reached at each Node's InternalIP; 0 turns
	// peers off, and NodeArtifacts list none.
	PeerPort int
	// SeedsPerSite is how many nodes of a site fetch a digest from the
	// origin, the others from them; if <= 0, 1.
	SeedsPerSite int
	// MaxCreatesPerPass bounds the NodeArtifacts one pass of an
	// InferenceModel creates; the model is taken again at once for the
	// rest. If <= 0, 200.
	MaxCreatesPerPass int
	// MetricsRefresh is how long status.metrics of an unchanged digest are
	// kept before its metrics referrers are read again; if <= 0,
	// DefaultMetricsRefresh.
	MetricsRefresh time.Duration
	// MaxPeers is how many peers one NodeArtifact lists; if <= 0, 4, and
	// at most v1alpha1.MaxPeers.
	MaxPeers int
	// NodeReportDelay is how long a NodeArtifact's change waits before its
	// owner's pass, so that the reports of many nodes make one pass and
	// one status write; if 0, DefaultNodeReportDelay, if negative, none.
	NodeReportDelay time.Duration
}

func (o Options) withDefaults() Options {
	if o.BargeImage == "" {
		o.BargeImage = DefaultBargeImage + ":latest"
	}
	if o.ServingImages == nil {
		o.ServingImages = DefaultServingImages()
	}
	if o.TrainerImages == nil {
		o.TrainerImages = DefaultTrainerImages()
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = 30 * time.Second
	}
	if o.MaxCreatesPerPass <= 0 {
		o.MaxCreatesPerPass = 200
	}
	if o.NodeReportDelay == 0 {
		o.NodeReportDelay = DefaultNodeReportDelay
	}
	if o.MaxConcurrentReconciles <= 0 {
		o.MaxConcurrentReconciles = 4
	}
	if o.ReconcileTimeout <= 0 {
		o.ReconcileTimeout = 2 * time.Minute
	}
	if o.DeletionGracePeriod <= 0 {
		o.DeletionGracePeriod = 10 * time.Minute
	}
	if o.EdgeRoot == "" {
		o.EdgeRoot = v1alpha1.DefaultEdgeRoot
	}
	if o.SiteLabel == "" {
		o.SiteLabel = DefaultSiteLabel
	}
	if o.SeedsPerSite <= 0 {
		o.SeedsPerSite = 1
	}
	if o.MaxPeers <= 0 {
		o.MaxPeers = 4
	}
	o.MaxPeers = min(o.MaxPeers, v1alpha1.MaxPeers)
	return o
}

// Setup adds the InferenceModel, Dataset and TrainingModel controllers to
// mgr. Build mgr with CacheOptions, so that it caches only the Deployments,
// Services, ConfigMaps and Jobs Barge manages.
func Setup(mgr ctrl.Manager, opts Options) error {
	_, err := setup(mgr, opts)
	return err
}

// setup is Setup, and gives the suite the placer, whose site policy its
// tests change.
func setup(mgr ctrl.Manager, opts Options) (*placer, error) {
	opts = opts.withDefaults()
	if err := indexNodeArtifacts(context.Background(), mgr); err != nil {
		return nil, fmt.Errorf("index NodeArtifacts by owner: %w", err)
	}
	resolver := &Resolver{Secrets: mgr.GetAPIReader(), HTTPClient: opts.HTTPClient, RequestTimeout: opts.RequestTimeout,
		AllowedRegistries: opts.AllowedRegistries, ServiceAccount: opts.ServiceAccount, Credentials: opts.Credentials,
		MetricsRefresh: opts.MetricsRefresh}
	pl := &placer{client: mgr.GetClient(), reader: mgr.GetAPIReader(), scheme: mgr.GetScheme(), typedNodes: opts.PeerPort > 0}
	pol := opts.sitePolicy()
	pl.sites.Store(&pol)
	models := &InferenceModelReconciler{
		Client:   mgr.GetClient(),
		reader:   mgr.GetAPIReader(),
		recorder: mgr.GetEventRecorder("barge-controller"),
		resolver: resolver,
		placer:   pl,
		opts:     opts,
	}
	if err := models.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	datasets := &DatasetReconciler{
		Client:   mgr.GetClient(),
		recorder: mgr.GetEventRecorder("barge-controller"),
		resolver: resolver,
		placer:   pl,
		opts:     opts,
	}
	if err := datasets.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	trainings := &TrainingModelReconciler{
		Client:   mgr.GetClient(),
		reader:   mgr.GetAPIReader(),
		recorder: mgr.GetEventRecorder("barge-controller"),
		resolver: resolver,
		placer:   pl,
		opts:     opts,
	}
	return pl, trainings.SetupWithManager(mgr)
}

// CacheOptions restricts the manager's cache of Deployments, Services,
// ConfigMaps, DaemonSets, Jobs and Pods to those Barge manages, so a large
// cluster's workloads and configuration are not all held in the controller's
// memory. Pods are watched as metadata only, and only to wake their model.
// (The ConfigMaps spec.verify names are read uncached, one by one.) Nodes
// are slimmed to their labels and InternalIPs (slimNode). No cached object
// keeps its managedFields, which nothing here reads: a NodeArtifact written
// by the controller and by its puller carries two entries, a third of its
// size, times 10,000 NodeArtifacts in a 1,000-model fleet.
func CacheOptions() cache.Options {
	managed := labels.SelectorFromSet(labels.Set{managedByLabel: managedByValue})
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&appsv1.Deployment{}: {Label: managed},
		&corev1.Service{}:    {Label: managed},
		&corev1.ConfigMap{}:  {Label: managed},
		&appsv1.DaemonSet{}:  {Label: managed},
		&corev1.Pod{}:        {Label: managed},
		&batchv1.Job{}:       {Label: managed},
		&corev1.Node{}:       {Transform: slimNode},
	}}
}
