package kube_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/internal/testenv"
)

// The pullers of these tests run as the chart's puller service account with
// the token a kubelet mounts in its Pod on node edge-1, under the chart's own
// RBAC and admission policy, rendered by helm and applied to the API server.
// Every test that runs a puller so proves that the chart lets a puller do its
// work (test/chart checks that it grants nothing else), and the policy tests
// that it lets a node do nothing more.
const (
	pullerNamespace = "barge-system"
	pullerAccount   = "barge-edgepuller"
	pullerUser      = "system:serviceaccount:" + pullerNamespace + ":" + pullerAccount
)

var (
	chartOnce sync.Once
	chartErr  error
)

// pullerConfig reaches the API server as the puller of node.
func pullerConfig(t testing.TB) *rest.Config { return nodePullerConfig(t, node) }

// nodePullerConfig reaches the API server as the puller of a node, installing
// the chart's puller RBAC and policy the first time.
func nodePullerConfig(t testing.TB, nodeName string) *rest.Config {
	t.Helper()
	chartOnce.Do(func() { chartErr = installPullerChart() })
	if chartErr != nil {
		t.Fatal(chartErr)
	}
	cfg, err := env.PodToken(context.Background(), pullerNamespace, pullerAccount, nodeName)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// installPullerChart applies the chart's puller RBAC and admission policy and
// waits until the API server enforces both: the authorizer and the policy
// plugin learn of new objects through watches.
func installPullerChart() error {
	out, err := testenv.RenderChart("barge", pullerNamespace,
		"--show-only", "templates/edgepuller-rbac.yaml", "--show-only", "templates/edgepuller-policy.yaml")
	if err != nil {
		return err
	}
	objs, err := testenv.Documents(out)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := env.Apply(ctx, objs); err != nil {
		return err
	}
	probe := &v1alpha1.NodeArtifact{
		ObjectMeta: metav1.ObjectMeta{Namespace: pullerNamespace, Name: "policy-probe", Labels: map[string]string{v1alpha1.NodeLabel: "probe"}},
		Spec: v1alpha1.NodeArtifactSpec{NodeName: "probe", Reference: "example.com/probe@sha256:" + strings.Repeat("0", 64),
			Digest: "sha256:" + strings.Repeat("0", 64)},
	}
	if err := env.Client.Create(ctx, probe); err != nil {
		return fmt.Errorf("create the policy probe: %w", err)
	}
	cfg, err := env.PodToken(ctx, pullerNamespace, pullerAccount, node)
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		return err
	}
	// Allowed by RBAC, refused by the policy: another node's status.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := c.Status().Patch(ctx, probe, client.RawPatch("application/merge-patch+json", []byte(`{"status":{"message":"probe"}}`)))
		if apierrors.IsForbidden(err) && strings.Contains(err.Error(), "barge-edgepuller of node "+node) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("60 s after installing the chart's puller policy, a status patch of another node's NodeArtifact as %s on %s got %v, want the policy's refusal", pullerUser, node, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The puller's user really is held to the chart's rules: it reads
// NodeArtifacts and patches them and their status, and is refused the rest,
// so the tests that run pullers as this user prove something.
func TestPullerUserHoldsOnlyTheChartRules(t *testing.T) {
	s := newSite(t)
	m := s.push("models/rbac", map[string]string{"model.onnx": "rbac"})
	na := s.create("rbac", node, m)
	c, err := client.New(pullerConfig(t), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if err := c.Get(ctx, client.ObjectKeyFromObject(na), &v1alpha1.NodeArtifact{}); err != nil {
		t.Errorf("get NodeArtifact: %v", err)
	}
	if err := c.List(ctx, &v1alpha1.NodeArtifactList{}); err != nil {
		t.Errorf("list NodeArtifacts in every namespace: %v", err)
	}
	if err := c.Status().Patch(ctx, na, client.RawPatch("application/merge-patch+json", []byte(`{"status":{"message":"hello"}}`))); err != nil {
		t.Errorf("merge-patch status: %v", err)
	}

	other := &v1alpha1.NodeArtifact{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "forged", Labels: map[string]string{v1alpha1.NodeLabel: node}},
		Spec:       v1alpha1.NodeArtifactSpec{NodeName: node, Reference: m.ref, Digest: m.digest.String(), Insecure: true},
	}
	cur, _ := s.get("rbac")
	cur.Spec.Reference = "example.com/elsewhere@" + m.digest.String()
	for _, tt := range []struct {
		what string
		err  error
	}{
		{"create a NodeArtifact", c.Create(ctx, other)},
		{"update (PUT) a NodeArtifact", c.Update(ctx, cur)},
		{"delete a NodeArtifact", c.Delete(ctx, na)},
		{"update (PUT) status", c.Status().Update(ctx, cur)},
		{"get a Secret", c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "regcred"}, &corev1.Secret{})},
		{"list Secrets", c.List(ctx, &corev1.SecretList{}, client.InNamespace(s.ns))},
		{"list Nodes", c.List(ctx, &corev1.NodeList{})},
		{"list InferenceModels", c.List(ctx, &v1alpha1.InferenceModelList{})},
		{"patch an InferenceModel status", c.Status().Patch(ctx, &v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "x"}}, client.RawPatch("application/merge-patch+json", []byte(`{}`)))},
	} {
		if !apierrors.IsForbidden(tt.err) {
			t.Errorf("%s as %s: %v, want Forbidden", tt.what, pullerUser, tt.err)
		}
	}
}
