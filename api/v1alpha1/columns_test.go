package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1alpha1 "github.com/bargeml/barge/api/v1alpha1"
)

// TestCRDs checks what kubectl shows: every kind has a status subresource and
// the printer columns, and the server fills them from a real object.
func TestCRDs(t *testing.T) {
	for _, tc := range []struct {
		crd     string
		columns []string // name=jsonPath, in order
	}{
		{"inferencemodels.barge.dev", []string{
			"Version=.status.resolved.version", "Digest=.status.resolved.shortDigest",
			"Nodes=.status.nodes.desired", "Ready=.status.nodes.ready", "Serving=.status.nodes.serving",
			"Failed=.status.nodes.failed", "Rollout=.status.rollout.phase",
			"Layer=.spec.deployToLayer", `Status=.status.conditions[?(@.type=="Ready")].message`,
			"Age=.metadata.creationTimestamp"}},
		{"nodeartifacts.barge.dev", []string{
			"Node=.spec.nodeName", "Phase=.status.phase", "Done=.status.bytesDone", "Total=.status.bytesTotal",
			"Reference=.spec.reference", "Message=.status.message", "Age=.metadata.creationTimestamp"}},
		{"datasets.barge.dev", []string{
			"Version=.status.resolved.version", "Digest=.status.resolved.shortDigest", "Format=.status.format",
			"Samples=.status.numberOfSamples", "Nodes=.status.nodes.desired", "Ready=.status.nodes.ready",
			"Failed=.status.nodes.failed", `Status=.status.conditions[?(@.type=="Ready")].message`,
			"Age=.metadata.creationTimestamp"}},
	} {
		t.Run(tc.crd, func(t *testing.T) {
			crd := get(t, client.ObjectKey{Name: tc.crd}, &apiextensionsv1.CustomResourceDefinition{})
			if crd.Spec.Scope != apiextensionsv1.NamespaceScoped || len(crd.Spec.Versions) != 1 {
				t.Fatalf("scope %s, %d versions; want Namespaced, 1", crd.Spec.Scope, len(crd.Spec.Versions))
			}
			v := crd.Spec.Versions[0]
			if v.Subresources == nil || v.Subresources.Status == nil {
				t.Error("no status subresource")
			}
			var got []string
			for _, c := range v.AdditionalPrinterColumns {
				got = append(got, c.Name+"="+c.JSONPath)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.columns) {
				t.Errorf("printer columns\n got %q\nwant %q", got, tc.columns)
			}
		})
	}
}

func TestInferenceModelTable(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	m := &bargev1alpha1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "resnet"},
		Spec:       bargev1alpha1.InferenceModelSpec{Artifact: "registry.example.com/models/resnet50", TargetVersion: ">=1 <2"},
	}
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.Status.Resolved = &bargev1alpha1.ResolvedArtifact{Version: "1.4.0", Digest: digestA, ShortDigest: digestA[7:19]}
	m.Status.Nodes = bargev1alpha1.NodeCounts{Desired: 3, Ready: 2}
	if err := env.Client.Status().Update(ctx, m); err != nil {
		t.Fatal(err)
	}

	table := getTable(t, "/apis/barge.dev/v1alpha1/namespaces/"+ns+"/inferencemodels/resnet")
	if len(table.Rows) != 1 {
		t.Fatalf("%d rows, want 1", len(table.Rows))
	}
	cells := map[string]any{}
	for i, c := range table.ColumnDefinitions {
		cells[c.Name] = table.Rows[0].Cells[i]
	}
	want := map[string]any{"Name": "resnet", "Version": "1.4.0", "Digest": "aaaaaaaaaaaa", "Nodes": 3.0, "Ready": 2.0, "Layer": "edge"}
	for k, v := range want {
		if cells[k] != v {
			t.Errorf("column %s = %v (%T), want %v", k, cells[k], cells[k], v)
		}
	}
}

// getTable asks the API server for what `kubectl get` prints.
func getTable(t *testing.T, path string) *metav1.Table {
	t.Helper()
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	base, _, err := rest.DefaultServerUrlFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, base.JoinPath(path).String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s as Table: %s: %s", path, resp.Status, body)
	}
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil {
		t.Fatalf("decode Table: %v", err)
	}
	return &table
}
