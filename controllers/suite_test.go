package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/internal/testenv"
	"github.com/bargeml/barge/registry"
)

// The package's tests share one control plane, one registry and one
// manager running both controllers. The manager acts as a user that holds
// only the rules of the +kubebuilder:rbac markers, so every test also proves
// that those rules are enough.
var (
	env *testenv.Env
	k8s client.Client // cluster admin, uncached: what a user or a puller does
	reg *registry.Registry
	// sites is the manager's placer, whose site policy (the site flags)
	// a test may change with useSites.
	sites *placer
)

const (
	controllerUser = "system:serviceaccount:barge-system:barge-controller"
	// testRequestTimeout is the controller's --registry-timeout here: long
	// for the in-process registry, short for the tests of a silent one.
	testRequestTimeout = 5 * time.Second
	// testDeletionGrace is the controller's --deletion-grace-period here.
	testDeletionGrace = 8 * time.Second
	testBargeImage    = "example.com/bargeml/barge:test"
	// testPeerPort is the controller's --peer-port here: peers are on,
	// with the default --site-label; nodes without it have none.
	testPeerPort = 5050
)

func TestMain(m *testing.M) { os.Exit(runSuite(m)) }

func runSuite(m *testing.M) int {
	e, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := e.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	env, k8s = e, e.Client

	root, err := os.MkdirTemp("", "barge-controllers-registry-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(root)
	reg, err = registry.Start(context.Background(), registry.Options{Addr: "127.0.0.1:0", Root: root})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer reg.Close(context.Background())

	ctx, cancel := context.WithCancel(context.Background())
	stopped, err := startManager(ctx, e)
	if err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	cancel()
	<-stopped
	return code
}

// startManager grants the controller user the rules of the markers and runs
// the controllers as that user.
func startManager(ctx context.Context, e *testenv.Env) (<-chan struct{}, error) {
	rules, err := markerRules("manager.go")
	if err != nil {
		return nil, err
	}
	// The pull secrets rule, granted cluster-wide as the chart's
	// controller.secretAccess.scope=cluster does; test/chart proves the
	// per-namespace default.
	secrets, err := markerRules("resolve.go")
	if err != nil {
		return nil, err
	}
	rules = append(rules, secrets...)
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "barge-controller"}, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "barge-controller"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: controllerUser}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := e.Client.Create(ctx, obj); err != nil {
			return nil, fmt.Errorf("create %T: %w", obj, err)
		}
	}
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: controllerUser}
	skip := true
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 e.Scheme,
		Cache:                  CacheOptions(),
		Metrics:                server.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: &skip},
		// Elected, so that the Lease rules are proven too.
		LeaderElection:          true,
		LeaderElectionID:        "barge-controller.barge.dev",
		LeaderElectionNamespace: "default",
	})
	if err != nil {
		return nil, err
	}
	sites, err = setup(mgr, Options{RetryInterval: time.Second, MaxCreatesPerPass: 4, BargeImage: testBargeImage, RequestTimeout: testRequestTimeout,
		DeletionGracePeriod: testDeletionGrace, PeerPort: testPeerPort})
	if err != nil {
		return nil, err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	return stopped, nil
}

var markerPattern = regexp.MustCompile(`(?m)^// \+kubebuilder:rbac:(.*)$`)

// markerRules reads the +kubebuilder:rbac markers of a file as RBAC rules,
// the way controller-gen does.
func markerRules(file string) ([]rbacv1.PolicyRule, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var rules []rbacv1.PolicyRule
	for _, m := range markerPattern.FindAllStringSubmatch(string(b), -1) {
		var r rbacv1.PolicyRule
		for _, kv := range strings.Split(m[1], ",") {
			k, v, _ := strings.Cut(kv, "=")
			items := strings.Split(strings.Trim(v, `"`), ";")
			switch k {
			case "groups":
				r.APIGroups = items
			case "resources":
				r.Resources = items
			case "verbs":
				r.Verbs = items
			default:
				return nil, fmt.Errorf("marker %q: unknown key %s", m[0], k)
			}
		}
		rules = append(rules, r)
	}
	if len(rules) == 0 {
		return nil, errors.New("no +kubebuilder:rbac markers in " + file)
	}
	return rules, nil
}

// --- waiting ---

const waitTimeout = 60 * time.Second

// eventually retries check until it returns nil, and fails the test with
// its last error after waitTimeout.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, waitTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// conditionIs checks one condition of a list; reason and substring are
// checked when not empty.
func conditionIs(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason, substring string) error {
	c := apimeta.FindStatusCondition(conds, typ)
	switch {
	case c == nil && status == "":
		return nil
	case c == nil:
		return fmt.Errorf("no %s condition in %s", typ, describe(conds))
	case status == "":
		return fmt.Errorf("%s condition present, want none: %s", typ, describe(conds))
	case c.Status != status || (reason != "" && c.Reason != reason) || !strings.Contains(c.Message, substring):
		return fmt.Errorf("want %s=%s %s containing %q; have %s", typ, status, reason, substring, describe(conds))
	}
	return nil
}

func describe(conds []metav1.Condition) string {
	var parts []string
	for _, c := range conds {
		parts = append(parts, fmt.Sprintf("%s=%s %s %q", c.Type, c.Status, c.Reason, c.Message))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// conds are the expected conditions of a row: Ready's status and reason, and
// whether Stalled and Reconciling are present.
type conds struct {
	ready       metav1.ConditionStatus
	reason      string
	message     string
	stalled     bool
	reconciling bool
}

func (w conds) check(gen, observed int64, got []metav1.Condition) error {
	if observed != gen {
		return fmt.Errorf("observedGeneration %d, generation %d", observed, gen)
	}
	if err := conditionIs(got, v1alpha1.ReadyCondition, w.ready, w.reason, w.message); err != nil {
		return err
	}
	stalled, reconciling := metav1.ConditionStatus(""), metav1.ConditionStatus("")
	if w.stalled {
		stalled = metav1.ConditionTrue
	}
	if w.reconciling {
		reconciling = metav1.ConditionTrue
	}
	if err := conditionIs(got, v1alpha1.StalledCondition, stalled, "", ""); err != nil {
		return err
	}
	return conditionIs(got, v1alpha1.ReconcilingCondition, reconciling, "", "")
}

// --- objects ---

var nodeSeq struct {
	sync.Mutex
	n int
}

// nodes creates Nodes named after the test with the given labels and
// deletes them when it ends. Nodes are cluster-wide, so every test labels
// its own with barge-test=<namespace> and selects on that.
func nodes(t *testing.T, ns string, labels map[string]string, count int) []string {
	t.Helper()
	var names []string
	for i := 0; i < count; i++ {
		nodeSeq.Lock()
		nodeSeq.n++
		name := fmt.Sprintf("node-%d-%s", nodeSeq.n, ns)
		nodeSeq.Unlock()
		if len(name) > 63 {
			name = name[:63]
		}
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"barge-test": ns}}}
		for k, v := range labels {
			n.Labels[k] = v
		}
		if err := k8s.Create(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), n) })
		names = append(names, name)
	}
	return names
}

func get(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
}

// nodeArtifacts lists the NodeArtifacts of a namespace by node.
func nodeArtifacts(t *testing.T, ns string) map[string]*v1alpha1.NodeArtifact {
	t.Helper()
	var list v1alpha1.NodeArtifactList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]*v1alpha1.NodeArtifact{}
	for i := range list.Items {
		out[list.Items[i].Spec.NodeName] = &list.Items[i]
	}
	return out
}

// puller does what a node's puller does to a NodeArtifact's status.
func puller(t *testing.T, na *v1alpha1.NodeArtifact, phase v1alpha1.NodeArtifactPhase, dgst, message string) {
	t.Helper()
	before := na.DeepCopy()
	na.Status.Phase, na.Status.Digest, na.Status.Message = phase, dgst, message
	na.Status.ObservedGeneration = na.Generation
	if err := k8s.Status().Patch(context.Background(), na, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

// releaseFiles is the puller removing its finalizer after deleting files.
func releaseFiles(t *testing.T, na *v1alpha1.NodeArtifact) {
	t.Helper()
	before := na.DeepCopy()
	na.Finalizers = nil
	if err := k8s.Patch(context.Background(), na, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
}

// --- registry content ---

// repoName is a repository of the shared registry for one test.
func repoName(t *testing.T, name string) string {
	s := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	return reg.Host() + "/" + s + "/" + name
}

func openRepo(t *testing.T, ref string) *remote.Repository {
	t.Helper()
	repo, err := remote.NewRepository(ref)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	repo.SkipReferrersGC = true // deletes are off, as in barge serve and the chart's registry
	return repo
}

// pushModel packs files as a model, tags it and returns its descriptor.
func pushModel(t *testing.T, repo *remote.Repository, tag string, files map[string]string, meta artifact.Metadata) ocispec.Descriptor {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	desc, err := artifact.Pack(context.Background(), repo, dir, artifact.PackOptions{Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	tagAs(t, repo, desc, tag)
	return desc
}

// pushDataset packs a small dataset whose config holds cfg.
func pushDataset(t *testing.T, repo *remote.Repository, tag string, cfg datasetConfig) ocispec.Descriptor {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "train.jsonl"), []byte(fmt.Sprintf("{\"n\": %d}\n", cfg.NumberOfSamples)), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cfg)
	desc, err := artifact.PackDataset(context.Background(), repo, dir, b, artifact.DatasetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tagAs(t, repo, desc, tag)
	return desc
}

// pushImage pushes a minimal container image.
func pushImage(t *testing.T, repo *remote.Repository, tag string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfgDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, cfg)
	if err := repo.Push(ctx, cfgDesc, bytes.NewReader(cfg)); err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfgDesc, Layers: []ocispec.Descriptor{}})
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, m)
	if err := repo.Push(ctx, desc, bytes.NewReader(m)); err != nil {
		t.Fatal(err)
	}
	tagAs(t, repo, desc, tag)
	return desc
}

// pushGeneric pushes what plain `oras push` makes: an unknown artifact
// type, an empty config, a file layer by title.
func pushGeneric(t *testing.T, repo *remote.Repository, tag string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	data := []byte("weights")
	layer := content.NewDescriptorFromBytes(ocispec.MediaTypeImageLayer, data)
	layer.Annotations = map[string]string{ocispec.AnnotationTitle: "model.bin"}
	if err := repo.Push(ctx, layer, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	empty := ocispec.DescriptorEmptyJSON
	if err := repo.Push(ctx, empty, bytes.NewReader(empty.Data)); err != nil {
		t.Fatal(err)
	}
	empty.Data = nil
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.unknown.artifact.v1", Config: empty, Layers: []ocispec.Descriptor{layer}})
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, m)
	if err := repo.Push(ctx, desc, bytes.NewReader(m)); err != nil {
		t.Fatal(err)
	}
	tagAs(t, repo, desc, tag)
	return desc
}

func tagAs(t *testing.T, repo *remote.Repository, desc ocispec.Descriptor, tag string) {
	t.Helper()
	if tag == "" {
		return
	}
	if err := repo.Tag(context.Background(), desc, tag); err != nil {
		t.Fatal(err)
	}
}

// change updates the spec of m as a user does, again on a conflict with
// the controller's own writes.
func change(t *testing.T, m *v1alpha1.InferenceModel, edit func()) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		get(t, m)
		edit()
		return k8s.Update(context.Background(), m)
	})
	if err != nil {
		t.Fatal(err)
	}
}
