package kube_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/bargeml/barge/api/v1alpha1"
)

// The pullers of these tests act as a user bound to exactly the rules of
// the chart's puller ClusterRole, read from the template, so every test that
// runs a puller also proves that those rules are enough (test/chart checks
// that the chart grants nothing else).
const (
	pullerUser = "system:serviceaccount:barge-system:barge-edgepuller"
	rbacChart  = "../../charts/barge/templates/edgepuller-rbac.yaml"
)

var (
	pullerOnce sync.Once
	pullerCfg  *rest.Config
	pullerErr  error
)

// pullerConfig reaches the API server as pullerUser, whom it binds to the
// chart's rules the first time.
func pullerConfig(t testing.TB) *rest.Config {
	t.Helper()
	pullerOnce.Do(func() { pullerCfg, pullerErr = bindPullerUser() })
	if pullerErr != nil {
		t.Fatal(pullerErr)
	}
	return rest.CopyConfig(pullerCfg)
}

func bindPullerUser() (*rest.Config, error) {
	rules, err := chartPullerRules()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "barge-edgepuller"}, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "barge-edgepuller"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: pullerUser}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, obj); err != nil {
			return nil, fmt.Errorf("create %T: %w", obj, err)
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: pullerUser}
	// The authorizer learns of the binding through a watch: wait for it, so
	// that no test starts with a puller backing off from a 403.
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.List(ctx, &v1alpha1.NodeArtifactList{}, client.MatchingLabels{v1alpha1.NodeLabel: node})
		if err == nil {
			return cfg, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s still cannot list NodeArtifacts 30 s after the binding: %w", pullerUser, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// chartPullerRules reads the rules of the ClusterRole in the chart's puller
// RBAC template. Its template lines carry only names and labels; without
// them the rest is plain YAML.
func chartPullerRules() ([]rbacv1.PolicyRule, error) {
	b, err := os.ReadFile(filepath.FromSlash(rbacChart))
	if err != nil {
		return nil, err
	}
	var plain []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "{{") {
			plain = append(plain, line)
		}
	}
	var found []rbacv1.PolicyRule
	n := 0
	for _, doc := range bytes.Split([]byte(strings.Join(plain, "\n")), []byte("\n---\n")) {
		var role rbacv1.ClusterRole
		if err := yaml.Unmarshal(doc, &role); err != nil {
			return nil, fmt.Errorf("%s: %w", rbacChart, err)
		}
		if role.Kind == "ClusterRole" {
			found, n = role.Rules, n+1
		}
	}
	if n != 1 || len(found) == 0 {
		return nil, fmt.Errorf("%s: want one ClusterRole with rules, found %d (rules %v)", rbacChart, n, found)
	}
	return found, nil
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
