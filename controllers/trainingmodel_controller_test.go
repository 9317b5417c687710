package controllers

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/internal/testenv"
)

// trainFixture is one TrainingModel's world: its nodes, the registry's
// repositories of its initial model and its output.
type trainFixture struct {
	ns, ref, out  string
	repo, outRepo *remote.Repository
	initial       ocispec.Descriptor
	nodes         []string
	tm            *v1alpha1.TrainingModel
}

// trainModelFiles are a model with its training code.
var trainModelFiles = map[string]string{"model.safetensors": "weights r0", "train/train.py": "print('train')"}

// newTrainFixture pushes a trainable model 1.0.0, makes count nodes and
// creates the TrainingModel "fl" over them, as edit changes it.
func newTrainFixture(t *testing.T, count int, edit func(*v1alpha1.TrainingModel)) *trainFixture {
	t.Helper()
	return newTrainFixtureIn(t, env.Namespace(t), count, edit)
}

// trainingNodeArtifacts are the TrainingModel's NodeArtifacts by node.
func (f *trainFixture) trainingNodeArtifacts(t *testing.T) map[string]*v1alpha1.NodeArtifact {
	t.Helper()
	var list v1alpha1.NodeArtifactList
	if err := k8s.List(context.Background(), &list, client.InNamespace(f.ns), client.MatchingLabels{OwnerKindLabel: kindTrainingModel}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*v1alpha1.NodeArtifact{}
	for i := range list.Items {
		out[list.Items[i].Spec.NodeName] = &list.Items[i]
	}
	return out
}

// waitPlaced waits until every node has the TrainingModel's NodeArtifact on
// base for round, and returns them.
func (f *trainFixture) waitPlaced(t *testing.T, base string, round int32) map[string]*v1alpha1.NodeArtifact {
	t.Helper()
	var nas map[string]*v1alpha1.NodeArtifact
	eventually(t, fmt.Sprintf("round %d's NodeArtifacts on %s", round, shortText(base)), func() error {
		nas = f.trainingNodeArtifacts(t)
		for _, node := range f.nodes {
			na := nas[node]
			if na == nil || na.Spec.Digest != base || na.Spec.Upload == nil || na.Spec.Upload.Round != round {
				return fmt.Errorf("node %s: %+v", node, na)
			}
		}
		return nil
	})
	return nas
}

// pulled is each node's puller reporting base Ready.
func (f *trainFixture) pulled(t *testing.T, base string, nodes ...string) {
	t.Helper()
	nas := f.trainingNodeArtifacts(t)
	for _, node := range nodes {
		puller(t, nas[node], v1alpha1.NodeArtifactReady, base, "")
	}
}

// upload is node's puller uploading a trainer's update (as it says of
// itself: round, base, run) and reporting it for reportRound.
func (f *trainFixture) upload(t *testing.T, node string, reportRound int32, u artifact.Update) string {
	t.Helper()
	dir := t.TempDir()
	info := fmt.Sprintf(`{"samples": %d, "metrics": {"accuracy": 0.5}}`, u.Samples)
	for name, data := range map[string]string{"model.safetensors": "update of " + node + " " + u.Base.Digest.String(), artifact.UpdateInfoFile: info, artifact.UpdateDoneFile: ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	desc, err := artifact.PackUpdate(context.Background(), f.outRepo, dir, u)
	if err != nil {
		t.Fatal(err)
	}
	na := f.trainingNodeArtifacts(t)[node]
	before := na.DeepCopy()
	na.Status.Upload = &v1alpha1.UploadStatus{Round: reportRound, Phase: v1alpha1.UploadUploaded, Digest: desc.Digest.String(), Samples: u.Samples}
	if err := k8s.Status().Patch(context.Background(), na, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	return desc.Digest.String()
}

// update is a well-formed update of node for round from base.
func (f *trainFixture) update(node string, round int, base ocispec.Descriptor, samples int64) artifact.Update {
	return artifact.Update{Node: node, Round: round, Run: string(f.tm.UID), Base: base, UpdateInfo: artifact.UpdateInfo{Samples: samples}}
}

// job waits for the Job name of the TrainingModel.
func (f *trainFixture) job(t *testing.T, name string) *batchv1.Job {
	t.Helper()
	j := &batchv1.Job{}
	eventually(t, "Job "+name, func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: name}, j)
	})
	return j
}

// jobNames lists the namespace's Jobs.
func (f *trainFixture) jobNames(t *testing.T) []string {
	t.Helper()
	var list batchv1.JobList
	if err := k8s.List(context.Background(), &list, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range list.Items {
		if j.DeletionTimestamp == nil {
			names = append(names, j.Name)
		}
	}
	slices.Sort(names)
	return names
}

// finishJob writes what the Job controller writes when j ends; the
// aggregation's real work is done by the test, standing in for the Job.
func finishJob(t *testing.T, j *batchv1.Job, failed bool) {
	t.Helper()
	get(t, j)
	failures := int32(0)
	reason, msg := "", ""
	if failed {
		failures, reason, msg = 3, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit"
	}
	j.Status = testenv.FinishedJobStatus(j.CreationTimestamp.Time, time.Now(), failed, failures, reason, msg)
	if err := k8s.Status().Update(context.Background(), j); err != nil {
		t.Fatal(err)
	}
}

// aggregate stands in for the aggregation Job of round: it pushes the
// round's global model to the round tag with its metrics, and completes
// the Job.
func (f *trainFixture) aggregate(t *testing.T, round int32, metrics map[string]float64, tags ...string) ocispec.Descriptor {
	t.Helper()
	j := f.job(t, aggregateJobName("fl", round))
	files := map[string]string{"model.safetensors": fmt.Sprintf("weights r%d", round), "train/train.py": "print('train')"}
	desc := pushModel(t, f.outRepo, roundTag("fl", round), files, artifact.Metadata{})
	attach(t, f.outRepo, desc, metrics)
	for _, tag := range tags {
		tagAs(t, f.outRepo, desc, tag)
	}
	finishJob(t, j, false)
	return desc
}

func (f *trainFixture) waitStatus(t *testing.T, what string, check func(st *v1alpha1.TrainingModelStatus) error) {
	t.Helper()
	eventually(t, what, func() error {
		get(t, f.tm)
		return check(&f.tm.Status)
	})
}

// TestTrainingModelRounds: two rounds on three nodes. Each round puts the
// base on every node with the upload it asks for, starts a trainer pinned
// to each node once it holds the base, aggregates once all updates are in,
// and records the round's global model; the next round trains from it;
// the final model is promoted.
func TestTrainingModelRounds(t *testing.T) {
	f := newTrainFixture(t, 3, func(tm *v1alpha1.TrainingModel) {
		tm.Spec.Rounds = 2
		tm.Spec.Promote = &v1alpha1.PromoteSpec{Version: "1.1.0", Require: []string{"metrics.accuracy >= 0.8"}}
		tm.Spec.Trainer = &v1alpha1.TrainerSpec{Args: []string{"--epochs", "2"}, Env: []corev1.EnvVar{{Name: "LR", Value: "0.1"}}}
	})
	d0 := f.initial.Digest.String()
	nas := f.waitPlaced(t, d0, 1)
	get(t, f.tm)
	uid := string(f.tm.UID)
	for _, node := range f.nodes {
		want := v1alpha1.NodeArtifactSpec{NodeName: node, Reference: f.ref + "@" + d0, Digest: d0, Insecure: true, ArtifactName: "train-fl",
			Upload: &v1alpha1.UploadSpec{Round: 1, Repository: f.out, Run: uid}}
		got := nas[node].Spec
		if got.Upload == nil || *got.Upload != *want.Upload {
			t.Errorf("node %s: upload %+v, want %+v", node, got.Upload, want.Upload)
		}
		got.Upload, want.Upload = nil, nil
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("node %s: spec %+v, want %+v", node, got, want)
		}
	}
	f.waitStatus(t, "round 1 training", func(st *v1alpha1.TrainingModelStatus) error {
		if st.Phase != v1alpha1.TrainingTraining || st.Round != 1 || st.Initial == nil || st.Initial.Digest != d0 || st.Initial.Version != "1.0.0" {
			return fmt.Errorf("status %+v", st)
		}
		return conds{ready: metav1.ConditionFalse, reason: ReasonTraining, message: "round 1 of 2: 0 of 3 updates in; pulling the model", reconciling: true}.
			check(f.tm.Generation, st.ObservedGeneration, st.Conditions)
	})
	if jobs := f.jobNames(t); len(jobs) != 0 {
		t.Errorf("Jobs %v before any node holds the model", jobs)
	}

	// A trainer starts on each node that holds the base, pinned to it.
	f.pulled(t, d0, f.nodes[0])
	j := f.job(t, trainerJobName("fl", 1, f.nodes[0]))
	checkTrainerJob(t, f, j, f.nodes[0], 1, d0)
	f.pulled(t, d0, f.nodes[1:]...)
	for _, node := range f.nodes[1:] {
		f.job(t, trainerJobName("fl", 1, node))
	}

	// Two updates in: the round waits for the third.
	ups := []string{
		f.upload(t, f.nodes[0], 1, f.update(f.nodes[0], 1, f.initial, 100)),
		f.upload(t, f.nodes[1], 1, f.update(f.nodes[1], 1, f.initial, 200)),
	}
	f.waitStatus(t, "2 of 3 updates in", func(st *v1alpha1.TrainingModelStatus) error {
		if len(st.Rounds) != 1 || st.Rounds[0].Updates != 2 || st.Rounds[0].Samples != 300 || st.Rounds[0].Participants != 3 {
			return fmt.Errorf("rounds %+v", st.Rounds)
		}
		return conditionIs(st.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonTraining, "round 1 of 2: 2 of 3 updates in")
	})
	if slices.Contains(f.jobNames(t), aggregateJobName("fl", 1)) {
		t.Fatal("the round aggregates before its third update is in")
	}
	ups = append(ups, f.upload(t, f.nodes[2], 1, f.update(f.nodes[2], 1, f.initial, 300)))

	// All in: the aggregation Job, in the cloud, with exactly this round's updates.
	agg := f.job(t, aggregateJobName("fl", 1))
	checkAggregateJob(t, agg)
	args := strings.Join(agg.Spec.Template.Spec.Containers[0].Args, " ")
	got := updatesOf(agg)
	slices.Sort(got)
	slices.Sort(ups)
	if !strings.HasPrefix(args, "aggregate fedavg --base "+f.ref+"@"+d0+" --round 1 --run "+uid+" --update ") ||
		!strings.HasSuffix(args, " --push "+f.out+":train-fl-r1 --plain-http") || !slices.Equal(got, ups) || strings.Contains(args, "--promote") {
		t.Errorf("round 1's aggregation: barge %s", args)
	}
	f.waitStatus(t, "Aggregating", func(st *v1alpha1.TrainingModelStatus) error {
		if st.Phase != v1alpha1.TrainingAggregating {
			return fmt.Errorf("phase %s", st.Phase)
		}
		return conditionIs(st.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonAggregating, "aggregating 3 of 3 updates (600 samples)")
	})

	// The Job pushed round 1's model: round 2 trains from it, from spec.output.
	d1 := f.aggregate(t, 1, map[string]float64{"accuracy": 0.7})
	f.waitStatus(t, "round 2", func(st *v1alpha1.TrainingModelStatus) error {
		if st.Round != 2 || len(st.Rounds) != 2 || st.Rounds[1].Base != d1.Digest.String() {
			return fmt.Errorf("round %d, rounds %+v", st.Round, st.Rounds)
		}
		r1 := st.Rounds[0]
		if r1.Aggregated != d1.Digest.String() || r1.Tag != "train-fl-r1" || r1.AggregatedAt == nil || r1.StartedAt == nil ||
			fmt.Sprint(r1.Metrics) != "map[accuracy:0.7]" || r1.Updates != 3 || r1.Samples != 600 || r1.Base != d0 {
			return fmt.Errorf("round 1: %+v", r1)
		}
		return nil
	})
	nas = f.waitPlaced(t, d1.Digest.String(), 2)
	if r := nas[f.nodes[0]].Spec.Reference; r != f.out+"@"+d1.Digest.String() {
		t.Errorf("round 2's reference %s, want the output repository's", r)
	}
	eventually(t, "round 1's Jobs deleted", func() error {
		if jobs := f.jobNames(t); len(jobs) != 0 {
			return fmt.Errorf("jobs %v", jobs)
		}
		return nil
	})
	f.pulled(t, d1.Digest.String(), f.nodes...)
	for _, node := range f.nodes {
		f.job(t, trainerJobName("fl", 2, node))
		f.upload(t, node, 2, f.update(node, 2, d1, 100))
	}
	agg = f.job(t, aggregateJobName("fl", 2))
	args = strings.Join(agg.Spec.Template.Spec.Containers[0].Args, " ")
	if !strings.Contains(args, "--base "+f.out+"@"+d1.Digest.String()+" --round 2 ") ||
		!strings.HasSuffix(args, "--push "+f.out+":train-fl-r2 --promote 1.1.0 --require metrics.accuracy >= 0.8 --plain-http") {
		t.Errorf("round 2's aggregation: barge %s", args)
	}

	// The last aggregation passed require and tagged 1.1.0.
	d2 := f.aggregate(t, 2, map[string]float64{"accuracy": 0.85}, "1.1.0")
	f.waitStatus(t, "Completed and promoted", func(st *v1alpha1.TrainingModelStatus) error {
		if st.Phase != v1alpha1.TrainingCompleted || st.Promoted == nil || st.Promoted.Version != "1.1.0" || st.Promoted.Digest != d2.Digest.String() {
			return fmt.Errorf("phase %s, promoted %+v", st.Phase, st.Promoted)
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded,
			message: "trained 2 rounds: " + f.out + ":train-fl-r2 (" + shortText(d2.Digest.String()) + "); promoted to 1.1.0"}.check(f.tm.Generation, st.ObservedGeneration, st.Conditions)
	})
	eventually(t, "the NodeArtifacts deleted once trained", func() error {
		for node, na := range f.trainingNodeArtifacts(t) {
			if na.DeletionTimestamp == nil {
				return fmt.Errorf("node %s keeps %s", node, na.Name)
			}
		}
		return nil
	})
	for _, reason := range []string{ReasonRoundStarted, ReasonUpdatesIn, ReasonAggregated, ReasonPromoted} {
		eventually(t, reason+" event", func() error { return findEvent(f.ns, "fl", reason) })
	}
}

// checkTrainerJob checks the shape of a trainer Job: pinned to its node,
// never restarted in place, the model, data and upload directory mounted
// from the node's edge root, the trainer contract in its environment.
func checkTrainerJob(t *testing.T, f *trainFixture, j *batchv1.Job, node string, round int32, base string) {
	t.Helper()
	hex := strings.TrimPrefix(base, "sha256:")
	if ref := metav1.GetControllerOf(j); ref == nil || ref.Kind != kindTrainingModel || ref.Name != "fl" {
		t.Errorf("owner %+v", ref)
	}
	pod := j.Spec.Template.Spec
	if pod.NodeName != node || pod.RestartPolicy != corev1.RestartPolicyNever || j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit != 2 ||
		pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken || j.Spec.ActiveDeadlineSeconds == nil {
		t.Errorf("trainer pod: nodeName %q, restartPolicy %s, backoffLimit %v, token %v, deadline %v", pod.NodeName, pod.RestartPolicy, j.Spec.BackoffLimit, pod.AutomountServiceAccountToken, j.Spec.ActiveDeadlineSeconds)
	}
	dir, orCreate := corev1.HostPathDirectory, corev1.HostPathDirectoryOrCreate
	wantVolumes := []corev1.Volume{
		{Name: "model", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/barge/artifacts/" + f.ns + "/train-fl/versions/sha256-" + hex, Type: &dir}}},
		{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/data/local", Type: &dir}}},
		{Name: "output", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: fmt.Sprintf("/var/lib/barge/uploads/%s/train-fl/round-%d", f.ns, round), Type: &orCreate}}},
	}
	if fmt.Sprint(pod.Volumes) != fmt.Sprint(wantVolumes) {
		t.Errorf("volumes\n%v\nwant\n%v", pod.Volumes, wantVolumes)
	}
	c := pod.Containers[0]
	wantMounts := []corev1.VolumeMount{{Name: "model", MountPath: "/barge/model", ReadOnly: true}, {Name: "data", MountPath: "/barge/data", ReadOnly: true}, {Name: "output", MountPath: "/barge/output"}}
	if fmt.Sprint(c.VolumeMounts) != fmt.Sprint(wantMounts) {
		t.Errorf("mounts %v, want %v", c.VolumeMounts, wantMounts)
	}
	rt := DefaultTrainerImages()["pytorch"]
	if c.Image != rt.Image || !slices.Equal(c.Command, rt.Command) || !slices.Equal(c.Args, []string{"--epochs", "2"}) {
		t.Errorf("trainer %s %v %v, want the runtime table's pytorch image and command with spec.trainer.args", c.Image, c.Command, c.Args)
	}
	want := map[string]string{"BARGE_MODEL_NAME": "fl", "BARGE_MODEL_DIR": "/barge/model", "BARGE_MODEL_DIGEST": base, "BARGE_TRAIN_DIR": "/barge/model/train",
		"BARGE_DATA_DIR": "/barge/data", "BARGE_OUTPUT_DIR": "/barge/output", "BARGE_ROUND": fmt.Sprint(round), "BARGE_NODE_NAME": node, "LR": "0.1"}
	for name, value := range want {
		if !hasEnv(c.Env, name, value) {
			t.Errorf("env %s=%s missing from %v", name, value, c.Env)
		}
	}
}

// checkAggregateJob checks the shape of an aggregation Job: in the cloud,
// the controller's barge image, no API token, the push secret as a Docker
// config when there is one.
func checkAggregateJob(t *testing.T, j *batchv1.Job) {
	t.Helper()
	pod := j.Spec.Template.Spec
	c := pod.Containers[0]
	if pod.NodeName != "" || pod.RestartPolicy != corev1.RestartPolicyNever || c.Image != testBargeImage || !slices.Equal(c.Command, []string{"barge"}) ||
		pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("aggregation pod: node %q, restartPolicy %s, image %s, command %v", pod.NodeName, pod.RestartPolicy, c.Image, c.Command)
	}
}

// TestTrainingModelRoundTimeout: a node that never reports makes the round
// wait until roundTimeout, then aggregate without it, as minParticipants
// allows; stale updates (another round's, another base's) never count.
func TestTrainingModelRoundTimeout(t *testing.T) {
	// Long enough for the test to upload before it on a busy machine.
	const timeout = 8 * time.Second
	f := newTrainFixture(t, 4, func(tm *v1alpha1.TrainingModel) {
		tm.Spec.RoundTimeout = &metav1.Duration{Duration: timeout}
		tm.Spec.MinParticipants = new(int32(2))
		tm.Spec.PushSecretRef = &v1alpha1.LocalObjectReference{Name: "push"}
	})
	create(t, dockerConfigSecret(f.ns, "push", reg.Host(), "pusher", "secret"))
	d0 := f.initial.Digest.String()
	f.waitPlaced(t, d0, 1)
	f.pulled(t, d0, f.nodes...)
	other := pushModel(t, f.repo, "", map[string]string{"model.safetensors": "another base", "train/train.py": "x"}, artifact.Metadata{})
	a := f.upload(t, f.nodes[0], 1, f.update(f.nodes[0], 1, f.initial, 100))
	b := f.upload(t, f.nodes[1], 1, f.update(f.nodes[1], 1, f.initial, 100))
	f.upload(t, f.nodes[2], 1, f.update(f.nodes[2], 2, f.initial, 100)) // says round 2
	f.upload(t, f.nodes[3], 1, f.update(f.nodes[3], 1, other, 100))     // trained from another model
	agg := f.job(t, aggregateJobName("fl", 1))
	// Named in the order of the nodes' names.
	stale := []string{f.nodes[2] + "'s (round 2)", f.nodes[3] + "'s (trained from " + shortText(other.Digest.String()) + ")"}
	slices.Sort(stale)
	f.waitStatus(t, "aggregating 2 of 4, the stale updates named", func(st *v1alpha1.TrainingModelStatus) error {
		return conditionIs(st.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonAggregating,
			"aggregating 2 of 4 updates (200 samples) with Job fl-r1-aggregate; not counted: "+strings.Join(stale, ", "))
	})
	get(t, f.tm)
	deadline := f.tm.Status.Rounds[0].StartedAt.Add(timeout)
	if agg.CreationTimestamp.Time.Before(deadline) {
		t.Errorf("aggregation created at %s, before the round's timeout at %s", agg.CreationTimestamp, deadline)
	}
	got := strings.Join(agg.Spec.Template.Spec.Containers[0].Args, " ")
	if ups := updatesOf(agg); len(ups) != 2 || !slices.Contains(ups, a) || !slices.Contains(ups, b) {
		t.Errorf("aggregation: barge %s; want exactly the updates of %s and %s", got, f.nodes[0], f.nodes[1])
	}
	checkAggregateJob(t, agg)
	pod := agg.Spec.Template.Spec
	if !hasEnv(pod.Containers[0].Env, "DOCKER_CONFIG", "/barge/docker") || !hasMount(pod.Containers[0].VolumeMounts, "push-credentials", "/barge/docker") ||
		len(pod.Volumes) != 2 || pod.Volumes[1].Secret == nil || pod.Volumes[1].Secret.SecretName != "push" || pod.Volumes[1].Secret.Items[0].Path != "config.json" {
		t.Errorf("the push secret is not mounted as a Docker config: %+v", pod)
	}
	f.waitStatus(t, "2 of 4 aggregated", func(st *v1alpha1.TrainingModelStatus) error {
		if r := st.Rounds[0]; r.Updates != 2 || r.Participants != 4 || r.Samples != 200 {
			return fmt.Errorf("round %+v", r)
		}
		return nil
	})
}

// TestTrainingModelTooFewUpdates: fewer than minParticipants updates at the
// timeout fail the round, and the training, with a condition that says so
// and names the node whose upload failed.
func TestTrainingModelTooFewUpdates(t *testing.T) {
	f := newTrainFixture(t, 2, func(tm *v1alpha1.TrainingModel) {
		tm.Spec.RoundTimeout = &metav1.Duration{Duration: 6 * time.Second}
	})
	d0 := f.initial.Digest.String()
	f.waitPlaced(t, d0, 1)
	f.pulled(t, d0, f.nodes...)
	f.upload(t, f.nodes[0], 1, f.update(f.nodes[0], 1, f.initial, 100))
	// The other node's puller refused its trainer's update.
	na := f.trainingNodeArtifacts(t)[f.nodes[1]]
	before := na.DeepCopy()
	na.Status.Upload = &v1alpha1.UploadStatus{Round: 1, Phase: v1alpha1.UploadFailed, Message: "update.json: samples is 0"}
	if err := k8s.Status().Patch(context.Background(), na, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	f.waitStatus(t, "Failed", func(st *v1alpha1.TrainingModelStatus) error {
		if st.Phase != v1alpha1.TrainingFailed {
			return fmt.Errorf("phase %s", st.Phase)
		}
		msg := "round 1: 1 of 2 updates by the 6s timeout; minParticipants is 2; upload failed on 1 node(s), " + f.nodes[1] + ": update.json: samples is 0"
		if st.Rounds[0].Message != msg {
			return fmt.Errorf("round message %q", st.Rounds[0].Message)
		}
		return conds{ready: metav1.ConditionFalse, reason: ReasonRoundFailed, message: msg, stalled: true}.check(f.tm.Generation, st.ObservedGeneration, st.Conditions)
	})
	eventually(t, "RoundFailed event", func() error { return findEvent(f.ns, "fl", ReasonRoundFailed) })
	if slices.Contains(f.jobNames(t), aggregateJobName("fl", 1)) {
		t.Error("a failed round aggregated")
	}
}

// TestTrainingModelAggregationFails: a failed aggregation Job fails the
// training and names the Job and why; deleting the TrainingModel deletes
// its Jobs and its NodeArtifacts.
func TestTrainingModelAggregationFails(t *testing.T) {
	f := newTrainFixture(t, 1, nil)
	d0 := f.initial.Digest.String()
	f.waitPlaced(t, d0, 1)
	f.pulled(t, d0, f.nodes...)
	f.upload(t, f.nodes[0], 1, f.update(f.nodes[0], 1, f.initial, 10))
	agg := f.job(t, aggregateJobName("fl", 1))
	finishJob(t, agg, true)
	f.waitStatus(t, "Failed", func(st *v1alpha1.TrainingModelStatus) error {
		return conds{ready: metav1.ConditionFalse, reason: ReasonRoundFailed, stalled: true,
			message: "round 1: aggregation Job fl-r1-aggregate failed: BackoffLimitExceeded: Job has reached the specified backoff limit"}.check(f.tm.Generation, f.tm.Status.ObservedGeneration, st.Conditions)
	})
	if st := f.tm.Status; st.Phase != v1alpha1.TrainingFailed {
		t.Errorf("phase %s", st.Phase)
	}

	if err := k8s.Delete(context.Background(), f.tm); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Jobs deleted", func() error {
		if jobs := f.jobNames(t); len(jobs) != 0 {
			return fmt.Errorf("jobs %v", jobs)
		}
		return nil
	})
	na := f.trainingNodeArtifacts(t)[f.nodes[0]]
	eventually(t, "NodeArtifact deleted", func() error {
		get(t, na)
		if na.DeletionTimestamp == nil {
			return fmt.Errorf("not deleted")
		}
		return nil
	})
	releaseFiles(t, na)
	eventually(t, "TrainingModel gone", func() error {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(f.tm), &v1alpha1.TrainingModel{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
}

// TestTrainingModelDataset: with spec.dataset a node trains once it holds
// the Dataset too, on the Dataset's version directory.
func TestTrainingModelDataset(t *testing.T) {
	ns := env.Namespace(t)
	dref := repoName(t, "shards")
	dd := pushDataset(t, openRepo(t, dref), "1", datasetConfig{Format: "csv", NumberOfSamples: 10}).Digest.String()
	create(t, dataset(ns, "shards", dref, ""))
	f := newTrainFixtureIn(t, ns, 1, func(tm *v1alpha1.TrainingModel) {
		tm.Spec.LocalDataset = ""
		tm.Spec.Dataset = &v1alpha1.LocalObjectReference{Name: "shards"}
	})
	d0 := f.initial.Digest.String()
	f.waitPlaced(t, d0, 1)
	f.pulled(t, d0, f.nodes...)
	f.waitStatus(t, "waiting for the Dataset", func(st *v1alpha1.TrainingModelStatus) error {
		return conditionIs(st.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, ReasonTraining, "waiting for Dataset shards on "+f.nodes[0])
	})
	if jobs := f.jobNames(t); len(jobs) != 0 {
		t.Errorf("Jobs %v before the node holds the Dataset", jobs)
	}
	var dna *v1alpha1.NodeArtifact
	eventually(t, "the Dataset's NodeArtifact", func() error {
		var list v1alpha1.NodeArtifactList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{OwnerKindLabel: kindDataset}); err != nil || len(list.Items) != 1 {
			return fmt.Errorf("%d NodeArtifacts (%v)", len(list.Items), err)
		}
		dna = &list.Items[0]
		return nil
	})
	puller(t, dna, v1alpha1.NodeArtifactReady, dd, "")
	j := f.job(t, trainerJobName("fl", 1, f.nodes[0]))
	want := "/var/lib/barge/artifacts/" + ns + "/dataset-shards/versions/sha256-" + strings.TrimPrefix(dd, "sha256:")
	if v := j.Spec.Template.Spec.Volumes[1]; v.Name != "data" || v.HostPath == nil || v.HostPath.Path != want {
		t.Errorf("data volume %+v, want the Dataset's version directory %s", v, want)
	}
}

// newTrainFixtureIn is newTrainFixture in a namespace the test made.
func newTrainFixtureIn(t *testing.T, ns string, count int, edit func(*v1alpha1.TrainingModel)) *trainFixture {
	t.Helper()
	f := &trainFixture{ns: ns, ref: freshRepo(t), out: freshRepo(t)}
	f.repo, f.outRepo = openRepo(t, f.ref), openRepo(t, f.out)
	f.initial = pushModel(t, f.repo, "1.0.0", trainModelFiles, artifact.Metadata{})
	f.nodes = nodes(t, f.ns, nil, count)
	f.tm = &v1alpha1.TrainingModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "fl"},
		Spec: v1alpha1.TrainingModelSpec{FrameworkType: "pytorch", NodeSelector: map[string]string{"barge-test": f.ns},
			Artifact: f.ref, TargetVersion: "1.0.0", Output: f.out, Insecure: true, LocalDataset: "/data/local"},
	}
	if edit != nil {
		edit(f.tm)
	}
	create(t, f.tm)
	return f
}

// TestTrainingModelBadInput: what cannot train stalls with a message that
// says what to do, and nothing is created.
func TestTrainingModelBadInput(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		edit    func(*v1alpha1.TrainingModel)
		secret  bool // an Opaque Secret "push" exists
		reason  string
		message string
	}{
		{name: "no-train-layer", files: map[string]string{"model.safetensors": "w"}, reason: ReasonNoTrainCode, message: "has no train code layer: put the training code in train/"},
		{name: "unknown-framework", edit: func(tm *v1alpha1.TrainingModel) { tm.Spec.FrameworkType = "caffe" }, reason: ReasonNoTrainerImage,
			message: `no trainer image for frameworkType "caffe": set spec.trainer.image, or spec.frameworkType to one of pytorch, tensorflow`},
		{name: "missing-dataset", edit: func(tm *v1alpha1.TrainingModel) {
			tm.Spec.LocalDataset, tm.Spec.Dataset = "", &v1alpha1.LocalObjectReference{Name: "absent"}
		}, reason: ReasonDatasetNotFound, message: "named by spec.dataset does not exist: create it, or correct spec.dataset"},
		{name: "reserved-env", edit: func(tm *v1alpha1.TrainingModel) {
			tm.Spec.Trainer = &v1alpha1.TrainerSpec{Image: "example.com/trainer:1", Env: []corev1.EnvVar{{Name: "BARGE_ROUND", Value: "9"}}}
		}, reason: ReasonInvalidSpec, message: "spec.trainer.env BARGE_ROUND: the BARGE_ prefix is Barge's own"},
		{name: "edge-root-as-data", edit: func(tm *v1alpha1.TrainingModel) { tm.Spec.LocalDataset = "/var/lib/barge/artifacts/other-ns" },
			reason: ReasonInvalidSpec, message: "spec.localDataset /var/lib/barge/artifacts/other-ns holds the edge pullers' directory /var/lib/barge"},
		{name: "push-secret-not-docker-config", secret: true, edit: func(tm *v1alpha1.TrainingModel) {
			tm.Spec.PushSecretRef = &v1alpha1.LocalObjectReference{Name: "push"}
		}, reason: ReasonPushSecret, message: `spec.pushSecretRef has type "Opaque"; it must be kubernetes.io/dockerconfigjson`},
		{name: "script-without-aggregate-code", edit: func(tm *v1alpha1.TrainingModel) { tm.Spec.Aggregation = v1alpha1.AggregationScript },
			reason: ReasonNoAggregateCode, message: "has no aggregate code, which spec.aggregation Script runs (python $(BARGE_AGGREGATE_DIR)/aggregate.py): put an aggregate/ code layer in the model"},
		{name: "script-without-aggregate-executable", files: map[string]string{"model.safetensors": "w", "train/train": "x", "aggregate/aggregate.py": "x"},
			edit: func(tm *v1alpha1.TrainingModel) {
				tm.Spec.Aggregation = v1alpha1.AggregationScript
				tm.Spec.Trainer = &v1alpha1.TrainerSpec{Image: "example.com/trainer:1"}
			}, reason: ReasonNoAggregateCode, message: "($(BARGE_AGGREGATE_DIR)/aggregate): put an executable aggregate/aggregate in the model and push it again, or use aggregation FedAvg"},
		{name: "bad-require", edit: func(tm *v1alpha1.TrainingModel) {
			tm.Spec.Promote = &v1alpha1.PromoteSpec{Version: "1.1.0", Require: []string{"metrics.accuracy >="}}
		}, reason: ReasonInvalidSpec, message: "spec.promote.require: require"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := env.Namespace(t)
			ref := freshRepo(t)
			files := tc.files
			if files == nil {
				files = trainModelFiles
			}
			pushModel(t, openRepo(t, ref), "1.0.0", files, artifact.Metadata{})
			nodes(t, ns, nil, 1)
			if tc.secret {
				create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "push"}, StringData: map[string]string{"password": "x"}})
			}
			tm := &v1alpha1.TrainingModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fl"},
				Spec: v1alpha1.TrainingModelSpec{FrameworkType: "pytorch", NodeSelector: map[string]string{"barge-test": ns},
					Artifact: ref, TargetVersion: "1.0.0", Insecure: true, LocalDataset: "/data/local"}}
			if tc.edit != nil {
				tc.edit(tm)
			}
			create(t, tm)
			eventually(t, "Stalled", func() error {
				get(t, tm)
				return conds{ready: metav1.ConditionFalse, reason: tc.reason, message: tc.message, stalled: true}.check(tm.Generation, tm.Status.ObservedGeneration, tm.Status.Conditions)
			})
			if tm.Status.Phase != v1alpha1.TrainingPending || tm.Status.Initial != nil || len(tm.Status.Rounds) != 0 {
				t.Errorf("status %+v, want Pending with nothing started", tm.Status)
			}
			f := &trainFixture{ns: ns}
			if nas := f.trainingNodeArtifacts(t); len(nas) != 0 {
				t.Errorf("NodeArtifacts %v", keys(nas))
			}
			if jobs := f.jobNames(t); len(jobs) != 0 {
				t.Errorf("Jobs %v", jobs)
			}
		})
	}
}

// TestCheckLocalDataset: a trainer never reads the edge pullers' directory
// (every namespace's models and updates), and, with --local-dataset-roots,
// only under those roots.
func TestCheckLocalDataset(t *testing.T) {
	for _, tc := range []struct {
		dir   string
		roots []string
		ok    bool
	}{
		{"/data/shard", nil, true},
		{"/var/lib/barge", nil, false},
		{"/var/lib/barge/uploads/ns", nil, false},
		{"/var/lib", nil, false},
		{"/", nil, false},
		{"/var/lib/bargeX", nil, true},
		{"/data/shard", []string{"/data"}, true},
		{"/data", []string{"/data"}, true},
		{"/database", []string{"/data"}, false},
		{"/etc", []string{"/data", "/srv"}, false},
	} {
		err := checkLocalDataset(tc.dir, "/var/lib/barge", tc.roots)
		if (err == nil) != tc.ok {
			t.Errorf("%s with roots %v: %v, want ok=%v", tc.dir, tc.roots, err, tc.ok)
		}
	}
}

// TestTrainingModelTrainerRuns runs the controller's trainer Job as a
// process (testenv's stand-in for the kubelet): through the trainer
// contract it finds the round's model and training code where the node's
// puller put them, the node's local data, and writes its update into the
// round's upload directory on the node, which the puller uploads; the
// round then aggregates it.
func TestTrainingModelTrainerRuns(t *testing.T) {
	script := `set -e
test -f "$BARGE_TRAIN_DIR/train.py"
n=$(wc -l < "$BARGE_DATA_DIR/shard.csv")
{ cat "$BARGE_MODEL_DIR/model.safetensors"; echo " + $BARGE_NODE_NAME r$BARGE_ROUND"; } > "$BARGE_OUTPUT_DIR/model.safetensors"
printf '{"samples": %d, "metrics": {"accuracy": 0.75}}' $n > "$BARGE_OUTPUT_DIR/update.json"
touch "$BARGE_OUTPUT_DIR/DONE"`
	f := newTrainFixture(t, 1, func(tm *v1alpha1.TrainingModel) {
		tm.Spec.Trainer = &v1alpha1.TrainerSpec{Image: "example.com/trainer:1", Command: []string{"sh", "-c", script}}
	})
	node := f.nodes[0]
	nodeRoot, hostRoot := t.TempDir(), t.TempDir()
	testenv.StartProcessKubelet(t, k8s, f.ns, testenv.ProcessConfig{EdgeRoot: v1alpha1.DefaultEdgeRoot,
		NodeRoot: func(string) string { return nodeRoot }, HostRoot: func(string) string { return hostRoot }}, node)
	d0 := f.initial.Digest.String()
	f.waitPlaced(t, d0, 1)

	// What the node's puller and the node's owner put there.
	version := filepath.Join(nodeRoot, "artifacts", f.ns, "train-fl", "versions", "sha256-"+strings.TrimPrefix(d0, "sha256:"))
	for dir, files := range map[string]map[string]string{version: trainModelFiles, filepath.Join(hostRoot, "data", "local"): {"shard.csv": "1,0\n2,1\n3,0\n"}} {
		for name, data := range files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.pulled(t, d0, node)
	j := f.job(t, trainerJobName("fl", 1, node))
	eventually(t, "the trainer Job Complete", func() error {
		get(t, j)
		if done, failed, why := jobFinished(j); !done || failed {
			return fmt.Errorf("done %v, failed %v (%s), status %+v", done, failed, why, j.Status)
		}
		return nil
	})
	out := filepath.Join(nodeRoot, "uploads", f.ns, "train-fl", "round-1")
	got, err := os.ReadFile(filepath.Join(out, "model.safetensors"))
	if want := "weights r0 + " + node + " r1\n"; err != nil || string(got) != want {
		t.Errorf("the trainer wrote %q (%v), want %q", got, err, want)
	}
	info, err := artifact.ReadUpdateDir(out)
	if err != nil || info.Samples != 3 {
		t.Fatalf("the trainer's update: %+v, %v; want 3 samples", info, err)
	}

	// The puller uploads the directory the trainer wrote.
	u := f.update(node, 1, f.initial, 0)
	desc, err := artifact.PackUpdate(context.Background(), f.outRepo, out, u)
	if err != nil {
		t.Fatal(err)
	}
	na := f.trainingNodeArtifacts(t)[node]
	before := na.DeepCopy()
	na.Status.Upload = &v1alpha1.UploadStatus{Round: 1, Phase: v1alpha1.UploadUploaded, Digest: desc.Digest.String(), Samples: 3}
	if err := k8s.Status().Patch(context.Background(), na, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	agg := f.job(t, aggregateJobName("fl", 1))
	if args := strings.Join(agg.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "--update "+desc.Digest.String()+" --push") {
		t.Errorf("aggregation: barge %s; want the trainer's update", args)
	}
	f.waitStatus(t, "1 update of 3 samples", func(st *v1alpha1.TrainingModelStatus) error {
		if r := st.Rounds[0]; r.Updates != 1 || r.Samples != 3 {
			return fmt.Errorf("round %+v", r)
		}
		return nil
	})
}

// TestTrainingModelScriptAggregation: with spec.aggregation Script, the
// round's aggregation Job fetches the round (barge), runs the model's
// aggregate code in the trainer's image without the push credential, and
// publishes (barge) with it; all three share the work directory.
func TestTrainingModelScriptAggregation(t *testing.T) {
	const image = "example.com/trainers/logreg:1"
	f := newTrainFixture(t, 2, func(tm *v1alpha1.TrainingModel) {
		files := maps.Clone(trainModelFiles)
		files["aggregate/aggregate"] = "#!/bin/sh\nexec logreg aggregate\n"
		pushModel(t, openRepo(t, tm.Spec.Artifact), "1.0.1", files, artifact.Metadata{})
		tm.Spec.TargetVersion = "1.0.1"
		tm.Spec.Aggregation = v1alpha1.AggregationScript
		tm.Spec.Trainer = &v1alpha1.TrainerSpec{Image: image, Command: []string{"logreg", "train"}}
		tm.Spec.PushSecretRef = &v1alpha1.LocalObjectReference{Name: "push"}
		tm.Spec.Promote = &v1alpha1.PromoteSpec{Version: "1.1.0", Require: []string{"metrics.accuracy >= 0.8"}}
	})
	create(t, dockerConfigSecret(f.ns, "push", reg.Host(), "pusher", "secret"))
	f.waitStatus(t, "the initial model resolved", func(st *v1alpha1.TrainingModelStatus) error {
		if st.Initial == nil || st.Initial.Version != "1.0.1" {
			return fmt.Errorf("initial %+v", st.Initial)
		}
		return nil
	})
	d0 := f.tm.Status.Initial.Digest
	desc, err := f.repo.Resolve(context.Background(), "1.0.1")
	if err != nil {
		t.Fatal(err)
	}
	f.initial = desc
	f.waitPlaced(t, d0, 1)
	f.pulled(t, d0, f.nodes...)
	a := f.upload(t, f.nodes[0], 1, f.update(f.nodes[0], 1, f.initial, 100))
	b := f.upload(t, f.nodes[1], 1, f.update(f.nodes[1], 1, f.initial, 300))
	agg := f.job(t, aggregateJobName("fl", 1))
	get(t, f.tm)
	uid := string(f.tm.UID)
	pod := agg.Spec.Template.Spec
	if len(pod.InitContainers) != 2 || len(pod.Containers) != 1 {
		t.Fatalf("init containers %d, containers %d: want fetch and script, then publish", len(pod.InitContainers), len(pod.Containers))
	}
	fetch, script, publish := pod.InitContainers[0], pod.InitContainers[1], pod.Containers[0]
	round := "--base " + f.ref + "@" + d0 + " --round 1 --run " + uid
	for _, c := range []struct {
		ctr  corev1.Container
		args string
	}{
		{fetch, "aggregate fetch " + round + " --updates-repo " + f.out + " --dir /barge/work --plain-http"},
		{publish, "aggregate publish --dir /barge/work " + round + " --push " + f.out + ":train-fl-r1 --promote 1.1.0 --require metrics.accuracy >= 0.8 --plain-http"},
	} {
		// The updates in any order (the controller's, by node), the rest as is.
		var rest, updates []string
		for i := 0; i < len(c.ctr.Args); i++ {
			if c.ctr.Args[i] == "--update" && i+1 < len(c.ctr.Args) {
				updates = append(updates, c.ctr.Args[i+1])
				i++
				continue
			}
			rest = append(rest, c.ctr.Args[i])
		}
		slices.Sort(updates)
		wantUpdates := []string{}
		if c.ctr.Name == "fetch" {
			wantUpdates = []string{a, b}
			slices.Sort(wantUpdates)
		}
		if !slices.Equal(updates, wantUpdates) && len(updates)+len(wantUpdates) > 0 {
			t.Errorf("%s: updates %v, want %v", c.ctr.Name, updates, wantUpdates)
		}
		if got := strings.Join(rest, " "); c.ctr.Image != testBargeImage || !slices.Equal(c.ctr.Command, []string{"barge"}) || got != c.args {
			t.Errorf("%s: %s %v %s\nwant barge %s", c.ctr.Name, c.ctr.Image, c.ctr.Command, got, c.args)
		}
		if !hasMount(c.ctr.VolumeMounts, "work", "/barge/work") || !hasMount(c.ctr.VolumeMounts, "push-credentials", "/barge/docker") || !hasEnv(c.ctr.Env, "DOCKER_CONFIG", "/barge/docker") {
			t.Errorf("%s: mounts %v env %v: want the work directory and the push credential", c.ctr.Name, c.ctr.VolumeMounts, c.ctr.Env)
		}
	}
	if script.Image != image || !slices.Equal(script.Command, []string{"$(BARGE_AGGREGATE_DIR)/aggregate"}) || len(script.Args) != 0 {
		t.Errorf("script: %s %v %v, want the trainer's image running the model's aggregate/aggregate", script.Image, script.Command, script.Args)
	}
	want := map[string]string{"BARGE_BASE_DIR": "/barge/work/base", "BARGE_AGGREGATE_DIR": "/barge/work/base/aggregate", "BARGE_UPDATES_DIR": "/barge/work/updates",
		"BARGE_AGGREGATE_OUTPUT_DIR": "/barge/work/out", "BARGE_ROUND": "1", "BARGE_MODEL_NAME": "fl", "BARGE_MODEL_DIGEST": d0}
	for name, value := range want {
		if !hasEnv(script.Env, name, value) {
			t.Errorf("script env %s=%s missing from %v", name, value, script.Env)
		}
	}
	for _, m := range script.VolumeMounts {
		if m.Name != "work" && m.Name != "scratch" {
			t.Errorf("the script mounts %s: it gets the work directory and its scratch only", m.Name)
		}
	}
	for _, e := range script.Env {
		if e.Name == "DOCKER_CONFIG" || e.ValueFrom != nil {
			t.Errorf("the script's env has %s", e.Name)
		}
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken || pod.NodeName != "" {
		t.Errorf("token %v, node %q: the aggregation runs in the cloud without an API token", pod.AutomountServiceAccountToken, pod.NodeName)
	}

	d1 := f.aggregate(t, 1, map[string]float64{"accuracy": 0.9}, "1.1.0")
	f.waitStatus(t, "Completed and promoted", func(st *v1alpha1.TrainingModelStatus) error {
		if st.Phase != v1alpha1.TrainingCompleted || st.Promoted == nil || st.Promoted.Digest != d1.Digest.String() {
			return fmt.Errorf("phase %s, promoted %+v", st.Phase, st.Promoted)
		}
		// The round counts the updates the fetch step was given.
		if r := st.Rounds[0]; r.Updates != 2 || r.Samples != 400 {
			return fmt.Errorf("round 1: %d updates of %d samples, want 2 of 400", r.Updates, r.Samples)
		}
		return nil
	})
}
