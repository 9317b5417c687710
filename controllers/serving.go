package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// The serving contract: the environment of an edge server. The README's
// "Serving on the edge" section documents it for users.
const (
	// EnvModelName is spec.modelName, or the object's name.
	EnvModelName = "BARGE_MODEL_NAME"
	// EnvModelDir is the model's files, read-only: /models/<name>.
	EnvModelDir = "BARGE_MODEL_DIR"
	// EnvModelDigest is the manifest digest of the files in EnvModelDir
	// (or of the image, in image mode).
	EnvModelDigest = "BARGE_MODEL_DIGEST"
	// EnvPreprocessDir and EnvPostprocessDir are the artifact's
	// preprocess/ and postprocess/ directories, set only when it has them.
	EnvPreprocessDir  = "BARGE_PREPROCESS_DIR"
	EnvPostprocessDir = "BARGE_POSTPROCESS_DIR"
	// EnvLabelsFile is the model's label set, set only when it has one.
	EnvLabelsFile = "BARGE_LABELS_FILE"

	// reservedEnvPrefix is Barge's: spec.server.env may not set it, so a
	// script can trust what it reads there.
	reservedEnvPrefix = "BARGE_"
)

// Condition and event reasons of edge serving.
const (
	ReasonServingProgressing = "ServingProgressing"
	ReasonServingFailed      = "ServingFailed"
	ReasonServingRestarted   = "ServingRestarted"
)

const (
	// edgeServerLabel selects one model's serving pods. It is not
	// modelPodLabel, by which the cloud Service of a joint model selects
	// its pods: edge pods must not receive the cloud part's traffic.
	edgeServerLabel = "barge.dev/edge-server"
	// templateHashAnnotation on a serving pod is the hash of the template
	// it was made from; a pod with another hash is restarted onto the
	// current template (OnDelete), as a new digest or a new spec.server.
	templateHashAnnotation = "barge.dev/template-hash"
	// labelsAnnotation carries the label set of the manifest
	// (dev.barge.labels), one per line, which the downward API writes to
	// labelsDir/labelsFile.
	labelsAnnotation = "barge.dev/labels"
	labelsDir        = "/etc/barge"
	labelsFileName   = "labels.txt"
	// maxServingRestarts: a serving container restarted more often than
	// this fails its node, even while it happens to be up.
	maxServingRestarts = 5
	serverContainer    = "server"
)

// labelFiles are the names a label file at the top of an artifact has, in
// the order BARGE_LABELS_FILE prefers them.
var labelFiles = []string{"labels.txt", "labels.json", "classes.txt", "label_map.txt"}

// failingReasons are the waiting reasons of a container that will not
// serve without a change: a crash loop, an image that cannot be pulled.
var failingReasons = map[string]bool{
	"CrashLoopBackOff": true, "ImagePullBackOff": true, "ErrImagePull": true, "InvalidImageName": true,
	"CreateContainerConfigError": true,
}

// serveEdge runs the edge server of the model on the nodes that hold files,
// restarting a node's serving pod only once its new files are Ready, and
// records each node's pod in s.serving.
func (r *InferenceModelReconciler) serveEdge(ctx context.Context, s *modelScope, files string) error {
	m := s.model
	if m.Spec.Server == nil && m.Spec.Image == "" {
		s.serving = nil
		m.Status.Nodes.Serving = 0
		return r.deleteServing(ctx, m)
	}
	w, err := r.edgeServer(ctx, s, files)
	if err != nil {
		return err
	}
	if err := r.claim(ctx, &appsv1.DaemonSet{}, m); err != nil {
		return err
	}
	ds, err := w.daemonSet()
	if err != nil {
		return err
	}
	if err := r.Apply(ctx, ds, client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply DaemonSet %s: %w", m.Name, err)
	}
	pods, err := r.servingPods(ctx, m, ds)
	if err != nil {
		return err
	}
	filesReady := func(node string) bool {
		if files == "" {
			return true // an image: the kubelet pulls it for the new pod
		}
		return s.placed != nil && !slices.Contains(s.placed.pending, node)
	}
	if err := r.restartServing(ctx, m, ds, pods, w.digest, filesReady); err != nil {
		return err
	}
	s.serving = servingByNode(pods)
	m.Status.Nodes.Serving = servingOn(s.serving, w.digest)
	return nil
}

// servingOn counts the nodes whose serving pod is Ready on digest.
func servingOn(serving map[string]nodeServing, digest string) int32 {
	var n int32
	for _, sv := range serving {
		if sv.ready && sv.digest == digest {
			n++
		}
	}
	return n
}

// restartServing deletes the pods planRestarts chooses, so that the
// DaemonSet controller recreates them on the current template, and marks
// them terminating in pods.
func (r *InferenceModelReconciler) restartServing(ctx context.Context, m *v1alpha1.InferenceModel, ds *appsv1ac.DaemonSetApplyConfiguration,
	pods []*corev1.Pod, digest string, filesReady func(node string) bool) error {
	var desired int32
	if ds.Status != nil && ds.Status.DesiredNumberScheduled != nil {
		desired = *ds.Status.DesiredNumberScheduled
	}
	for _, p := range planRestarts(pods, templateHash(ds), digest, filesReady, desired, m.Spec.Rollout.MaxConcurrentNodes) {
		if err := r.Delete(ctx, p, client.Preconditions{UID: &p.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("restart serving pod %s on node %s: %w", p.Name, p.Spec.NodeName, err)
		}
		p.DeletionTimestamp = &metav1.Time{}
		r.recorder.Eventf(m, nil, corev1.EventTypeNormal, ReasonServingRestarted, "Rollout",
			"restarting the serving pod of node %s onto %s", p.Spec.NodeName, shortText(digest))
	}
	return nil
}

// deployEdgeImage runs spec.image, pinned to its digest, on the matching
// nodes: a serving DaemonSet and no files.
func (r *InferenceModelReconciler) deployEdgeImage(ctx context.Context, s *modelScope) (ctrl.Result, error) {
	m := s.model
	if err := r.deleteCloud(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	if _, err := r.placer.remove(ctx, m, kindInferenceModel); err != nil {
		return ctrl.Result{}, err
	}
	s.target = m.Status.Resolved.Digest
	nodes, _, err := r.placer.nodes(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	m.Status.Nodes = v1alpha1.NodeCounts{}
	for i := range nodes {
		if nodes[i].DeletionTimestamp == nil && selects(m.Spec.NodeSelector, &nodes[i]) {
			m.Status.Nodes.Desired++
		}
	}
	m.Status.URL = ""
	if err := r.serveEdge(ctx, s, ""); err != nil {
		return ctrl.Result{}, err
	}
	// An image is on a node once its pod runs it.
	m.Status.Nodes.Ready = m.Status.Nodes.Serving
	v := versionText(m.Status.Resolved)
	base := outcome{readyMessage: fmt.Sprintf("%s on %d of %d nodes", v, m.Status.Nodes.Ready, m.Status.Nodes.Desired)}
	if m.Status.Nodes.Desired == 0 {
		base.readyMessage = fmt.Sprintf("%s resolved; no node matches spec.nodeSelector", v)
	}
	s.outcome = servingOutcome(base, s, m.Status.Resolved.Digest)
	return ctrl.Result{}, nil
}

// servingOutcome holds an edge model with a server back from Ready until
// every matching node serves digest, and reports a node whose server
// cannot run. A failure of the files themselves (a pull that failed) is
// reported first: it explains the server's.
func servingOutcome(o outcome, s *modelScope, digest string) outcome {
	if s.serving == nil || o.failure != nil || o.progressReason == ReasonNodeFailed {
		return o
	}
	c := s.model.Status.Nodes
	v := versionText(s.model.Status.Resolved)
	var failed, waiting []string
	for _, node := range slices.Sorted(maps.Keys(s.serving)) {
		sv := s.serving[node]
		switch {
		case sv.failed != "":
			failed = append(failed, node)
		case !sv.ready || sv.digest != digest:
			waiting = append(waiting, node)
		}
	}
	switch {
	case len(failed) > 0:
		first := failed[0]
		return outcome{progressReason: ReasonServingFailed, progressMessage: fmt.Sprintf("the server of %s fails on %d of %d nodes; %s: %s",
			v, len(failed), c.Desired, first, s.serving[first].failed)}
	case o.progressReason != "":
		return o
	case c.Serving < c.Desired:
		msg := fmt.Sprintf("%d of %d nodes serve %s", c.Serving, c.Desired, v)
		if len(waiting) > 0 {
			msg += "; waiting for " + listNodes(waiting)
		}
		if missing := int(c.Desired) - len(s.serving); missing > 0 {
			msg += fmt.Sprintf("; %d node(s) have no serving pod yet (a taint spec.server.tolerations does not tolerate keeps it off)", missing)
		}
		return outcome{progressReason: ReasonServingProgressing, progressMessage: msg}
	}
	if c.Desired == 0 {
		return o
	}
	return outcome{readyMessage: fmt.Sprintf("%s, serving on %d", o.readyMessage, c.Serving)}
}

// deleteServing deletes the model's serving DaemonSet, if it has one; the
// garbage collector deletes its pods.
func (r *InferenceModelReconciler) deleteServing(ctx context.Context, m *v1alpha1.InferenceModel) error {
	if err := r.deleteOwned(ctx, m, &appsv1.DaemonSet{}, m.Name); err != nil {
		return fmt.Errorf("delete DaemonSet %s: %w", m.Name, err)
	}
	return nil
}

// checkServer refuses a spec.server the schema cannot: variables in
// Barge's BARGE_ namespace, and two images.
func checkServer(m *v1alpha1.InferenceModel) error {
	srv := m.Spec.Server
	if srv == nil {
		return nil
	}
	if srv.Image != "" && m.Spec.Image != "" {
		return stalledf(ReasonInvalidSpec, "spec.server.image and spec.image both name the image to run: keep spec.image (image mode) or spec.artifact with spec.server.image")
	}
	for _, e := range srv.Env {
		if strings.HasPrefix(e.Name, reservedEnvPrefix) {
			return stalledf(ReasonInvalidSpec, "spec.server.env sets %s: variables starting with %s are Barge's serving contract; rename it", e.Name, reservedEnvPrefix)
		}
	}
	return nil
}

// edgeServer is what runs on each matching node for one InferenceModel.
type edgeServer struct {
	model     *v1alpha1.InferenceModel
	modelName string
	image     string
	command   []string
	args      []string
	port      int32
	// runtimeEnv comes from the runtime table, when its image runs.
	runtimeEnv map[string]string
	// digest is what the pods serve: files, or the image's digest.
	digest string
	// hostPath is the node's version directory of files; empty in image
	// mode.
	hostPath string
	// preprocess and postprocess: the artifact has those directories.
	preprocess, postprocess bool
	// labelsFile is a label file of the artifact, relative to its top.
	labelsFile string
	// labels are the manifest's dev.barge.labels, when it has them.
	labels []string
}

// edgeServer decides the serving container: spec.image in image mode;
// otherwise spec.server.image or the runtime table's image for the
// framework, with the files of digest files mounted.
func (r *InferenceModelReconciler) edgeServer(ctx context.Context, s *modelScope, files string) (edgeServer, error) {
	m := s.model
	srv := m.Spec.Server
	if srv == nil {
		srv = &v1alpha1.ServerSpec{}
	}
	w := edgeServer{model: m, modelName: modelName(m), command: srv.Command, args: srv.Args, port: srv.Port}
	if m.Spec.Image != "" {
		w.image = s.src.Repository + "@" + m.Status.Resolved.Digest
		w.digest = m.Status.Resolved.Digest
		if w.port == 0 {
			w.port = r.opts.ServingImages.servingPort(m.Spec.FrameworkType)
		}
		return w, nil
	}
	framework := m.Spec.FrameworkType
	if f := m.Status.Metadata["edge.framework"]; f != "" {
		// A joint model's edge part names its own framework;
		// spec.frameworkType chooses the cloud part's runtime.
		framework = f
	}
	if framework == "" {
		framework = m.Status.Metadata["framework"]
	}
	rt, hasRuntime := r.opts.ServingImages[strings.ToLower(framework)]
	switch {
	case srv.Image != "":
		if err := r.checkServerImage(srv.Image); err != nil {
			return w, err
		}
		w.image = srv.Image
	case hasRuntime:
		w.image, w.runtimeEnv = rt.Image, rt.Env
		if len(w.command) == 0 && len(w.args) == 0 {
			w.command, w.args = rt.Command, rt.Args
		}
	default:
		return w, stalledf(ReasonNoServingImage, "no serving image for frameworkType %q: set spec.server.image, or spec.frameworkType to one of %s, or add it to the controller's --serving-images file",
			framework, r.opts.ServingImages.names())
	}
	if w.port == 0 {
		w.port = defaultImagePort
		if hasRuntime && rt.Port > 0 {
			w.port = rt.Port
		}
	}
	dir, err := versionDir(r.opts.EdgeRoot, m.Namespace, artifactName(kindInferenceModel, m.Name), files)
	if err != nil {
		return w, err
	}
	w.hostPath, w.digest = dir, files
	in, err := r.resolver.inspect(ctx, &s.repo, s.src, ocispec.Descriptor{Digest: digest.Digest(files)})
	if err != nil {
		return w, err
	}
	w.preprocess, w.postprocess, w.labelsFile = hasDir(in.Artifact, artifact.RolePreprocess), hasDir(in.Artifact, artifact.RolePostprocess), labelFile(in.Artifact)
	w.labels = in.Artifact.Labels
	return w, nil
}

// checkServerImage refuses a spec.server.image that is not an image
// reference, or whose registry --allowed-registries leaves out.
func (r *InferenceModelReconciler) checkServerImage(image string) error {
	return checkImage(r.opts.AllowedRegistries, "spec.server.image", image)
}

// checkImage refuses an image an object names (field) that is not an image
// reference, or whose registry the allow-list leaves out: the allow-list
// holds for every image an object names, not only for what the controller
// fetches. The runtime tables' images are the operator's own.
func checkImage(allowed []string, field, image string) error {
	src, err := imageSource("", image, false, nil)
	if err != nil {
		return stalledf(ReasonInvalidReference, "%s %q is not an image reference: write it as [HOST/]REPOSITORY[:TAG|@DIGEST]", field, image)
	}
	if len(allowed) > 0 && !slices.Contains(allowed, src.host()) {
		return stalledf(ReasonRegistryNotAllowed, "%s %s is on registry %s, which is not allowed: this controller runs images only from %s (--allowed-registries)",
			field, image, src.host(), strings.Join(allowed, ", "))
	}
	return nil
}

// versionDir is where a node's puller keeps the files of digest d:
// <root>/artifacts/<namespace>/<name>/versions/<algorithm>-<hex>, the
// layout of edgepuller/unpack. It is the controller's own configuration,
// never a path a node reports, that decides what a pod mounts.
func versionDir(root, namespace, name, d string) (string, error) {
	dg, err := digest.Parse(d)
	if err != nil {
		return "", fmt.Errorf("files digest %q: %w", d, err)
	}
	return path.Join(root, "artifacts", namespace, name, "versions", string(dg.Algorithm())+"-"+dg.Encoded()), nil
}

// hasDir: the artifact has files under the top-level directory dir (or
// dir itself, a tar layer unpacked there).
func hasDir(a *artifact.Artifact, dir string) bool {
	return slices.ContainsFunc(a.Files, func(f artifact.File) bool {
		return f.Path == dir || strings.HasPrefix(f.Path, dir+"/")
	})
}

// labelFile is the artifact's label file at its top, if it has one.
func labelFile(a *artifact.Artifact) string {
	for _, name := range labelFiles {
		if slices.ContainsFunc(a.Files, func(f artifact.File) bool { return f.Path == name && !f.Unpack }) {
			return name
		}
	}
	return ""
}

func (w edgeServer) modelDir() string { return modelsDir + "/" + w.modelName }

// env is the serving container's environment: the contract first, then
// MODEL_NAME and MODEL_DIR (the cloud layer's names, which the runtime
// table's arguments use), the runtime's, and the user's, each overriding
// an earlier variable of its name.
func (w edgeServer) env() ([]*corev1ac.EnvVarApplyConfiguration, error) {
	var out []*corev1ac.EnvVarApplyConfiguration
	set := func(e *corev1ac.EnvVarApplyConfiguration) {
		for i := range out {
			if *out[i].Name == *e.Name {
				out[i] = e
				return
			}
		}
		out = append(out, e)
	}
	val := func(name, value string) { set(corev1ac.EnvVar().WithName(name).WithValue(value)) }
	val(EnvModelName, w.modelName)
	val(EnvModelDigest, w.digest)
	if w.hostPath != "" {
		dir := w.modelDir()
		val(EnvModelDir, dir)
		if w.preprocess {
			val(EnvPreprocessDir, dir+"/"+artifact.RolePreprocess)
		}
		if w.postprocess {
			val(EnvPostprocessDir, dir+"/"+artifact.RolePostprocess)
		}
		switch {
		case len(w.labels) > 0:
			val(EnvLabelsFile, labelsDir+"/"+labelsFileName)
		case w.labelsFile != "":
			val(EnvLabelsFile, dir+"/"+w.labelsFile)
		}
		val("MODEL_NAME", w.modelName)
		val("MODEL_DIR", dir)
	}
	for _, k := range slices.Sorted(maps.Keys(w.runtimeEnv)) {
		val(k, w.runtimeEnv[k])
	}
	if srv := w.model.Spec.Server; srv != nil {
		for _, e := range srv.Env {
			ac := &corev1ac.EnvVarApplyConfiguration{}
			if err := convert(e, ac); err != nil {
				return nil, fmt.Errorf("spec.server.env %s: %w", e.Name, err)
			}
			set(ac)
		}
	}
	return out, nil
}

// daemonSet is the serving DaemonSet: one pod on each matching node, which
// mounts that node's files of w.digest read-only. OnDelete: the controller
// itself restarts each pod, once its node holds the new files.
func (w edgeServer) daemonSet() (*appsv1ac.DaemonSetApplyConfiguration, error) {
	m := w.model
	srv := m.Spec.Server
	if srv == nil {
		srv = &v1alpha1.ServerSpec{}
	}
	env, err := w.env()
	if err != nil {
		return nil, err
	}
	ctr := corev1ac.Container().WithName(serverContainer).WithImage(w.image).
		WithPorts(corev1ac.ContainerPort().WithName("http").WithContainerPort(w.port).WithProtocol(corev1.ProtocolTCP)).
		WithEnv(env...).
		WithReadinessProbe(corev1ac.Probe().WithTCPSocket(corev1ac.TCPSocketAction().WithPort(intstr.FromString("http"))))
	if len(w.command) > 0 {
		ctr.WithCommand(w.command...)
	}
	if len(w.args) > 0 {
		ctr.WithArgs(w.args...)
	}
	if len(srv.Resources.Limits) > 0 || len(srv.Resources.Requests) > 0 || len(srv.Resources.Claims) > 0 {
		res := &corev1ac.ResourceRequirementsApplyConfiguration{}
		if err := convert(srv.Resources, res); err != nil {
			return nil, fmt.Errorf("spec.server.resources: %w", err)
		}
		ctr.WithResources(res)
	}
	// The server reads the model; it has no business with the API server.
	pod := corev1ac.PodSpec().WithAutomountServiceAccountToken(false)
	annotations := map[string]string{v1alpha1.DigestAnnotation: w.digest}
	if w.hostPath != "" {
		pod.WithVolumes(corev1ac.Volume().WithName("model").WithHostPath(
			corev1ac.HostPathVolumeSource().WithPath(w.hostPath).WithType(corev1.HostPathDirectory)))
		ctr.WithVolumeMounts(corev1ac.VolumeMount().WithName("model").WithMountPath(w.modelDir()).WithReadOnly(true))
	}
	if w.hostPath != "" && len(w.labels) > 0 {
		annotations[labelsAnnotation] = strings.Join(w.labels, "\n") + "\n"
		pod.WithVolumes(corev1ac.Volume().WithName("barge-labels").WithDownwardAPI(corev1ac.DownwardAPIVolumeSource().WithItems(
			corev1ac.DownwardAPIVolumeFile().WithPath(labelsFileName).WithFieldRef(
				corev1ac.ObjectFieldSelector().WithFieldPath(fmt.Sprintf("metadata.annotations['%s']", labelsAnnotation))))))
		ctr.WithVolumeMounts(corev1ac.VolumeMount().WithName("barge-labels").WithMountPath(labelsDir).WithReadOnly(true))
	}
	if err := withJoint(m, pod, ctr); err != nil {
		return nil, err
	}
	pod.WithContainers(ctr)
	if len(m.Spec.NodeSelector) > 0 {
		pod.WithNodeSelector(m.Spec.NodeSelector)
	}
	for _, t := range srv.Tolerations {
		ac := &corev1ac.TolerationApplyConfiguration{}
		if err := convert(t, ac); err != nil {
			return nil, fmt.Errorf("spec.server.tolerations: %w", err)
		}
		pod.WithTolerations(ac)
	}
	if secret := m.Spec.PullSecretRef; secret != nil {
		pod.WithImagePullSecrets(corev1ac.LocalObjectReference().WithName(secret.Name))
	}
	selector := map[string]string{edgeServerLabel: labelValue(m.Name)}
	tmpl := corev1ac.PodTemplateSpec().
		WithLabels(map[string]string{edgeServerLabel: labelValue(m.Name), managedByLabel: managedByValue}).
		WithAnnotations(annotations).
		WithSpec(pod)
	b, err := json.Marshal(tmpl)
	if err != nil {
		return nil, fmt.Errorf("hash the serving pod template: %w", err)
	}
	sum := sha256.Sum256(b)
	tmpl.WithAnnotations(map[string]string{templateHashAnnotation: hex.EncodeToString(sum[:8])})
	return appsv1ac.DaemonSet(m.Name, m.Namespace).
		WithLabels(modelLabels(m)).
		WithOwnerReferences(modelOwnerReference(m)).
		WithSpec(appsv1ac.DaemonSetSpec().
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
			WithUpdateStrategy(appsv1ac.DaemonSetUpdateStrategy().WithType(appsv1.OnDeleteDaemonSetStrategyType)).
			WithTemplate(tmpl)), nil
}

// withJoint gives the serving pod of a joint model its cloud part's
// address (jointEdgeExtras); other models' pods are left as they are.
func withJoint(m *v1alpha1.InferenceModel, pod *corev1ac.PodSpecApplyConfiguration, ctr *corev1ac.ContainerApplyConfiguration) error {
	env, volumes, mounts := jointEdgeExtras(m)
	for _, e := range env {
		ac := &corev1ac.EnvVarApplyConfiguration{}
		if err := convert(e, ac); err != nil {
			return err
		}
		ctr.WithEnv(ac)
	}
	for _, v := range volumes {
		ac := &corev1ac.VolumeApplyConfiguration{}
		if err := convert(v, ac); err != nil {
			return err
		}
		pod.WithVolumes(ac)
	}
	for _, vm := range mounts {
		ac := &corev1ac.VolumeMountApplyConfiguration{}
		if err := convert(vm, ac); err != nil {
			return err
		}
		ctr.WithVolumeMounts(ac)
	}
	return nil
}

// convert turns an API value into its apply configuration, which has the
// same JSON form.
func convert(in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// modelLabels are the labels of what the controller makes for a model.
func modelLabels(m *v1alpha1.InferenceModel) map[string]string {
	l := ownerLabels(kindInferenceModel, m.Name)
	l[managedByLabel] = managedByValue
	return l
}

// modelOwnerReference makes m the controller of an object, so the garbage
// collector deletes it with m.
func modelOwnerReference(m *v1alpha1.InferenceModel) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(v1alpha1.GroupVersion.String()).WithKind(kindInferenceModel).
		WithName(m.Name).WithUID(m.UID).
		WithController(true).WithBlockOwnerDeletion(true)
}

// templateHash is the hash annotation of an applied DaemonSet's template.
func templateHash(ds *appsv1ac.DaemonSetApplyConfiguration) string {
	if ds.Spec == nil || ds.Spec.Template == nil {
		return ""
	}
	return ds.Spec.Template.Annotations[templateHashAnnotation]
}

// servingPods lists the pods of the applied DaemonSet ds, uncached: a
// restart decides from what the API server holds now, so a stale cache can
// never restart more pods than maxConcurrentNodes allows.
func (r *InferenceModelReconciler) servingPods(ctx context.Context, m *v1alpha1.InferenceModel, ds *appsv1ac.DaemonSetApplyConfiguration) ([]*corev1.Pod, error) {
	var list corev1.PodList
	if err := r.reader.List(ctx, &list, client.InNamespace(m.Namespace), client.MatchingLabels{edgeServerLabel: labelValue(m.Name)}); err != nil {
		return nil, fmt.Errorf("list serving pods of %s/%s: %w", m.Namespace, m.Name, err)
	}
	var out []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if ref := metav1.GetControllerOf(p); ref != nil && ds.UID != nil && ref.UID == *ds.UID {
			out = append(out, p)
		}
	}
	return out, nil
}

// planRestarts chooses the serving pods to delete now, so that the
// DaemonSet controller recreates them on the current template (hash). A
// pod whose digest differs waits until its node holds the files of digest
// (filesReady). A node is in flight while its pod on the current template
// is not Ready, while its pod terminates, and while it has none of the
// desired pods yet; restarts fill what maxConcurrent leaves, pods that
// serve nothing first, then by node name, so every pass picks the same.
func planRestarts(pods []*corev1.Pod, hash, digest string, filesReady func(node string) bool, desired, maxConcurrent int32) []*corev1.Pod {
	inFlight := 0
	nodes := map[string]bool{}
	var candidates []*corev1.Pod
	for _, p := range pods {
		nodes[p.Spec.NodeName] = true
		switch {
		case p.DeletionTimestamp != nil:
			inFlight++
		case p.Annotations[templateHashAnnotation] == hash:
			if !podReady(p) {
				inFlight++
			}
		case p.Spec.NodeName == "":
			// Not bound to a node yet: nothing serves from it.
			candidates = append(candidates, p)
		case p.Annotations[v1alpha1.DigestAnnotation] != digest && !filesReady(p.Spec.NodeName):
			// Keeps serving its version until the new files are there.
		default:
			candidates = append(candidates, p)
		}
	}
	inFlight += max(int(desired)-len(nodes), 0)
	slices.SortFunc(candidates, func(a, b *corev1.Pod) int {
		if ra, rb := podReady(a), podReady(b); ra != rb {
			if ra {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Spec.NodeName, b.Spec.NodeName)
	})
	budget := max(int(maxConcurrent), 1) - inFlight
	if budget <= 0 {
		return nil
	}
	return candidates[:min(budget, len(candidates))]
}

// servingByNode is what each node's serving pod reports. Of two pods on a
// node (one terminating), the live one speaks.
func servingByNode(pods []*corev1.Pod) map[string]nodeServing {
	out := map[string]nodeServing{}
	live := map[string]bool{}
	for _, p := range pods {
		node := p.Spec.NodeName
		if node == "" || (live[node] && p.DeletionTimestamp != nil) {
			continue
		}
		sv := nodeServing{digest: p.Annotations[v1alpha1.DigestAnnotation], failed: podFailure(p)}
		sv.ready = p.DeletionTimestamp == nil && podReady(p)
		out[node] = sv
		live[node] = live[node] || p.DeletionTimestamp == nil
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podFailure says why a pod cannot serve, shortly, or "" while it can.
func podFailure(p *corev1.Pod) string {
	if p.Status.Phase == corev1.PodFailed {
		return clipTo(strings.TrimSpace(fmt.Sprintf("pod %s failed: %s %s", p.Name, p.Status.Reason, p.Status.Message)), podMessage)
	}
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if w := cs.State.Waiting; w != nil && failingReasons[w.Reason] {
			return clipTo(strings.TrimSpace(fmt.Sprintf("%s: %s %s", cs.Name, w.Reason, w.Message)), podMessage)
		}
		if cs.RestartCount > maxServingRestarts {
			msg := fmt.Sprintf("%s restarted %d times", cs.Name, cs.RestartCount)
			if t := cs.LastTerminationState.Terminated; t != nil {
				msg += fmt.Sprintf(", last %s (exit code %d)", t.Reason, t.ExitCode)
			}
			return clipTo(msg, podMessage)
		}
	}
	return ""
}

// podMessage bounds what a condition quotes of a pod.
const podMessage = 160

// forServingPod maps a serving pod's event to its model: the pod's
// DaemonSet is named after it.
func (r *InferenceModelReconciler) forServingPod(_ context.Context, pod client.Object) []reconcile.Request {
	if _, ok := pod.GetLabels()[edgeServerLabel]; !ok {
		return nil
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.Kind != "DaemonSet" || ref.APIVersion != appsv1.SchemeGroupVersion.String() {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: pod.GetNamespace(), Name: ref.Name}}}
}
