package chart

import (
	"context"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/controllers"
	"github.com/bargeml/barge/internal/testenv"
)

// TestControllerSecretAccessOnAPIServer applies the chart's controller RBAC
// to a real API server and runs the controllers as the chart's
// ServiceAccount: it gets a Secret where the chart grants it, may never list
// or watch Secrets, and an InferenceModel whose pull secret lies in a
// namespace without a grant is Stalled with the RBAC to add; once that RBAC
// (a Role naming the one Secret) exists, the Secret is read.
func TestControllerSecretAccessOnAPIServer(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := env.Client

	objs := render(t, "--set", "controller.secretAccess.namespaces={team-a}")
	for _, ns := range []string{namespace, "team-a", "team-b"} {
		if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "regcred"}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("v")}}
		if err := admin.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range objs {
		component := o.GetLabels()["app.kubernetes.io/component"]
		if component != "controller" && component != "controller-secrets" {
			continue
		}
		var obj client.Object
		switch o.GetKind() {
		case "ServiceAccount":
			obj = decode[corev1.ServiceAccount](t, o)
		case "ClusterRole":
			obj = decode[rbacv1.ClusterRole](t, o)
		case "ClusterRoleBinding":
			obj = decode[rbacv1.ClusterRoleBinding](t, o)
		case "Role":
			obj = decode[rbacv1.Role](t, o)
		case "RoleBinding":
			obj = decode[rbacv1.RoleBinding](t, o)
		default:
			continue
		}
		if err := admin.Create(ctx, obj); err != nil {
			t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	sa := objs.one(t, "ServiceAccount", "controller").GetName()
	user := "system:serviceaccount:" + namespace + ":" + sa
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}}
	asController, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}

	// Get where granted, and only there.
	for ns, allowed := range map[string]bool{namespace: true, "team-a": true, "team-b": false} {
		err := asController.Get(ctx, client.ObjectKey{Namespace: ns, Name: "regcred"}, &corev1.Secret{})
		if allowed && err != nil {
			t.Errorf("get secret %s/regcred as the controller: %v", ns, err)
		}
		if !allowed && !apierrors.IsForbidden(err) {
			t.Errorf("get secret %s/regcred as the controller: %v, want Forbidden", ns, err)
		}
	}
	// Never a list or a watch, in a granted namespace or across the cluster.
	for _, ns := range []string{namespace, "team-a", ""} {
		if err := asController.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
			t.Errorf("list secrets in %q as the controller: %v, want Forbidden", ns, err)
		}
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "watch", Resource: "secrets"}}}
		if err := admin.Create(ctx, review); err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed {
			t.Errorf("the controller may watch secrets in %q", ns)
		}
	}

	// The controllers themselves, under exactly these rules.
	skip := true // -count=N runs this test N times in one process
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: env.Scheme, Cache: controllers.CacheOptions(),
		Metrics: server.Options{BindAddress: "0"}, HealthProbeBindAddress: "0", Controller: config.Controller{SkipNameValidation: &skip}})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(mgr, controllers.Options{ServiceAccount: namespace + "/" + sa, RetryInterval: time.Second}); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	defer func() { cancel(); <-stopped }()

	model := func(ns string) *v1alpha1.InferenceModel {
		return &v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m"},
			Spec: v1alpha1.InferenceModelSpec{Artifact: "127.0.0.1:1/models/m", TargetVersion: "1.0.0", Insecure: true,
				PullSecretRef: &v1alpha1.LocalObjectReference{Name: "regcred"}}}
	}
	stalled := func(m *v1alpha1.InferenceModel, reason, message string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if err := admin.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
				t.Fatal(err)
			}
			c := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.StalledCondition)
			if c != nil && c.Status == metav1.ConditionTrue && c.Reason == reason && strings.Contains(c.Message, message) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s/%s: Stalled %+v, want %s with %q", m.Namespace, m.Name, c, reason, message)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Read in a granted namespace: the controller sees it is no Docker config.
	granted := model("team-a")
	if err := admin.Create(ctx, granted); err != nil {
		t.Fatal(err)
	}
	stalled(granted, "InvalidPullSecret", `secret team-a/regcred named by spec.pullSecretRef has type "Opaque"`)

	denied := model("team-b")
	if err := admin.Create(ctx, denied); err != nil {
		t.Fatal(err)
	}
	stalled(denied, "PullSecretForbidden", "the controller may not read secret team-b/regcred named by spec.pullSecretRef")
	stalled(denied, "PullSecretForbidden", "grant ServiceAccount "+namespace+"/"+sa+" get on it, with `kubectl create role barge-pull-secret -n team-b --verb=get --resource=secrets --resource-name=regcred` "+
		"and `kubectl create rolebinding barge-pull-secret -n team-b --role=barge-pull-secret --serviceaccount="+namespace+":"+sa+"`")

	// What those commands create: a Role naming the one Secret.
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "barge-pull-secret"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}, ResourceNames: []string{"regcred"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "barge-pull-secret"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: namespace}}}
	for _, o := range []client.Object{role, binding} {
		if err := admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	before := denied.DeepCopy()
	denied.Annotations = map[string]string{"example.com/retry": "1"} // wakes it before its interval
	if err := admin.Patch(ctx, denied, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	stalled(denied, "InvalidPullSecret", `secret team-b/regcred named by spec.pullSecretRef has type "Opaque"`)
}
