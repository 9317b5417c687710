package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// Helm runs the helm binary of bin/ (or $BARGE_HELM) with its cache, config
// and data in a temporary directory and no kubeconfig, and returns stdout, or
// stdout and stderr in the error.
func Helm(args ...string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := os.Getenv("BARGE_HELM")
	if bin == "" {
		bin = filepath.Join(root, "bin", "helm")
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("helm is not at %s: run `make tools` (or `make test`)", bin)
	}
	tmp, err := os.MkdirTemp("", "barge-helm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(tmp, "no-kubeconfig"))
	for _, v := range []string{"HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"} {
		cmd.Env = append(cmd.Env, v+"="+filepath.Join(tmp, strings.ToLower(v)))
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// KubeVersion is the Kubernetes version of the control plane that `make
// tools` builds, pinned in hack/controlplane/go.mod, such as 1.37.2. A helm
// built from source without its release ldflags would otherwise render for
// v1.20, below the chart's kubeVersion.
func KubeVersion() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(root, "hack", "controlplane", "go.mod"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "k8s.io/kubernetes" {
			return strings.TrimPrefix(f[1], "v"), nil
		}
	}
	return "", fmt.Errorf("hack/controlplane/go.mod requires no k8s.io/kubernetes")
}

// RenderChart runs `helm template` on charts/barge for release in namespace,
// with extra arguments (--set, --api-versions, --show-only), and returns its
// output.
func RenderChart(release, namespace string, args ...string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	kv, err := KubeVersion()
	if err != nil {
		return "", err
	}
	base := []string{"template", release, filepath.Join(root, "charts", "barge"), "--namespace", namespace, "--kube-version", kv}
	return Helm(append(base, args...)...)
}

// Documents parses a multi-document YAML stream, skipping documents of
// comments only.
func Documents(stream string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, doc := range strings.Split(stream, "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, fmt.Errorf("YAML does not parse: %v\n%s", err, doc)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs, nil
}

// Apply creates each object, or updates it to what objs say, as an operator's
// `kubectl apply --server-side` would, creating the namespaces of namespaced
// objects first. It stops at the first object the API server refuses.
func (e *Env) Apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" {
			err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create namespace %s: %w", ns, err)
			}
		}
		o = o.DeepCopy()
		o.SetManagedFields(nil)
		o.SetResourceVersion("")
		if err := e.Client.Patch(ctx, o, client.Apply, client.FieldOwner("barge-test"), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	return nil
}
