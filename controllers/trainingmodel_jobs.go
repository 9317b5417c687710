package controllers

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bargeml/barge/api/v1alpha1"
)

// The trainer contract: the environment of a trainer Job. The README's
// "Training at the edge" section documents it for users; EnvModelName is
// the serving contract's.
const (
	// EnvTrainDir is the model's train/ code: $BARGE_MODEL_DIR/train.
	EnvTrainDir = "BARGE_TRAIN_DIR"
	// EnvDataDir is the node's data, read-only.
	EnvDataDir = "BARGE_DATA_DIR"
	// EnvOutputDir is where the trainer writes its update and DONE.
	EnvOutputDir = "BARGE_OUTPUT_DIR"
	// EnvRound is the round, from 1.
	EnvRound = "BARGE_ROUND"
	// EnvNodeName is the node the trainer runs on.
	EnvNodeName = "BARGE_NODE_NAME"
)

// The aggregate contract (spec.aggregation Script): the environment of the
// model's aggregate code, run between `barge aggregate fetch` and `barge
// aggregate publish` in the aggregation Job. The README's "Training at the
// edge" section documents it for users.
const (
	// EnvBaseDir is the round's base model's files.
	EnvBaseDir = "BARGE_BASE_DIR"
	// EnvUpdatesDir holds <node>/ (each update's files) and updates.json.
	EnvUpdatesDir = "BARGE_UPDATES_DIR"
	// EnvAggregateDir is the model's aggregate/ code: $BARGE_BASE_DIR/aggregate.
	EnvAggregateDir = "BARGE_AGGREGATE_DIR"
	// EnvAggregateOutputDir is where the code writes the new model's files
	// (and, optionally, metrics.json).
	EnvAggregateOutputDir = "BARGE_AGGREGATE_OUTPUT_DIR"
)

// Where a trainer's volumes are mounted in its container.
const (
	trainModelDir  = "/barge/model"
	trainDataDir   = "/barge/data"
	trainOutputDir = "/barge/output"
	// dockerConfigDir holds the aggregation Job's push credential.
	dockerConfigDir = "/barge/docker"
	// scriptWorkDir is the round's directory an aggregation script Job's
	// containers share (`barge aggregate fetch --dir`); scriptScratchDir the
	// script's own TMPDIR and HOME.
	scriptWorkDir    = "/barge/work"
	scriptScratchDir = "/barge/scratch"
)

// Labels of a TrainingModel's Jobs, by which the controller lists them.
const (
	trainingModelLabel = "barge.dev/trainingmodel"
	roundLabel         = "barge.dev/round"
	jobRoleLabel       = "barge.dev/job"
	jobRoleTrainer     = "trainer"
	jobRoleAggregate   = "aggregate"
)

// trainerBackoffLimit and aggregateBackoffLimit: a few retries for a flaky
// node or registry; a trainer that keeps failing is waited out by the
// round's timeout, an aggregation that keeps failing fails the round.
const (
	trainerBackoffLimit   = 2
	aggregateBackoffLimit = 2
)

// TrainerRuntime is the trainer of one framework when a TrainingModel has
// no spec.trainer.image. Kubernetes expands $(BARGE_TRAIN_DIR) and the
// other trainer variables in Command and Args.
type TrainerRuntime struct {
	Image   string            `json:"image"`
	Command []string          `json:"command,omitempty"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// Aggregate is the command that runs the model's aggregate code in
	// Image for spec.aggregation Script; if empty (and with
	// spec.trainer.image), the executable $(BARGE_AGGREGATE_DIR)/aggregate.
	Aggregate []string `json:"aggregate,omitempty"`
}

// aggregateEntry is the model's aggregate executable that runs when a
// runtime has no Aggregate command.
const aggregateEntry = "aggregate/aggregate"

// aggregateCommand is the command of the aggregate code in rt's image.
func (rt TrainerRuntime) aggregateCommand() []string {
	if len(rt.Aggregate) > 0 {
		return rt.Aggregate
	}
	return []string{"$(" + EnvAggregateDir + ")/aggregate"}
}

// TrainerImages maps a frameworkType (lower case) to its trainer. The
// built-in defaults run the model's train/train.py with the framework's
// official image:
//
//	pytorch:    pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime  python $(BARGE_TRAIN_DIR)/train.py
//	tensorflow: tensorflow/tensorflow:2.17.0                   python $(BARGE_TRAIN_DIR)/train.py
type TrainerImages map[string]TrainerRuntime

// DefaultTrainerImages returns the built-in trainers described on
// TrainerImages; with spec.aggregation Script they run the model's
// aggregate/aggregate.py.
func DefaultTrainerImages() TrainerImages {
	script := []string{"python", "$(" + EnvTrainDir + ")/train.py"}
	aggregate := []string{"python", "$(" + EnvAggregateDir + ")/aggregate.py"}
	return TrainerImages{
		"pytorch":    {Image: "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", Command: script, Aggregate: aggregate},
		"tensorflow": {Image: "tensorflow/tensorflow:2.17.0", Command: script, Aggregate: aggregate},
	}
}

func (t TrainerImages) names() string { return strings.Join(slices.Sorted(maps.Keys(t)), ", ") }

// jobName is a Job of a TrainingModel: <tm>-r<round>-<suffix>, cut to the
// 63 characters a Job's name may have (it becomes a label of its pods).
func jobName(tm string, round int32, suffix string) string {
	return shorten(fmt.Sprintf("%s-r%d-%s", tm, round, suffix), 63)
}

func trainerJobName(tm string, round int32, node string) string { return jobName(tm, round, node) }

func aggregateJobName(tm string, round int32) string { return jobName(tm, round, "aggregate") }

// roundTag is the tag of a round's global model in spec.output.
func roundTag(tm string, round int32) string {
	return shorten(fmt.Sprintf("train-%s-r%d", tm, round), 128)
}

func jobLabels(tm *v1alpha1.TrainingModel, round int32, role string) map[string]string {
	return map[string]string{
		managedByLabel:     managedByValue,
		trainingModelLabel: labelValue(tm.Name),
		roundLabel:         strconv.Itoa(int(round)),
		jobRoleLabel:       role,
	}
}

// trainerJob is what the controller asks of one node in one round.
type trainerJob struct {
	tm      *v1alpha1.TrainingModel
	round   int32
	node    string
	base    string
	edge    string // the controller's --edge-root
	runtime TrainerRuntime
	// dataDir is the host directory of the node's data: spec.localDataset,
	// or the Dataset's version directory.
	dataDir string
	// deadline bounds the trainer: a trainer that outlives the round's
	// timeout is of no use to it.
	deadline int64
}

// job is the trainer Job: pinned to the node, the round's global model,
// the node's data and the round's upload directory mounted from the host.
func (w trainerJob) job() (*batchv1.Job, error) {
	tm := w.tm
	artifactDir := artifactName(kindTrainingModel, tm.Name)
	model, err := versionDir(w.edge, tm.Namespace, artifactDir, w.base)
	if err != nil {
		return nil, err
	}
	output := path.Join(w.edge, v1alpha1.UploadDir(tm.Namespace, artifactDir, w.round))
	spec := tm.Spec.Trainer
	if spec == nil {
		spec = &v1alpha1.TrainerSpec{}
	}
	ctr := corev1.Container{
		Name:      "trainer",
		Image:     w.runtime.Image,
		Command:   w.runtime.Command,
		Args:      w.runtime.Args,
		Resources: spec.Resources,
		VolumeMounts: []corev1.VolumeMount{
			{Name: "model", MountPath: trainModelDir, ReadOnly: true},
			{Name: "data", MountPath: trainDataDir, ReadOnly: true},
			{Name: "output", MountPath: trainOutputDir},
		},
	}
	// As a container's command and args replace an image's entrypoint and
	// cmd: each replaces its own part of the runtime's.
	if spec.Image != "" {
		ctr.Image, ctr.Command, ctr.Args = spec.Image, nil, nil
	}
	if len(spec.Command) > 0 {
		ctr.Command = spec.Command
	}
	if len(spec.Args) > 0 {
		ctr.Args = spec.Args
	}
	// The contract first, then the runtime's and the user's (which may not
	// use the BARGE_ prefix: checkSpec refuses it).
	ctr.Env = []corev1.EnvVar{
		{Name: EnvModelName, Value: trainingModelName(tm)},
		{Name: EnvModelDir, Value: trainModelDir},
		{Name: EnvModelDigest, Value: w.base},
		{Name: EnvTrainDir, Value: trainModelDir + "/train"},
		{Name: EnvDataDir, Value: trainDataDir},
		{Name: EnvOutputDir, Value: trainOutputDir},
		{Name: EnvRound, Value: strconv.Itoa(int(w.round))},
		{Name: EnvNodeName, Value: w.node},
	}
	if spec.Image == "" {
		for _, k := range slices.Sorted(maps.Keys(w.runtime.Env)) {
			ctr.Env = append(ctr.Env, corev1.EnvVar{Name: k, Value: w.runtime.Env[k]})
		}
	}
	ctr.Env = append(ctr.Env, spec.Env...)
	directory, orCreate := corev1.HostPathDirectory, corev1.HostPathDirectoryOrCreate
	labels := jobLabels(tm, w.round, jobRoleTrainer)
	podLabels := map[string]string{trainingModelLabel: labels[trainingModelLabel], roundLabel: labels[roundLabel], jobRoleLabel: jobRoleTrainer}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: trainerJobName(tm.Name, w.round, w.node), Namespace: tm.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:          new(int32(trainerBackoffLimit)),
			ActiveDeadlineSeconds: new(max(w.deadline, 1)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					NodeName:      w.node,
					RestartPolicy: corev1.RestartPolicyNever,
					Tolerations:   spec.Tolerations,
					// The trainer needs no API access: no token of the
					// namespace's default ServiceAccount reaches the node.
					AutomountServiceAccountToken: new(false),
					Containers:                   []corev1.Container{ctr},
					Volumes: []corev1.Volume{
						{Name: "model", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: model, Type: &directory}}},
						{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: w.dataDir, Type: &directory}}},
						{Name: "output", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: output, Type: &orCreate}}},
					},
				},
			},
		},
	}, nil
}

// aggregateJob is the cloud Job that turns a round's updates into the next
// global model: `barge aggregate fedavg`, or, with script, the model's own
// aggregate code between `barge aggregate fetch` and `publish`.
type aggregateJob struct {
	tm         *v1alpha1.TrainingModel
	round      int32
	last       bool
	baseRef    string // repository@digest
	base       string // its digest
	output     string
	updates    []string
	bargeImage string
	// script is the runtime that runs the aggregate code (spec.aggregation
	// Script); nil for FedAvg.
	script *TrainerRuntime
}

// args are `barge aggregate fedavg`'s, as the CLI takes them; the last
// round also promotes when the result passes spec.promote.require.
func (w aggregateJob) args() []string {
	args := append([]string{"aggregate", "fedavg"}, w.roundArgs()...)
	args = append(args, w.updateArgs()...)
	return append(args, w.pushArgs()...)
}

// fetchArgs and publishArgs are those of the halves of fedavg around a
// script, with the same choice of updates and the same push.
func (w aggregateJob) fetchArgs() []string {
	args := append([]string{"aggregate", "fetch"}, w.roundArgs()...)
	args = append(args, w.updateArgs()...)
	args = append(args, "--updates-repo", w.output, "--dir", scriptWorkDir)
	return append(args, w.plainHTTP()...)
}

func (w aggregateJob) publishArgs() []string {
	args := append([]string{"aggregate", "publish", "--dir", scriptWorkDir}, w.roundArgs()...)
	return append(args, w.pushArgs()...)
}

func (w aggregateJob) roundArgs() []string {
	return []string{"--base", w.baseRef, "--round", strconv.Itoa(int(w.round)), "--run", string(w.tm.UID)}
}

func (w aggregateJob) updateArgs() []string {
	var args []string
	for _, u := range w.updates {
		args = append(args, "--update", u)
	}
	return args
}

func (w aggregateJob) pushArgs() []string {
	tm := w.tm
	args := []string{"--push", w.output + ":" + roundTag(tm.Name, w.round)}
	if p := tm.Spec.Promote; w.last && p != nil {
		args = append(args, "--promote", p.Version)
		for _, req := range p.Require {
			args = append(args, "--require", req)
		}
	}
	return append(args, w.plainHTTP()...)
}

func (w aggregateJob) plainHTTP() []string {
	if w.tm.Spec.Insecure {
		return []string{"--plain-http"}
	}
	return nil
}

// bargeContainer runs barge with args and the push credential.
func (w aggregateJob) bargeContainer(name string, args []string) corev1.Container {
	ctr := corev1.Container{
		Name:    name,
		Image:   w.bargeImage,
		Command: []string{"barge"},
		Args:    args,
		// Tensors stream through /tmp in bounded chunks; the image's
		// root file system may be read-only.
		VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
		Env:          []corev1.EnvVar{{Name: "TMPDIR", Value: "/tmp"}, {Name: "HOME", Value: "/tmp"}},
	}
	if w.tm.Spec.PushSecretRef != nil {
		// barge reads credentials from $DOCKER_CONFIG/config.json.
		ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: "push-credentials", MountPath: dockerConfigDir, ReadOnly: true})
		ctr.Env = append(ctr.Env, corev1.EnvVar{Name: "DOCKER_CONFIG", Value: dockerConfigDir})
	}
	return ctr
}

// scriptContainer runs the model's aggregate code over the round's
// directory, with neither the push credential nor an API token: it is
// code from the artifact.
func (w aggregateJob) scriptContainer() corev1.Container {
	rt := w.script
	ctr := corev1.Container{
		Name:    "script",
		Image:   rt.Image,
		Command: rt.aggregateCommand(),
		VolumeMounts: []corev1.VolumeMount{
			{Name: "work", MountPath: scriptWorkDir},
			{Name: "scratch", MountPath: scriptScratchDir},
		},
		Env: []corev1.EnvVar{
			{Name: EnvModelName, Value: trainingModelName(w.tm)},
			{Name: EnvModelDigest, Value: w.base},
			{Name: EnvRound, Value: strconv.Itoa(int(w.round))},
			{Name: EnvBaseDir, Value: scriptWorkDir + "/base"},
			{Name: EnvAggregateDir, Value: scriptWorkDir + "/base/aggregate"},
			{Name: EnvUpdatesDir, Value: scriptWorkDir + "/updates"},
			{Name: EnvAggregateOutputDir, Value: scriptWorkDir + "/out"},
			{Name: "TMPDIR", Value: scriptScratchDir},
			{Name: "HOME", Value: scriptScratchDir},
		},
	}
	for _, k := range slices.Sorted(maps.Keys(rt.Env)) {
		ctr.Env = append(ctr.Env, corev1.EnvVar{Name: k, Value: rt.Env[k]})
	}
	return ctr
}

func (w aggregateJob) job() *batchv1.Job {
	tm := w.tm
	emptyDir := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	volumes := []corev1.Volume{{Name: "tmp", VolumeSource: emptyDir}}
	if secret := tm.Spec.PushSecretRef; secret != nil {
		volumes = append(volumes, corev1.Volume{Name: "push-credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: secret.Name,
			Items:      []corev1.KeyToPath{{Key: corev1.DockerConfigJsonKey, Path: "config.json"}},
		}}})
	}
	ctr := w.bargeContainer("aggregate", w.args())
	var inits []corev1.Container
	if w.script != nil {
		// fetch, then the script, then publish: init containers run in
		// order, each to completion, sharing the work directory.
		volumes = append(volumes, corev1.Volume{Name: "work", VolumeSource: emptyDir}, corev1.Volume{Name: "scratch", VolumeSource: emptyDir})
		work := corev1.VolumeMount{Name: "work", MountPath: scriptWorkDir}
		fetch := w.bargeContainer("fetch", w.fetchArgs())
		fetch.VolumeMounts = append(fetch.VolumeMounts, work)
		inits = []corev1.Container{fetch, w.scriptContainer()}
		ctr = w.bargeContainer("publish", w.publishArgs())
		ctr.VolumeMounts = append(ctr.VolumeMounts, work)
	}
	labels := jobLabels(tm, w.round, jobRoleAggregate)
	podLabels := map[string]string{trainingModelLabel: labels[trainingModelLabel], roundLabel: labels[roundLabel], jobRoleLabel: jobRoleAggregate}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: aggregateJobName(tm.Name, w.round), Namespace: tm.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit: new(int32(aggregateBackoffLimit)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					AutomountServiceAccountToken: new(false),
					InitContainers:               inits,
					Containers:                   []corev1.Container{ctr},
					Volumes:                      volumes,
				},
			},
		},
	}
}

// jobFinished says whether a Job is done, and if it failed, why.
func jobFinished(j *batchv1.Job) (done, failed bool, why string) {
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return true, false, ""
		case batchv1.JobFailed:
			why = c.Reason
			if c.Message != "" {
				why += ": " + c.Message
			}
			return true, true, why
		}
	}
	return false, false, ""
}
