package controllers

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/bargeml/barge/api/v1alpha1"
)

// ServingRuntime is how the cloud layer serves the model files of one
// framework. The serving container gets MODEL_NAME (spec.modelName, or the
// object's name) and MODEL_DIR (/models/<MODEL_NAME>, where the init
// container pulled the files, or the image volume is mounted) in its
// environment; Kubernetes expands
// $(MODEL_NAME) and $(MODEL_DIR) in Command, Args and Env.
type ServingRuntime struct {
	// Image of the serving container.
	Image string `json:"image"`
	// Command replaces the image's entrypoint; empty keeps it.
	Command []string `json:"command,omitempty"`
	// Args of the serving container.
	Args []string `json:"args,omitempty"`
	// Env adds environment variables to the serving container.
	Env map[string]string `json:"env,omitempty"`
	// Port the server answers HTTP on; the Service exposes it.
	Port int32 `json:"port"`
}

// ServingImages maps a frameworkType (lower case) to its serving runtime.
//
// The built-in defaults, which a file given to --serving-images overrides
// entry by entry (a YAML map of frameworkType to image, command, args, env,
// port):
//
//	onnx:       mcr.microsoft.com/onnxruntime/server:latest
//	            --model_path=$(MODEL_DIR)/model.onnx --http_port=8001, port 8001
//	triton:     nvcr.io/nvidia/tritonserver:24.08-py3
//	            tritonserver --model-repository=/models, port 8000
//	            (the artifact holds <version>/model.* and config.pbtxt)
//	tensorflow: tensorflow/serving:2.17.0
//	            MODEL_BASE_PATH=/models, port 8501 (REST)
//	            (the artifact holds <version>/saved_model.pb)
//	pytorch:    pytorch/torchserve:0.12.0-cpu
//	            torchserve --foreground --model-store=$(MODEL_DIR) --models=all
//	            --disable-token-auth, port 8080
//
// In image mode (spec.image) the image runs as it is; the entry of its
// frameworkType, when there is one, gives the port, else 8080.
type ServingImages map[string]ServingRuntime

// DefaultServingImages returns the built-in serving runtimes described on
// ServingImages.
func DefaultServingImages() ServingImages {
	return ServingImages{
		"onnx": {
			Image: "mcr.microsoft.com/onnxruntime/server:latest",
			Args:  []string{"--model_path=$(MODEL_DIR)/model.onnx", "--http_port=8001"},
			Port:  8001,
		},
		"triton": {
			Image: "nvcr.io/nvidia/tritonserver:24.08-py3",
			Args:  []string{"tritonserver", "--model-repository=/models"},
			Port:  8000,
		},
		"tensorflow": {
			Image: "tensorflow/serving:2.17.0",
			Env:   map[string]string{"MODEL_BASE_PATH": "/models"},
			Port:  8501,
		},
		"pytorch": {
			Image: "pytorch/torchserve:0.12.0-cpu",
			Args:  []string{"torchserve", "--foreground", "--model-store=$(MODEL_DIR)", "--models=all", "--disable-token-auth"},
			Port:  8080,
		},
	}
}

// LoadServingImages reads a YAML file of serving runtimes and lays it over
// the defaults; an empty path gives the defaults.
func LoadServingImages(path string) (ServingImages, error) {
	images := DefaultServingImages()
	if path == "" {
		return images, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("serving images: %w", err)
	}
	var file ServingImages
	if err := yaml.UnmarshalStrict(b, &file); err != nil {
		return nil, fmt.Errorf("serving images %s: %w", path, err)
	}
	for name, rt := range file {
		if rt.Image == "" {
			return nil, fmt.Errorf("serving images %s: %s has no image", path, name)
		}
		if rt.Port < 1 || rt.Port > 65535 {
			return nil, fmt.Errorf("serving images %s: %s has port %d; give the port its server answers HTTP on (1-65535)", path, name, rt.Port)
		}
		images[strings.ToLower(name)] = rt
	}
	return images, nil
}

// names lists the frameworks, for messages.
func (s ServingImages) names() string { return strings.Join(slices.Sorted(maps.Keys(s)), ", ") }

const (
	fieldOwner       = "barge-controller"
	managedByLabel   = "app.kubernetes.io/managed-by"
	managedByValue   = "barge-controller"
	modelPodLabel    = "barge.dev/inferencemodel"
	defaultImagePort = 8080
	modelsDir        = "/models"
)

// cloudWorkload is what the cloud layer runs for one InferenceModel.
type cloudWorkload struct {
	model     *v1alpha1.InferenceModel
	modelName string
	// image is set in image mode: the image pinned to its digest.
	image string
	// reference (repository@digest) and runtime are set in artifact mode.
	reference  string
	runtime    ServingRuntime
	port       int32
	bargeImage string
	// mount is how the model files reach the server: an init container
	// (the default) or an image volume.
	mount v1alpha1.ModelMount
}

// modelMount is spec.cloud.modelMount, initContainer when unset.
func modelMount(m *v1alpha1.InferenceModel) v1alpha1.ModelMount {
	if m.Spec.Cloud == nil || m.Spec.Cloud.ModelMount == "" {
		return v1alpha1.ModelMountInitContainer
	}
	return m.Spec.Cloud.ModelMount
}

func (w cloudWorkload) labels() map[string]string { return modelLabels(w.model) }

func (w cloudWorkload) podLabels() map[string]string {
	return map[string]string{modelPodLabel: labelValue(w.model.Name), managedByLabel: managedByValue}
}

func (w cloudWorkload) ownerReference() *metav1ac.OwnerReferenceApplyConfiguration {
	return modelOwnerReference(w.model)
}

// deployment is the Deployment the cloud layer applies.
func (w cloudWorkload) deployment() *appsv1ac.DeploymentApplyConfiguration {
	replicas := int32(1)
	if w.model.Spec.Replicas != nil {
		replicas = *w.model.Spec.Replicas
	}
	pod := corev1ac.PodSpec()
	serve := corev1ac.Container().WithName("model").
		WithPorts(corev1ac.ContainerPort().WithName("http").WithContainerPort(w.port).WithProtocol(corev1.ProtocolTCP)).
		WithEnv(corev1ac.EnvVar().WithName("MODEL_NAME").WithValue(w.modelName)).
		WithReadinessProbe(corev1ac.Probe().WithTCPSocket(corev1ac.TCPSocketAction().WithPort(intstr.FromString("http"))))
	if secret := w.model.Spec.PullSecretRef; secret != nil {
		pod.WithImagePullSecrets(corev1ac.LocalObjectReference().WithName(secret.Name))
	}
	if w.image != "" {
		serve.WithImage(w.image)
	} else {
		dir := modelsDir + "/" + w.modelName
		serve.WithImage(w.runtime.Image).
			WithEnv(corev1ac.EnvVar().WithName("MODEL_DIR").WithValue(dir))
		for _, k := range slices.Sorted(maps.Keys(w.runtime.Env)) {
			serve.WithEnv(corev1ac.EnvVar().WithName(k).WithValue(w.runtime.Env[k]))
		}
		if len(w.runtime.Command) > 0 {
			serve.WithCommand(w.runtime.Command...)
		}
		if len(w.runtime.Args) > 0 {
			serve.WithArgs(w.runtime.Args...)
		}
		if w.mount == v1alpha1.ModelMountImageVolume {
			w.imageVolume(pod, serve, dir)
		} else {
			w.initContainer(pod, serve, dir)
		}
	}
	pod.WithContainers(serve)
	return appsv1ac.Deployment(w.model.Name, w.model.Namespace).
		WithLabels(w.labels()).
		WithOwnerReferences(w.ownerReference()).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{modelPodLabel: labelValue(w.model.Name)})).
			WithTemplate(corev1ac.PodTemplateSpec().WithLabels(w.podLabels()).WithSpec(pod)))
}

// imageVolume mounts the model artifact itself at dir, read-only, as a
// Kubernetes image volume: the container runtime pulls it by digest with
// the pod's imagePullSecrets, and no init container copies it.
func (w cloudWorkload) imageVolume(pod *corev1ac.PodSpecApplyConfiguration, serve *corev1ac.ContainerApplyConfiguration, dir string) {
	pod.WithVolumes(corev1ac.Volume().WithName("model").WithImage(
		corev1ac.ImageVolumeSource().WithReference(w.reference).WithPullPolicy(corev1.PullIfNotPresent)))
	serve.WithVolumeMounts(corev1ac.VolumeMount().WithName("model").WithMountPath(dir).WithReadOnly(true))
}

// initContainer pulls the model files with barge into an emptyDir under
// /models, which the server reads.
func (w cloudWorkload) initContainer(pod *corev1ac.PodSpecApplyConfiguration, serve *corev1ac.ContainerApplyConfiguration, dir string) {
	serve.WithVolumeMounts(corev1ac.VolumeMount().WithName("models").WithMountPath(modelsDir).WithReadOnly(true))
	args := []string{"pull", "--cache", "/cache"}
	if w.model.Spec.Insecure {
		args = append(args, "--plain-http")
	}
	args = append(args, w.reference, dir)
	pull := corev1ac.Container().WithName("pull").WithImage(w.bargeImage).WithArgs(args...).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("models").WithMountPath(modelsDir),
			corev1ac.VolumeMount().WithName("cache").WithMountPath("/cache"),
		)
	pod.WithVolumes(
		corev1ac.Volume().WithName("models").WithEmptyDir(corev1ac.EmptyDirVolumeSource()),
		corev1ac.Volume().WithName("cache").WithEmptyDir(corev1ac.EmptyDirVolumeSource()),
	)
	if secret := w.model.Spec.PullSecretRef; secret != nil {
		// barge pull reads credentials from $DOCKER_CONFIG/config.json.
		pod.WithVolumes(corev1ac.Volume().WithName("registry-credentials").WithSecret(
			corev1ac.SecretVolumeSource().WithSecretName(secret.Name).
				WithItems(corev1ac.KeyToPath().WithKey(corev1.DockerConfigJsonKey).WithPath("config.json"))))
		pull.WithEnv(corev1ac.EnvVar().WithName("DOCKER_CONFIG").WithValue("/docker-config")).
			WithVolumeMounts(corev1ac.VolumeMount().WithName("registry-credentials").WithMountPath("/docker-config").WithReadOnly(true))
	}
	pod.WithInitContainers(pull)
}

// service is the Service in front of the Deployment.
func (w cloudWorkload) service() *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(w.model.Name, w.model.Namespace).
		WithLabels(w.labels()).
		WithOwnerReferences(w.ownerReference()).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(map[string]string{modelPodLabel: labelValue(w.model.Name)}).
			WithPorts(corev1ac.ServicePort().WithName("http").WithPort(w.port).WithTargetPort(intstr.FromString("http")).WithProtocol(corev1.ProtocolTCP)))
}

// url is the Service's address inside the cluster.
func (w cloudWorkload) url() string {
	return fmt.Sprintf("http://%s.%s.svc:%d", w.model.Name, w.model.Namespace, w.port)
}

// deploymentProgress says whether an applied Deployment is available and,
// when not, what it waits for.
func deploymentProgress(d *appsv1ac.DeploymentApplyConfiguration) (bool, string) {
	want := int32(1)
	if d.Spec != nil && d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	name := ""
	if d.Name != nil {
		name = *d.Name
	}
	var gen, observed, updated, available int64
	if d.Generation != nil {
		gen = *d.Generation
	}
	if st != nil {
		if st.ObservedGeneration != nil {
			observed = *st.ObservedGeneration
		}
		if st.UpdatedReplicas != nil {
			updated = int64(*st.UpdatedReplicas)
		}
		if st.AvailableReplicas != nil {
			available = int64(*st.AvailableReplicas)
		}
	}
	switch {
	case observed < gen:
		return false, fmt.Sprintf("Deployment %s: waiting for the deployment controller to see generation %d", name, gen)
	case updated < int64(want):
		return false, fmt.Sprintf("Deployment %s: %d of %d replicas updated", name, updated, want)
	case available < int64(want):
		return false, fmt.Sprintf("Deployment %s: %d of %d replicas available", name, available, want)
	}
	return true, ""
}

// servingPort is the port of an image-mode model: its framework's, else 8080.
func (s ServingImages) servingPort(framework string) int32 {
	if rt, ok := s[strings.ToLower(framework)]; ok && rt.Port > 0 {
		return rt.Port
	}
	return defaultImagePort
}
