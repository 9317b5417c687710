package kube_test

import (
	"context"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
)

// The chart's admission policy holds a node's puller to its own node: with
// edge-1's token it may write the status of edge-1's NodeArtifacts and drop
// their files finalizer, and the API server refuses everything else RBAC
// would let through, with a message that says why, changing nothing.
func TestNodeScope(t *testing.T) {
	s := newSite(t)
	m := s.push("models/scope", map[string]string{"model.onnx": "scope"})
	mine := s.create("mine", node, m)
	theirs := s.create("theirs", "edge-2", m)
	c, err := client.New(pullerConfig(t), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	merge := func(patch string) client.Patch { return client.RawPatch("application/merge-patch+json", []byte(patch)) }

	before := map[string]*v1alpha1.NodeArtifact{}
	for _, name := range []string{"mine", "theirs"} {
		before[name], _ = s.get(name)
	}
	for _, tt := range []struct {
		what, object, patch string
		status              bool
		why                 string
	}{
		{"patch the spec of its own NodeArtifact", "mine", `{"spec":{"reference":"evil.example.com/x@` + m.digest.String() + `"}}`, false, "may not change the spec"},
		{"remove the node label of its own NodeArtifact", "mine", `{"metadata":{"labels":{"barge.dev/node":null}}}`, false, "may not change the spec, labels"},
		{"add a label to its own NodeArtifact", "mine", `{"metadata":{"labels":{"extra":"x"}}}`, false, "may not change the spec, labels"},
		{"annotate its own NodeArtifact", "mine", `{"metadata":{"annotations":{"x":"y"}}}`, false, "annotations"},
		{"add a finalizer to its own NodeArtifact", "mine", `{"metadata":{"finalizers":["barge.dev/files","example.com/hold"]}}`, false, "may not change the finalizers"},
		{"patch the status of another node's NodeArtifact", "theirs", `{"status":{"phase":"Ready","digest":"` + m.digest.String() + `"}}`, true, "of node edge-2"},
		{"relabel another node's NodeArtifact", "theirs", `{"metadata":{"labels":{"barge.dev/node":"edge-1"}}}`, false, "of node edge-2"},
		{"remove the finalizer of another node's NodeArtifact", "theirs", `{"metadata":{"finalizers":null}}`, false, "of node edge-2"},
	} {
		obj := &v1alpha1.NodeArtifact{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: tt.object}}
		if tt.status {
			err = c.Status().Patch(ctx, obj, merge(tt.patch))
		} else {
			err = c.Patch(ctx, obj, merge(tt.patch))
		}
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("edge-1's puller may %s: %v; want Forbidden saying %q", tt.what, err, tt.why)
		}
	}
	for name, was := range before {
		now, err := s.get(name)
		if err != nil {
			t.Fatal(err)
		}
		if now.ResourceVersion != was.ResourceVersion || !equality.Semantic.DeepEqual(now.Spec, was.Spec) {
			t.Errorf("a refused write changed NodeArtifact %s: %+v, was %+v", name, now, was)
		}
	}

	if err := c.Delete(ctx, mine); !apierrors.IsForbidden(err) {
		t.Errorf("edge-1's puller may delete its NodeArtifact: %v", err)
	}
	if err := c.Status().Patch(ctx, mine, merge(`{"status":{"phase":"Pulling","message":"pulling"}}`)); err != nil {
		t.Errorf("edge-1's puller may not patch its own status: %v", err)
	}
	peers := `{"status":{"sources":{"origin":10,"peers":90},"droppedPeers":[{"node":"edge-3","reason":"Corrupt","message":"bad bytes"}]}}`
	if err := c.Status().Patch(ctx, mine, merge(peers)); err != nil {
		t.Errorf("edge-1's puller may not write its own status.sources and status.droppedPeers: %v", err)
	}
	if err := c.Status().Patch(ctx, theirs, merge(peers)); !apierrors.IsForbidden(err) {
		t.Errorf("edge-1's puller may write status.sources of edge-2's NodeArtifact: %v", err)
	}
	if err := c.Patch(ctx, mine, merge(`{"metadata":{"finalizers":null}}`)); err != nil {
		t.Errorf("edge-1's puller may not remove its own files finalizer: %v", err)
	}
	got, err := s.get("mine")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Sources == nil || got.Status.Sources.Peers != 90 || len(got.Status.DroppedPeers) != 1 {
		t.Errorf("after its own writes NodeArtifact mine has sources %+v and dropped peers %+v", got.Status.Sources, got.Status.DroppedPeers)
	}
	if got.Status.Phase != v1alpha1.NodeArtifactPulling || len(got.Finalizers) != 0 {
		t.Errorf("after its own writes NodeArtifact mine has phase %q and finalizers %v; want Pulling and none", got.Status.Phase, got.Finalizers)
	}
}

// A puller's service-account token that is not bound to a Pod on a node (a
// token made by hand, or a legacy Secret's) carries no node name: the policy
// refuses every write with it, even one RBAC allows.
func TestNodeScopeNeedsANodeBoundToken(t *testing.T) {
	s := newSite(t)
	m := s.push("models/unbound", map[string]string{"model.onnx": "unbound"})
	na := s.create("unbound", node, m)
	pullerConfig(t) // installs the chart's policy
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tr, err := cs.CoreV1().ServiceAccounts(pullerNamespace).CreateToken(ctx, pullerAccount, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.TokenConfig(tr.Status.Token), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Status().Patch(ctx, na, client.RawPatch("application/merge-patch+json", []byte(`{"status":{"phase":"Ready"}}`)))
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "names no node") {
		t.Errorf("a status patch with an unbound puller token: %v; want Forbidden saying the token names no node", err)
	}
}

// Through KubeEdge's MetaServer with cloudhub authorization on, cloudcore
// sends a node's writes impersonating system:node:<node>; the same policy
// holds that identity to its node's NodeArtifacts.
func TestNodeScopeKubeEdgeNodeIdentity(t *testing.T) {
	s := newSite(t)
	m := s.push("models/kubeedge", map[string]string{"model.onnx": "kubeedge"})
	mine := s.create("mine", node, m)
	theirs := s.create("theirs", "edge-2", m)
	pullerConfig(t) // installs the chart's policy
	ctx := context.Background()
	// What docs/security.md tells KubeEdge operators to grant the nodes.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{GenerateName: "kubeedge-nodes-"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"nodeartifacts", "nodeartifacts/status"}, Verbs: []string{"get", "list", "watch", "patch"}},
	}}
	if err := env.Client.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kubeedge-nodes-"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:nodes"}},
	}
	if err := env.Client.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Client.Delete(ctx, binding); env.Client.Delete(ctx, role) })
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:node:" + node, Groups: []string{"system:nodes", "system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	status := client.RawPatch("application/merge-patch+json", []byte(`{"status":{"message":"via cloudcore"}}`))
	waitFor(t, "system:nodes to be allowed to patch NodeArtifact status", func() bool {
		return c.Status().Patch(ctx, mine, status) == nil
	})
	err = c.Status().Patch(ctx, theirs, status)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "of node edge-2") {
		t.Errorf("system:node:%s patching edge-2's status: %v; want the policy's refusal", node, err)
	}
	err = c.Patch(ctx, mine, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"reference":"evil.example.com/x@`+m.digest.String()+`"}}`)))
	if !apierrors.IsForbidden(err) {
		t.Errorf("system:node:%s patching its own spec: %v; want Forbidden", node, err)
	}
}
