package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"DIR": "/m", "EMPTY": ""}
	for in, want := range map[string]string{
		"$(DIR)/model.onnx":   "/m/model.onnx",
		"--model=$(DIR)/x":    "--model=/m/x",
		"$(MISSING)/x":        "$(MISSING)/x",
		"$$(DIR)":             "$(DIR)",
		"a$$b":                "a$b",
		"$(EMPTY)x":           "x",
		"$(DIR":               "$(DIR",
		"cost $5":             "cost $5",
		"trailing $":          "trailing $",
		"$(DIR)$(DIR)":        "/m/m",
		"no variables at all": "no variables at all",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMountRewrite(t *testing.T) {
	mt := mountTable{{path: "/models/m/preprocess", dir: "/tmp/pre"}, {path: "/models/m", dir: "/tmp/m"}}
	for in, want := range map[string]string{
		"/models/m":                 "/tmp/m",
		"/models/m/model.onnx":      "/tmp/m/model.onnx",
		"/models/m/preprocess/a.py": "/tmp/pre/a.py",
		"/models/mm":                "/models/mm",
		"--model=/models/m/x":       "--model=/models/m/x",
		"relative/models/m":         "relative/models/m",
	} {
		if got := mt.rewrite(in); got != want {
			t.Errorf("rewrite(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFieldValue(t *testing.T) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"b": "2", "a": "1"},
		Annotations: map[string]string{"barge.dev/labels": "cat\ndog\n"}}, Spec: corev1.PodSpec{NodeName: "n"}}
	for path, want := range map[string]string{
		"metadata.name": "p", "spec.nodeName": "n", "status.podIP": "127.0.0.1",
		"metadata.annotations['barge.dev/labels']": "cat\ndog\n",
		"metadata.labels['missing']":               "",
		"metadata.labels":                          "a=\"1\"\nb=\"2\"\n",
	} {
		if got, err := fieldValue(p, path); err != nil || got != want {
			t.Errorf("fieldValue(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := fieldValue(p, "spec.containers[0].image"); err == nil || !strings.Contains(err.Error(), "does not resolve") {
		t.Errorf("an unknown field path: %v", err)
	}
}

// buildModelServer builds the model server into a directory of the test.
func buildModelServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "modelserver")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/bargeml/barge/internal/testenv/modelserver").CombinedOutput()
	if err != nil {
		t.Fatalf("build the model server: %v\n%s", err, out)
	}
	return bin
}

// TestProcessKubelet runs a serving DaemonSet's pods as processes: the
// hostPath, ConfigMap and downward API mounts mapped to directories, the
// env resolved, a missing directory holding a pod, a crash loop, and a
// deleted pod's process stopped.
func TestProcessKubelet(t *testing.T) {
	ctx := context.Background()
	server := buildModelServer(t)
	ns := env.Namespace(t)
	nodes := []string{ns + "-a", ns + "-b"}
	roots := map[string]string{}
	for _, n := range nodes {
		if err := env.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { env.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}) })
		roots[n] = filepath.Join(t.TempDir(), n)
	}
	const edgeRoot, version = "/var/lib/edge", "artifacts/ns/model-m/versions/sha256-1"
	// Node b holds the files; node a does not yet.
	writeTree(t, filepath.Join(roots[nodes[1]], version), map[string]string{"model.bin": "weights b", "preprocess/prep.py": "print(1)"})

	k := StartProcessKubelet(t, env.Client, ns, ProcessConfig{EdgeRoot: edgeRoot, NodeRoot: func(n string) string { return roots[n] }}, nodes...)
	ds := servingDaemonSet(ns, server, edgeRoot+"/"+version)
	if err := env.Client.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}

	// Without the ConfigMap node b's pod waits for the volume.
	waitPod(t, ns, nodes[1], "ContainerCreating without the ConfigMap", func(p *corev1.Pod) bool {
		w := waiting(p)
		return w != nil && w.Reason == "ContainerCreating" && strings.Contains(w.Message, `configmap "joint" not found`) && !podIsReady(p)
	})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "joint"}, Data: map[string]string{"cloud-url": "http://cloud:8080"}}
	if err := env.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}

	// Node b serves; node a waits for its directory, as a kubelet waits
	// for a hostPath of type Directory.
	b := answer(t, k, nodes[1])
	want := modelAnswer{Digest: "sha256:1", Model: "weights b", Preprocess: map[string]string{"prep.py": "print(1)"},
		Labels: []string{"cat", "dog"}, CloudURL: "http://cloud:8080", CloudURLFile: "http://cloud:8080"}
	if !b.same(want) {
		t.Errorf("node b answers %+v, want %+v", b, want)
	}
	waitPod(t, ns, nodes[0], "ContainerCreating without its directory", func(p *corev1.Pod) bool {
		w := waiting(p)
		return w != nil && w.Reason == "ContainerCreating" && strings.Contains(w.Message, "is not a directory") && p.Status.Phase == corev1.PodPending
	})
	writeTree(t, filepath.Join(roots[nodes[0]], version), map[string]string{"model.bin": "weights a", "preprocess/prep.py": "print(2)"})
	waitPod(t, ns, nodes[0], "Ready once its directory exists", podIsReady)
	if a := answer(t, k, nodes[0]); a.Model != "weights a" || a.Preprocess["prep.py"] != "print(2)" {
		t.Errorf("node a answers %+v, want its own weights", a)
	}

	// A crashing process: CrashLoopBackOff, restarts counted, not Ready.
	writeTree(t, filepath.Join(roots[nodes[1]], version), map[string]string{"CRASH": ""})
	old := k.Addr(ds.Name, nodes[1])
	deletePod(t, ns, nodes[1])
	waitPod(t, ns, nodes[1], "a new pod in CrashLoopBackOff", func(p *corev1.Pod) bool {
		w, cs := waiting(p), p.Status.ContainerStatuses
		return w != nil && w.Reason == "CrashLoopBackOff" && cs[0].RestartCount >= 2 && !podIsReady(p) &&
			cs[0].LastTerminationState.Terminated != nil && cs[0].LastTerminationState.Terminated.ExitCode == 1
	})
	if _, err := http.Get("http://" + old + "/"); err == nil {
		t.Errorf("the deleted pod's process on node b still answers at %s", old)
	}
	if addr := k.Addr(ds.Name, nodes[1]); addr == old || addr == "" {
		t.Errorf("node b's new pod has address %q, the old one had %q", addr, old)
	}
}

type modelAnswer struct {
	Name, Digest, Model    string
	Preprocess             map[string]string
	Labels                 []string
	CloudURL, CloudURLFile string
}

func (a modelAnswer) same(b modelAnswer) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// answer waits for the server on node to answer, and returns what it says.
func answer(t *testing.T, k *Kubelet, node string) modelAnswer {
	t.Helper()
	var a modelAnswer
	eventually(t, "the server on "+node+" to answer", func() error {
		addr := k.Addr("server", node)
		if addr == "" {
			return fmt.Errorf("no pod")
		}
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&a)
	})
	return a
}

func servingDaemonSet(ns, server, hostPath string) *appsv1.DaemonSet {
	dir := corev1.HostPathDirectory
	labels := map[string]string{"app": "server"}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server"},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"labels": "cat\ndog\n"}},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name: "server", Image: "example.com/server:1",
						Command: []string{server},
						Args:    []string{"-model", "$(MODEL_DIR)/model.bin", "-cloud-url-file", "/etc/joint/cloud-url"},
						Env: []corev1.EnvVar{
							{Name: "BARGE_MODEL_DIGEST", Value: "sha256:1"},
							{Name: "BARGE_MODEL_DIR", Value: "/models/m"},
							{Name: "MODEL_DIR", Value: "$(BARGE_MODEL_DIR)"},
							{Name: "BARGE_PREPROCESS_DIR", Value: "/models/m/preprocess"},
							{Name: "BARGE_LABELS_FILE", Value: "/etc/labels/labels.txt"},
							{Name: "BARGE_CLOUD_URL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: "joint"}, Key: "cloud-url"}}},
						},
						Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "model", MountPath: "/models/m", ReadOnly: true},
							{Name: "labels", MountPath: "/etc/labels", ReadOnly: true},
							{Name: "joint", MountPath: "/etc/joint", ReadOnly: true},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "model", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostPath, Type: &dir}}},
						{Name: "labels", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
							{Path: "labels.txt", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['labels']"}}}}}},
						{Name: "joint", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "joint"}}}},
					},
				},
			},
		},
	}
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// livePod is the pod on node that is not being deleted.
func livePod(t *testing.T, ns, node string) *corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := env.Client.List(context.Background(), &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.Spec.NodeName == node && p.DeletionTimestamp == nil {
			return p
		}
	}
	return nil
}

func waitPod(t *testing.T, ns, node, what string, cond func(*corev1.Pod) bool) {
	t.Helper()
	eventually(t, "the pod on "+node+": "+what, func() error {
		p := livePod(t, ns, node)
		if p == nil {
			return fmt.Errorf("no pod")
		}
		if !cond(p) {
			return fmt.Errorf("status %+v", p.Status)
		}
		return nil
	})
}

func deletePod(t *testing.T, ns, node string) {
	t.Helper()
	p := livePod(t, ns, node)
	if p == nil {
		t.Fatalf("no pod on %s", node)
	}
	if err := env.Client.Delete(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod "+p.Name+" to be gone", func() error {
		err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(p), &corev1.Pod{})
		if client.IgnoreNotFound(err) != nil || err == nil {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

func waiting(p *corev1.Pod) *corev1.ContainerStateWaiting {
	if len(p.Status.ContainerStatuses) != 1 {
		return nil
	}
	return p.Status.ContainerStatuses[0].State.Waiting
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
