package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

func TestLoadServingImages(t *testing.T) {
	write := func(s string) string {
		p := filepath.Join(t.TempDir(), "serving.yaml")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := LoadServingImages(write("ONNX:\n  image: registry.example.com/ort:1.20\n  args: [--model=$(MODEL_DIR)/model.onnx]\n  port: 9000\nvllm:\n  image: vllm/vllm-openai:v0.6\n  port: 8000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got["onnx"].Image != "registry.example.com/ort:1.20" || got["onnx"].Port != 9000 || got["vllm"].Port != 8000 || got["triton"].Image == "" {
		t.Errorf("loaded %+v: want onnx replaced, vllm added, the other defaults kept", got)
	}
	defaults, err := LoadServingImages("")
	if err != nil || len(defaults) != len(DefaultServingImages()) {
		t.Errorf("no file: %v, %v", defaults, err)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"onnx:\n  port: 9000\n", "onnx has no image"},
		{"onnx:\n  image: x\n", "port 0"},
		{"onnx:\n  image: x\n  port: 1\n  volume: y\n", "unknown field"},
	} {
		if _, err := LoadServingImages(write(bad.yaml)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: error %v, want %q", bad.yaml, err, bad.want)
		}
	}
}

func TestDeploymentProgress(t *testing.T) {
	dep := func(gen, observed int64, updated, available int32) *appsv1ac.DeploymentApplyConfiguration {
		d := appsv1ac.Deployment("m", "ns").WithGeneration(gen).WithSpec(appsv1ac.DeploymentSpec().WithReplicas(2)).
			WithStatus(appsv1ac.DeploymentStatus().WithObservedGeneration(observed).WithUpdatedReplicas(updated).WithAvailableReplicas(available))
		return d
	}
	for _, tt := range []struct {
		d    *appsv1ac.DeploymentApplyConfiguration
		ok   bool
		want string
	}{
		{dep(2, 1, 2, 2), false, "generation 2"},
		{dep(2, 2, 1, 2), false, "1 of 2 replicas updated"},
		{dep(2, 2, 2, 1), false, "1 of 2 replicas available"},
		{dep(2, 2, 2, 2), true, ""},
	} {
		ok, msg := deploymentProgress(tt.d)
		if ok != tt.ok || !strings.Contains(msg, tt.want) {
			t.Errorf("progress = %v %q, want %v %q", ok, msg, tt.ok, tt.want)
		}
	}
}

func cloudModel(ns, name string) *v1alpha1.InferenceModel {
	m := &v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	m.Spec.DeployToLayer = v1alpha1.LayerCloud
	m.Spec.Insecure = true
	return m
}

func waitDeployment(t *testing.T, ns, name string) (*appsv1.Deployment, *corev1.Service) {
	t.Helper()
	dep, svc := &appsv1.Deployment{}, &corev1.Service{}
	eventually(t, "Deployment and Service", func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, dep); err != nil {
			return err
		}
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, svc)
	})
	return dep, svc
}

// TestCloudArtifact: model files in the cloud layer run in the serving image
// of their framework, after an init container pulled them by digest into a
// volume the server reads; the Service's address is status.url.
func TestCloudArtifact(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "resnet")
	d := pushModel(t, openRepo(t, ref), "1.0.0", map[string]string{"model.onnx": "w"}, artifact.Metadata{Framework: "onnx"}).Digest.String()
	create(t, dockerConfigSecret(ns, "creds", reg.Host(), "u", "p"))
	m := cloudModel(ns, "resnet")
	m.Spec.Artifact, m.Spec.TargetVersion = ref, "1.0.0"
	m.Spec.ModelName = "resnet50"
	m.Spec.Replicas = ptr(int32(3))
	m.Spec.PullSecretRef = &v1alpha1.LocalObjectReference{Name: "creds"}
	create(t, m)

	dep, svc := waitDeployment(t, ns, "resnet")
	get(t, m)
	onnx := DefaultServingImages()["onnx"]
	spec := dep.Spec.Template.Spec
	if *dep.Spec.Replicas != 3 || len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
		t.Fatalf("deployment %+v", dep.Spec)
	}
	pull, serve := spec.InitContainers[0], spec.Containers[0]
	wantArgs := []string{"pull", "--cache", "/cache", "--plain-http", ref + "@" + d, "/models/resnet50"}
	if pull.Image != testBargeImage || !slices.Equal(pull.Args, wantArgs) {
		t.Errorf("init container %s %v, want %s %v", pull.Image, pull.Args, testBargeImage, wantArgs)
	}
	if !hasEnv(pull.Env, "DOCKER_CONFIG", "/docker-config") || !hasMount(pull.VolumeMounts, "registry-credentials", "/docker-config") {
		t.Errorf("init container reads no credentials: env %v mounts %v", pull.Env, pull.VolumeMounts)
	}
	if serve.Image != onnx.Image || !slices.Equal(serve.Args, onnx.Args) || serve.Ports[0].ContainerPort != onnx.Port {
		t.Errorf("serving container %s %v %v, want the onnx runtime", serve.Image, serve.Args, serve.Ports)
	}
	if !hasEnv(serve.Env, "MODEL_DIR", "/models/resnet50") || !hasEnv(serve.Env, "MODEL_NAME", "resnet50") || !hasMount(serve.VolumeMounts, "models", "/models") {
		t.Errorf("serving container env %v mounts %v", serve.Env, serve.VolumeMounts)
	}
	if !hasMount(pull.VolumeMounts, "models", "/models") || !hasMount(pull.VolumeMounts, "cache", "/cache") {
		t.Errorf("init container mounts %v", pull.VolumeMounts)
	}
	if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "creds" {
		t.Errorf("imagePullSecrets %v", spec.ImagePullSecrets)
	}
	checkOwned(t, m, dep, svc)
	if p := svc.Spec.Ports; len(p) != 1 || p[0].Port != onnx.Port || p[0].TargetPort != intstr.FromString("http") {
		t.Errorf("service ports %v", p)
	}
	if svc.Spec.Selector[modelPodLabel] != "resnet" || dep.Spec.Template.Labels[modelPodLabel] != "resnet" {
		t.Errorf("service selector %v, pod labels %v", svc.Spec.Selector, dep.Spec.Template.Labels)
	}
	eventually(t, "url and progress", func() error {
		get(t, m)
		if want := fmt.Sprintf("http://resnet.%s.svc:%d", ns, onnx.Port); m.Status.URL != want {
			return fmt.Errorf("url %q, want %q", m.Status.URL, want)
		}
		// No deployment controller runs in envtest: the model waits for it.
		return conds{ready: metav1.ConditionFalse, reason: ReasonDeploymentWait, message: "Deployment resnet", reconciling: true}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})

	// The Deployment becomes available: the model is Ready.
	before := dep.DeepCopy()
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3, ReadyReplicas: 3}
	if err := k8s.Status().Patch(context.Background(), dep, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Ready", func() error {
		get(t, m)
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "serving at http://resnet."}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
}

// TestCloudImage: a container image runs pinned to the digest its tag had.
func TestCloudImage(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "serving")
	d := pushImage(t, openRepo(t, ref), "2.1").Digest.String()
	m := cloudModel(ns, "detector")
	m.Spec.Image = ref + ":2.1"
	m.Spec.FrameworkType = "triton"
	create(t, m)
	dep, svc := waitDeployment(t, ns, "detector")
	spec := dep.Spec.Template.Spec
	if len(spec.InitContainers) != 0 || len(spec.Containers) != 1 || spec.Containers[0].Image != ref+"@"+d {
		t.Fatalf("pod spec %+v, want the image pinned to %s", spec, d)
	}
	if *dep.Spec.Replicas != 1 {
		t.Errorf("replicas %d, want 1 when unset", *dep.Spec.Replicas)
	}
	if port := DefaultServingImages()["triton"].Port; svc.Spec.Ports[0].Port != port {
		t.Errorf("service port %d, want triton's %d", svc.Spec.Ports[0].Port, port)
	}
	checkOwned(t, m, dep, svc)
	eventually(t, "resolved", func() error {
		get(t, m)
		if r := m.Status.Resolved; r == nil || r.Digest != d || r.Version != "2.1" {
			return fmt.Errorf("resolved %+v", r)
		}
		return nil
	})
}

// TestCloudRefusals: what cannot run in the cloud stalls with a reason.
func TestCloudRefusals(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	pushModel(t, openRepo(t, ref), "1", map[string]string{"m.bin": "w"}, artifact.Metadata{})
	unknown := cloudModel(ns, "unknown-framework")
	unknown.Spec.Artifact, unknown.Spec.TargetVersion, unknown.Spec.FrameworkType = ref, "1", "caffe"
	taken := cloudModel(ns, "taken")
	taken.Spec.Artifact, taken.Spec.TargetVersion, taken.Spec.FrameworkType = ref, "1", "onnx"
	create(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}})
	for _, tt := range []struct {
		m    *v1alpha1.InferenceModel
		want conds
	}{
		{unknown, conds{ready: metav1.ConditionFalse, reason: ReasonNoServingImage, message: `no serving image for frameworkType "caffe": set spec.frameworkType to one of onnx, pytorch, tensorflow, triton`, stalled: true}},
		{taken, conds{ready: metav1.ConditionFalse, reason: ReasonObjectConflict, message: "a Service named taken already exists", stalled: true}},
	} {
		create(t, tt.m)
		t.Run(tt.m.Name, func(t *testing.T) {
			eventually(t, "conditions", func() error {
				get(t, tt.m)
				return tt.want.check(tt.m.Generation, tt.m.Status.ObservedGeneration, tt.m.Status.Conditions)
			})
		})
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"}}
	get(t, svc)
	if len(svc.OwnerReferences) != 0 || svc.Spec.Ports[0].Port != 80 {
		t.Errorf("the user's Service was changed: %+v", svc)
	}
}

func checkOwned(t *testing.T, m *v1alpha1.InferenceModel, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if !metav1.IsControlledBy(o, m) || o.GetLabels()[managedByLabel] != managedByValue {
			t.Errorf("%T %s: owners %v labels %v", o, o.GetName(), o.GetOwnerReferences(), o.GetLabels())
		}
	}
}

func hasEnv(env []corev1.EnvVar, name, value string) bool {
	return slices.ContainsFunc(env, func(e corev1.EnvVar) bool { return e.Name == name && e.Value == value })
}

func hasMount(mounts []corev1.VolumeMount, name, path string) bool {
	return slices.ContainsFunc(mounts, func(m corev1.VolumeMount) bool { return m.Name == name && m.MountPath == path })
}

func ptr[T any](v T) *T { return &v }

// TestLayerSwitch: moving a model from the edge to the cloud removes its
// NodeArtifacts, and moving it back removes its Deployment and Service.
func TestLayerSwitch(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	pushModel(t, openRepo(t, ref), "1", map[string]string{"model.onnx": "w"}, artifact.Metadata{})
	nodes(t, ns, nil, 1)
	m := edgeModel(ns, "m", ref, "1")
	create(t, m)
	nas := waitNodeArtifacts(t, ns, "on the edge", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 1 {
			return fmt.Errorf("%v", keys(nas))
		}
		return nil
	})
	patch := func(change func(*v1alpha1.InferenceModel)) {
		get(t, m)
		before := m.DeepCopy()
		change(m)
		if err := k8s.Patch(context.Background(), m, client.MergeFrom(before)); err != nil {
			t.Fatal(err)
		}
	}
	patch(func(m *v1alpha1.InferenceModel) {
		m.Spec.DeployToLayer, m.Spec.FrameworkType, m.Spec.NodeSelector = v1alpha1.LayerCloud, "onnx", nil
	})
	waitDeployment(t, ns, "m")
	for _, n := range nas {
		eventually(t, "NodeArtifact deleted", func() error {
			get(t, n)
			if n.DeletionTimestamp == nil {
				return fmt.Errorf("%s not being deleted", n.Name)
			}
			return nil
		})
		releaseFiles(t, n)
	}
	patch(func(m *v1alpha1.InferenceModel) {
		m.Spec.DeployToLayer, m.Spec.NodeSelector = v1alpha1.LayerEdge, map[string]string{"barge-test": ns}
	})
	eventually(t, "Deployment and Service deleted", func() error {
		for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}} {
			err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "m"}, obj)
			if err == nil && obj.GetDeletionTimestamp() == nil {
				return fmt.Errorf("%T still there", obj)
			}
		}
		return nil
	})
	waitNodeArtifacts(t, ns, "back on the edge", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if len(nas) != 1 {
			return fmt.Errorf("%v", keys(nas))
		}
		return nil
	})
}
