package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/internal/signtest"
)

// jointVersion is a joint model in the registry: the index and its parts.
type jointVersion struct{ index, edge, cloud string }

// pushJoint packs an edge and a cloud model as one joint index and tags it.
func pushJoint(t *testing.T, ref, tag string, edge, cloud map[string]string, meta artifact.Metadata) jointVersion {
	t.Helper()
	desc, parts := reg.PushJointForTest(t, strings.TrimPrefix(ref, reg.Host()+"/"), tag, edge, cloud, artifact.PackOptions{Metadata: meta})
	return jointVersion{index: desc.Digest.String(), edge: parts.Edge.Digest.String(), cloud: parts.Cloud.Digest.String()}
}

// pushIndex pushes an index of artifactType joint over members, each
// annotated with its layer, as a tool other than barge might.
func pushIndex(t *testing.T, repo *remote.Repository, tag string, members map[string]ocispec.Descriptor) string {
	t.Helper()
	var ms []ocispec.Descriptor
	for _, layer := range []string{artifact.LayerEdge, artifact.LayerCloud} {
		if d, ok := members[layer]; ok {
			d.Annotations = map[string]string{artifact.AnnotationLayer: layer}
			ms = append(ms, d)
		}
	}
	b, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		ArtifactType: artifact.ArtifactTypeJoint, Manifests: ms})
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageIndex, b)
	if err := repo.Push(context.Background(), desc, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	tagAs(t, repo, desc, tag)
	return desc.Digest.String()
}

func jointModel(ns, name, ref, version string) *v1alpha1.InferenceModel {
	m := edgeModel(ns, name, ref, version)
	m.Spec.DeployToLayer = v1alpha1.LayerJoint
	m.Spec.Interval = &metav1.Duration{Duration: time.Hour}
	return m
}

// jointObjects are what the cloud side of a joint model consists of.
type jointObjects struct {
	dep *appsv1.Deployment
	svc *corev1.Service
	cm  *corev1.ConfigMap
}

// cloudReference is the model reference the Deployment's pods read: the
// init container's, or the image volume's.
func (o jointObjects) cloudReference() string {
	for _, c := range o.dep.Spec.Template.Spec.InitContainers {
		if len(c.Args) > 1 {
			return c.Args[len(c.Args)-2]
		}
	}
	for _, v := range o.dep.Spec.Template.Spec.Volumes {
		if v.Image != nil {
			return v.Image.Reference
		}
	}
	return ""
}

// waitJoint waits until the cloud side of model name runs reference.
func waitJoint(t *testing.T, ns, name, reference string) jointObjects {
	t.Helper()
	o := jointObjects{dep: &appsv1.Deployment{}, svc: &corev1.Service{}, cm: &corev1.ConfigMap{}}
	eventually(t, "Deployment on "+reference+", Service and ConfigMap", func() error {
		for obj, key := range map[client.Object]string{o.dep: name, o.svc: name, o.cm: name + "-joint"} {
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: key}, obj); err != nil {
				return err
			}
		}
		if got := o.cloudReference(); got != reference {
			return fmt.Errorf("the Deployment reads %s", got)
		}
		return nil
	})
	return o
}

// absent checks that none of the objects exist.
func absent(ns string, objs map[client.Object]string) error {
	for obj, name := range objs {
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
		if err == nil {
			return fmt.Errorf("%T %s still exists", obj, name)
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// TestJointModel: a joint model puts its edge part on the matching nodes
// (NodeArtifacts on the edge member's digest) and runs its cloud part as a
// Deployment (pulling the cloud member) and Service, with a ConfigMap that
// gives the edge workload the cloud part's address; status speaks of the
// one index digest. A tag moved to a new joint version moves both parts.
// With deployToLayer edge or cloud, only that part runs.
func TestJointModel(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "detector")
	v1 := pushJoint(t, ref, "stable", map[string]string{"backbone.onnx": "edge v1", "preprocess/prep.py": "print(1)"},
		map[string]string{"head.onnx": "cloud v1"}, artifact.Metadata{Framework: "onnx"})
	nodes(t, ns, nil, 2)
	m := jointModel(ns, "detector", ref, "stable")
	m.Spec.Rollout.MaxConcurrentNodes = 2
	create(t, m)

	nas := waitNodeArtifacts(t, ns, "the edge part on both nodes", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, v1.edge); len(got) != 2 {
			return fmt.Errorf("on the edge part %s: %v", v1.edge, got)
		}
		return nil
	})
	for _, na := range nas {
		if na.Spec.Reference != ref+"@"+v1.edge {
			t.Errorf("NodeArtifact %s reference %s, want the edge part %s", na.Name, na.Spec.Reference, ref+"@"+v1.edge)
		}
	}
	o := waitJoint(t, ns, "detector", ref+"@"+v1.cloud)
	checkOwned(t, m, o.dep, o.svc, o.cm)
	onnx := DefaultServingImages()["onnx"]
	if c := o.dep.Spec.Template.Spec.Containers[0]; c.Image != onnx.Image || o.svc.Spec.Ports[0].Port != onnx.Port {
		t.Errorf("the cloud part runs %s behind port %d; want the onnx runtime the cloud part's framework names", c.Image, o.svc.Spec.Ports[0].Port)
	}
	wantURL := fmt.Sprintf("http://detector.%s.svc:%d", ns, onnx.Port)
	if got := o.cm.Data[JointCloudURLKey]; got != wantURL {
		t.Errorf("ConfigMap %s: %s = %q, want %q", o.cm.Name, JointCloudURLKey, got, wantURL)
	}
	eventually(t, "status of the index", func() error {
		get(t, m)
		r := m.Status.Resolved
		switch {
		case r == nil || r.Digest != v1.index || r.Version != "stable" || r.ArtifactType != artifact.ArtifactTypeJoint:
			return fmt.Errorf("resolved %+v, want the index %s", r, v1.index)
		case m.Status.URL != wantURL:
			return fmt.Errorf("url %q", m.Status.URL)
		case m.Status.Metadata["edge.framework"] != "onnx" || m.Status.Metadata["cloud.framework"] != "onnx":
			return fmt.Errorf("metadata %v, want each part's framework", m.Status.Metadata)
		}
		return conds{ready: metav1.ConditionFalse, reason: ReasonRollingOut, message: "0 of 2 nodes", reconciling: true}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})

	// The nodes hold the edge part; then the Deployment is available.
	for _, na := range nas {
		puller(t, na, v1alpha1.NodeArtifactReady, v1.edge, "")
	}
	eventually(t, "waiting for the cloud part", func() error {
		get(t, m)
		return conds{ready: metav1.ConditionFalse, reason: ReasonDeploymentWait, message: "cloud part: ", reconciling: true}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	available(t, o.dep)
	eventually(t, "Ready", func() error {
		get(t, m)
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "on 2 of 2 nodes; cloud part serving at " + wantURL}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})

	// The address the edge pods read is the controller's: a change is set
	// back.
	before := o.cm.DeepCopy()
	o.cm.Data[JointCloudURLKey] = "http://attacker.example.com"
	if err := k8s.Patch(context.Background(), o.cm, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cloud URL set back", func() error {
		get(t, o.cm)
		if got := o.cm.Data[JointCloudURLKey]; got != wantURL {
			return fmt.Errorf("cloud-url %q", got)
		}
		return nil
	})

	// The tag moves to a new joint version: both parts follow.
	v2 := pushJoint(t, ref, "stable", map[string]string{"backbone.onnx": "edge v2"}, map[string]string{"head.onnx": "cloud v2"}, artifact.Metadata{Framework: "onnx"})
	change(t, m, func() { m.Spec.Interval = &metav1.Duration{Duration: 2 * time.Hour} }) // resolve now, not in an hour
	waitNodeArtifacts(t, ns, "the new edge part on both nodes", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, v2.edge); len(got) != 2 {
			return fmt.Errorf("on the new edge part %s: %v", v2.edge, got)
		}
		return nil
	})
	waitJoint(t, ns, "detector", ref+"@"+v2.cloud)
	eventually(t, "resolved to the new index", func() error {
		get(t, m)
		if r := m.Status.Resolved; r == nil || r.Digest != v2.index {
			return fmt.Errorf("resolved %+v, want %s", r, v2.index)
		}
		return nil
	})

	// deployToLayer edge: the edge part only.
	change(t, m, func() { m.Spec.DeployToLayer = v1alpha1.LayerEdge })
	eventually(t, "the cloud part gone", func() error {
		return absent(ns, map[client.Object]string{&appsv1.Deployment{}: "detector", &corev1.Service{}: "detector", &corev1.ConfigMap{}: "detector-joint"})
	})
	if got := onDigest(nodeArtifacts(t, ns), v2.edge); len(got) != 2 {
		t.Errorf("with deployToLayer edge the nodes hold %v of the edge part; want both", got)
	}

	// deployToLayer cloud: the cloud part only, without the ConfigMap.
	change(t, m, func() { m.Spec.DeployToLayer, m.Spec.NodeSelector = v1alpha1.LayerCloud, nil })
	eventually(t, "the cloud part alone", func() error {
		dep := &appsv1.Deployment{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "detector"}, dep); err != nil {
			return err
		}
		if got := (jointObjects{dep: dep}).cloudReference(); got != ref+"@"+v2.cloud {
			return fmt.Errorf("the Deployment reads %s, want the cloud part", got)
		}
		for _, na := range nodeArtifacts(t, ns) {
			if na.DeletionTimestamp == nil {
				return fmt.Errorf("NodeArtifact %s not deleted", na.Name)
			}
		}
		return absent(ns, map[client.Object]string{&corev1.ConfigMap{}: "detector-joint"})
	})
}

// available is the deployment controller reporting dep available.
func available(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	get(t, dep)
	before := dep.DeepCopy()
	n := *dep.Spec.Replicas
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: n, UpdatedReplicas: n, AvailableReplicas: n, ReadyReplicas: n}
	if err := k8s.Status().Patch(context.Background(), dep, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

// TestJointRefusals: deployToLayer joint with a model of one part, joint
// indexes whose parts are missing or are not models, and a joint model whose
// ConfigMap name another object holds stall with a message that says what
// to do; nothing is deployed.
func TestJointRefusals(t *testing.T) {
	ns := env.Namespace(t)
	nodes(t, ns, nil, 1)
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	plain := pushModel(t, repo, "plain", map[string]string{"m.onnx": "w"}, artifact.Metadata{Framework: "onnx"})
	data := pushDataset(t, repo, "", datasetConfig{Format: "jsonl", NumberOfSamples: 3})
	pushIndex(t, repo, "half", map[string]ocispec.Descriptor{artifact.LayerEdge: plain})
	pushIndex(t, repo, "data", map[string]ocispec.Descriptor{artifact.LayerEdge: data, artifact.LayerCloud: plain})

	for _, tt := range []struct {
		name, version, reason, message string
	}{
		{"plain", "plain", ReasonWrongKind, "deployToLayer: joint needs a joint model; " + ref + "@" + plain.Digest.String() + " is a model with one part"},
		{"half", "half", ReasonInvalidArtifact, "has no cloud part"},
		{"data", "data", ReasonWrongKind, "its edge part (sha256:" + shortDigest(data.Digest.String()) + ") is a dataset, not a model"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := jointModel(ns, tt.name, ref, tt.version)
			create(t, m)
			eventually(t, "stalled", func() error {
				get(t, m)
				return conds{ready: metav1.ConditionFalse, reason: tt.reason, message: tt.message, stalled: true}.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
			})
			if c := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ReadyCondition); len(c.Message) > 300 {
				t.Errorf("message of %d characters: %s", len(c.Message), c.Message)
			}
		})
	}
	// A ConfigMap of the name the edge pods would read belongs to someone
	// else: the model is not deployed, and the ConfigMap is left alone.
	pushJoint(t, ref, "joint", map[string]string{"a.onnx": "edge"}, map[string]string{"b.onnx": "cloud"}, artifact.Metadata{Framework: "onnx"})
	theirs := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken-joint"}, Data: map[string]string{"cloud-url": "http://theirs"}}
	create(t, theirs)
	taken := jointModel(ns, "taken", ref, "joint")
	create(t, taken)
	eventually(t, "stalled on the ConfigMap", func() error {
		get(t, taken)
		return conds{ready: metav1.ConditionFalse, reason: ReasonObjectConflict, message: "a ConfigMap named taken-joint already exists", stalled: true}.
			check(taken.Generation, taken.Status.ObservedGeneration, taken.Status.Conditions)
	})
	get(t, theirs)
	if len(theirs.OwnerReferences) != 0 || theirs.Data["cloud-url"] != "http://theirs" {
		t.Errorf("the user's ConfigMap was changed: %+v", theirs)
	}

	if nas := nodeArtifacts(t, ns); len(nas) != 0 {
		t.Errorf("NodeArtifacts %v for refused models", keys(nas))
	}
	var deps appsv1.DeploymentList
	if err := k8s.List(context.Background(), &deps, client.InNamespace(ns)); err != nil || len(deps.Items) != 0 {
		t.Errorf("Deployments for refused models: %d (%v)", len(deps.Items), err)
	}
}

// TestCloudImageVolume: with spec.cloud.modelMount imageVolume the
// Deployment mounts the model artifact, pinned to its digest, as an image
// volume at the model's directory, and has no init container; a joint
// model mounts its cloud part.
func TestCloudImageVolume(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	d := pushModel(t, repo, "1", map[string]string{"model.onnx": "w"}, artifact.Metadata{Framework: "onnx"}).Digest.String()
	j := pushJoint(t, ref, "joint", map[string]string{"a.onnx": "edge"}, map[string]string{"b.onnx": "cloud"}, artifact.Metadata{Framework: "onnx"})

	plain := cloudModel(ns, "plain")
	plain.Spec.Artifact, plain.Spec.TargetVersion = ref, "1"
	plain.Spec.ModelName = "resnet"
	plain.Spec.Cloud = &v1alpha1.CloudSpec{ModelMount: v1alpha1.ModelMountImageVolume}
	create(t, plain)
	joint := jointModel(ns, "joint", ref, "joint")
	joint.Spec.Cloud = &v1alpha1.CloudSpec{ModelMount: v1alpha1.ModelMountImageVolume}
	create(t, joint)

	for _, c := range []struct{ name, dir, reference string }{
		{"plain", "/models/resnet", ref + "@" + d},
		{"joint", "/models/joint", ref + "@" + j.cloud},
	} {
		dep, _ := waitDeployment(t, ns, c.name)
		spec := dep.Spec.Template.Spec
		if len(spec.InitContainers) != 0 || len(spec.Volumes) != 1 || len(spec.Containers) != 1 {
			t.Fatalf("%s: pod spec %+v; want one image volume and no init container", c.name, spec)
		}
		v, serve := spec.Volumes[0], spec.Containers[0]
		if v.Image == nil || v.Image.Reference != c.reference || v.Image.PullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s: volume %+v, want an image volume of %s, IfNotPresent", c.name, v, c.reference)
		}
		if !slices.ContainsFunc(serve.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == v.Name && m.MountPath == c.dir && m.ReadOnly
		}) || !hasEnv(serve.Env, "MODEL_DIR", c.dir) {
			t.Errorf("%s: serving container mounts %+v with env %v; want the volume read-only at MODEL_DIR %s", c.name, serve.VolumeMounts, serve.Env, c.dir)
		}
	}
}

// TestJointEdgeExtras: the serving pods of a joint model's edge part read
// the cloud part's address from the ConfigMap, as BARGE_CLOUD_URL and as
// /etc/barge/joint/cloud-url; the API server takes a pod built so. Other
// models get nothing.
func TestJointEdgeExtras(t *testing.T) {
	ns := env.Namespace(t)
	m := jointModel(ns, "detector", "example.com/m", "1")
	vars, volumes, mounts := jointEdgeExtras(m)
	if len(vars) != 1 || vars[0].Name != "BARGE_CLOUD_URL" || vars[0].ValueFrom == nil || vars[0].ValueFrom.ConfigMapKeyRef == nil ||
		vars[0].ValueFrom.ConfigMapKeyRef.Name != "detector-joint" || vars[0].ValueFrom.ConfigMapKeyRef.Key != "cloud-url" {
		t.Errorf("env %+v, want BARGE_CLOUD_URL from ConfigMap detector-joint, key cloud-url", vars)
	}
	if len(volumes) != 1 || volumes[0].ConfigMap == nil || volumes[0].ConfigMap.Name != "detector-joint" ||
		len(mounts) != 1 || mounts[0].MountPath != "/etc/barge/joint" || !mounts[0].ReadOnly || mounts[0].Name != volumes[0].Name {
		t.Errorf("volumes %+v mounts %+v, want ConfigMap detector-joint read-only at /etc/barge/joint", volumes, mounts)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge-serving"}, Spec: corev1.PodSpec{
		Volumes:    volumes,
		Containers: []corev1.Container{{Name: "serve", Image: "example.com/serve:1", Env: vars, VolumeMounts: mounts}},
	}}
	create(t, pod)

	for _, layer := range []v1alpha1.Layer{v1alpha1.LayerEdge, v1alpha1.LayerCloud} {
		m.Spec.DeployToLayer = layer
		if vars, volumes, mounts := jointEdgeExtras(m); vars != nil || volumes != nil || mounts != nil {
			t.Errorf("deployToLayer %s: extras %v %v %v, want none", layer, vars, volumes, mounts)
		}
	}
}

// TestJointVerify: spec.verify on a joint model checks the signature on
// the index, which is what its publisher signs, and refuses an unsigned
// index; the edge part's NodeArtifacts carry the policy with the index as
// signedIndex, so the node can verify the part it pulls.
func TestJointVerify(t *testing.T) {
	ns := env.Namespace(t)
	key := cosignSecret(t, ns)
	ref := repoName(t, "m")
	v1 := pushJoint(t, ref, "1", map[string]string{"a.onnx": "edge v1"}, map[string]string{"b.onnx": "cloud v1"}, artifact.Metadata{Framework: "onnx"})
	v2 := pushJoint(t, ref, "2", map[string]string{"a.onnx": "edge v2"}, map[string]string{"b.onnx": "cloud v2"}, artifact.Metadata{Framework: "onnx"})
	signtest.CosignSign(t, key, ref+"@"+v1.index)
	nodes(t, ns, nil, 1)

	m := jointModel(ns, "m", ref, "1")
	m.Spec.Verify = &v1alpha1.VerifySpec{Provider: "cosign", SecretRef: &v1alpha1.LocalObjectReference{Name: "cosign"}}
	create(t, m)
	nas := waitNodeArtifacts(t, ns, "the signed edge part", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, v1.edge); len(got) != 1 {
			return fmt.Errorf("on the edge part: %v", got)
		}
		return nil
	})
	for _, na := range nas {
		if v := na.Spec.Verify; v == nil || v.SecretRef == nil || v.SecretRef.Name != "cosign" || v.SignedIndex != v1.index {
			t.Errorf("NodeArtifact %s spec.verify = %+v; want the model's with signedIndex %s", na.Name, v, v1.index)
		}
	}
	waitJoint(t, ns, "m", ref+"@"+v1.cloud)

	change(t, m, func() { m.Spec.TargetVersion = "2" })
	eventually(t, "the unsigned index refused", func() error {
		get(t, m)
		return conds{ready: metav1.ConditionFalse, reason: ReasonVerificationFailed, message: "refusing " + v2.index, stalled: true}.
			check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
	})
	if got := onDigest(nodeArtifacts(t, ns), v1.edge); len(got) != 1 {
		t.Errorf("after the refusal the edge part v1 is on %v; want the node kept there", got)
	}
	waitJoint(t, ns, "m", ref+"@"+v1.cloud)
}

// TestJointEdgeServer: the edge part's server mounts the edge part's files
// and reads the cloud part's address from the ConfigMap, as the README's
// contract says.
func TestJointEdgeServer(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "detector")
	v1 := pushJoint(t, ref, "stable", map[string]string{"backbone.onnx": "edge v1"},
		map[string]string{"head.onnx": "cloud v1"}, artifact.Metadata{Framework: "onnx"})
	nodes(t, ns, nil, 1)
	m := jointModel(ns, "detector", ref, "stable")
	m.Spec.Server = &v1alpha1.ServerSpec{Image: testServerImage}
	create(t, m)

	_, hex, _ := strings.Cut(v1.edge, ":")
	ds := waitDaemonSet(t, ns, "detector", func(ds *appsv1.DaemonSet) error {
		if len(ds.Spec.Template.Spec.Containers) != 1 {
			return fmt.Errorf("%d containers", len(ds.Spec.Template.Spec.Containers))
		}
		return nil
	})
	pod := ds.Spec.Template.Spec
	var url *corev1.EnvVar
	for i, e := range pod.Containers[0].Env {
		if e.Name == JointCloudURLEnv {
			url = &pod.Containers[0].Env[i]
		}
	}
	if url == nil || url.ValueFrom == nil || url.ValueFrom.ConfigMapKeyRef == nil ||
		url.ValueFrom.ConfigMapKeyRef.Name != "detector-joint" || url.ValueFrom.ConfigMapKeyRef.Key != JointCloudURLKey {
		t.Errorf("env %s = %+v; want it from ConfigMap detector-joint, key %s", JointCloudURLEnv, url, JointCloudURLKey)
	}
	mounts := map[string]string{}
	for _, vm := range pod.Containers[0].VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	if mounts[JointConfigDir] == "" {
		t.Errorf("mounts %v; want the ConfigMap at %s", mounts, JointConfigDir)
	}
	var hostPaths []string
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths = append(hostPaths, v.HostPath.Path)
		}
	}
	if len(hostPaths) != 1 || !strings.HasSuffix(hostPaths[0], "/versions/sha256-"+hex) {
		t.Errorf("hostPath volumes %v; want the version directory of the edge part %s", hostPaths, v1.edge)
	}
	if c := pod.Containers[0]; c.Image != testServerImage {
		t.Errorf("the edge server runs %s; want spec.server.image %s", c.Image, testServerImage)
	}
}
