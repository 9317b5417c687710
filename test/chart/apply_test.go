package chart

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/internal/testenv"
)

// Every object the chart renders is accepted by a real API server, in each
// variant that needs no CRD beyond Barge's own, and the pullers' admission
// policy is bound and enforced.
func TestChartApplies(t *testing.T) {
	for name, args := range map[string][]string{
		"defaults": nil,
		"everything but ServiceMonitors": {
			"--set", "edgePuller.registryConfigSecret=regcred,registry.htpasswd.secretName=htpasswd",
			"--set", "edgePuller.mirrors={cache.local:5000},edgePuller.limitRate=2M,edgePuller.quota=20G",
			"--set", "registry.service.type=NodePort",
			"--set", "edgePuller.peers.enabled=true",
			"--set-json", `controller.servingImages={"onnx":{"image":"registry.example.com/onnx:1","port":8001}}`,
		},
		"registry replicas on s3": {
			"--set", "registry.replicas=2,registry.storage.type=s3,registry.storage.s3.bucket=models,registry.storage.s3.credentialsSecret=s3-keys",
		},
	} {
		t.Run(name, func(t *testing.T) {
			ns := env.Namespace(t)
			// Cluster-scoped names carry the release name: one per variant.
			rel := "apply-" + ns[len(ns)-5:]
			out, err := testenv.RenderChart(rel, ns, args...)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := testenv.Documents(out)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := env.Apply(ctx, objs); err != nil {
				t.Fatalf("the API server refuses the rendered chart: %v", err)
			}
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.GetKind()]++
				got := &unstructured.Unstructured{}
				got.SetGroupVersionKind(o.GroupVersionKind())
				if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
					t.Errorf("%s %s after apply: %v", o.GetKind(), o.GetName(), err)
				}
			}
			if kinds["ValidatingAdmissionPolicy"] != 1 || kinds["ValidatingAdmissionPolicyBinding"] != 1 {
				t.Fatalf("rendered kinds %v: want one ValidatingAdmissionPolicy and its binding", kinds)
			}
			checkPolicy(t, ns, objs)
		})
	}
}

// checkPolicy: the binding names the policy with Deny, and the API server
// enforces it: the puller's service account, with a token bound to a Pod on
// one node, is refused a status patch of another node's NodeArtifact, which
// its ClusterRole alone would allow. (The policy's status.typeChecking is
// written by kube-controller-manager, which these tests do not run.)
func checkPolicy(t *testing.T, ns string, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	var policyName, account string
	for _, o := range objs {
		switch {
		case o.GetKind() == "ValidatingAdmissionPolicyBinding":
			b := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), b); err != nil {
				t.Fatal(err)
			}
			if len(b.Spec.ValidationActions) != 1 || b.Spec.ValidationActions[0] != admissionregistrationv1.Deny {
				t.Errorf("binding %s: validationActions %v, want [Deny]", b.Name, b.Spec.ValidationActions)
			}
			policyName = b.Spec.PolicyName
		case o.GetKind() == "ServiceAccount" && o.GetLabels()["app.kubernetes.io/component"] == "edgepuller":
			account = o.GetName()
		}
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: policyName}, &admissionregistrationv1.ValidatingAdmissionPolicy{}); err != nil {
		t.Fatalf("the binding names policy %q: %v", policyName, err)
	}
	digest := "sha256:" + strings.Repeat("a", 64)
	other := &v1alpha1.NodeArtifact{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "elsewhere", Labels: map[string]string{v1alpha1.NodeLabel: "node-b"}},
		Spec:       v1alpha1.NodeArtifactSpec{NodeName: "node-b", Reference: "example.com/m@" + digest, Digest: digest},
	}
	if err := env.Client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	cfg, err := env.PodToken(ctx, ns, account, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"status":{"phase":"Ready","digest":"`+digest+`"}}`))
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := c.Status().Patch(ctx, other, patch)
		if apierrors.IsForbidden(err) && strings.Contains(err.Error(), policyName) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("60 s after apply, node-a's puller patching node-b's status: %v; want the refusal of policy %s", err, policyName)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
