package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestProcessJob runs Jobs as processes: a node's Job with an init
// container, hostPath mounts (one under the edge root, one elsewhere) and
// env expansion completes and writes its output on the node's directory; a
// cloud Job reads a mounted Secret; a Job that keeps failing fails after
// its backoffLimit. Each Job's status is what the Job controller writes,
// accepted by the API server's validation.
func TestProcessJob(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	node := ns + "-a"
	if err := env.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Client.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}) })
	nodeRoot, hostRoot := t.TempDir(), t.TempDir()
	const edgeRoot = "/var/lib/edge"
	writeTree(t, filepath.Join(nodeRoot, "model"), map[string]string{"weights": "w1"})
	writeTree(t, filepath.Join(hostRoot, "data", "local"), map[string]string{"shard.csv": "1,2\n"})
	StartProcessKubelet(t, env.Client, ns, ProcessConfig{EdgeRoot: edgeRoot,
		NodeRoot: func(string) string { return nodeRoot }, HostRoot: func(string) string { return hostRoot }}, node)

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "push"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}}
	if err := env.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	dir, orCreate := corev1.HostPathDirectory, corev1.HostPathDirectoryOrCreate
	train := job(ns, "train", node, 0, corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "prepare", Command: []string{"sh", "-c", `echo prepared > "$SCRATCH/init"`},
			Env:          []corev1.EnvVar{{Name: "SCRATCH", Value: "/scratch"}},
			VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}}},
		Containers: []corev1.Container{{Name: "trainer", Command: []string{"sh", "-c",
			`cat "$MODEL/weights" "$SCRATCH/init" "$(DATA)/shard.csv" > "$OUT/result"; echo "$ROUND" >> "$OUT/result"`},
			Env: []corev1.EnvVar{{Name: "MODEL", Value: "/model"}, {Name: "DATA", Value: "/data"}, {Name: "OUT", Value: "/out"}, {Name: "ROUND", Value: "3"}, {Name: "SCRATCH", Value: "/scratch"}},
			VolumeMounts: []corev1.VolumeMount{{Name: "model", MountPath: "/model", ReadOnly: true}, {Name: "data", MountPath: "/data", ReadOnly: true},
				{Name: "out", MountPath: "/out"}, {Name: "scratch", MountPath: "/scratch"}}}},
		Volumes: []corev1.Volume{
			{Name: "model", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: edgeRoot + "/model", Type: &dir}}},
			{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/data/local", Type: &dir}}},
			{Name: "out", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: edgeRoot + "/uploads/round-3", Type: &orCreate}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		},
	})
	cloud := job(ns, "aggregate", "", 0, corev1.PodSpec{
		Containers: []corev1.Container{{Name: "aggregate", Command: []string{"sh", "-c", `grep -q auths "$DOCKER_CONFIG/config.json"`},
			Env:          []corev1.EnvVar{{Name: "DOCKER_CONFIG", Value: "/docker"}},
			VolumeMounts: []corev1.VolumeMount{{Name: "creds", MountPath: "/docker", ReadOnly: true}}}},
		Volumes: []corev1.Volume{{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "push",
			Items: []corev1.KeyToPath{{Key: corev1.DockerConfigJsonKey, Path: "config.json"}}}}}},
	})
	failing := job(ns, "failing", node, 1, corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: []string{"sh", "-c", "echo no; exit 3"}}}})
	// A Job of another node is not the stand-in's.
	other := job(ns, "elsewhere", "other-node", 0, corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: []string{"true"}}}})
	for _, j := range []*batchv1.Job{train, cloud, failing, other} {
		if err := env.Client.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
	}

	for _, j := range []*batchv1.Job{train, cloud} {
		waitJob(t, j, "Complete", func(st batchv1.JobStatus) error {
			if !hasJobCondition(st, batchv1.JobComplete) || !hasJobCondition(st, batchv1.JobSuccessCriteriaMet) || st.Succeeded != 1 || st.Active != 0 ||
				st.StartTime == nil || st.CompletionTime == nil {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
	}
	got, err := os.ReadFile(filepath.Join(nodeRoot, "uploads", "round-3", "result"))
	if err != nil || string(got) != "w1prepared\n1,2\n3\n" {
		t.Errorf("the trainer wrote %q (%v), want the model, the init container's file, the data and the round", got, err)
	}
	waitJob(t, failing, "Failed after its backoffLimit", func(st batchv1.JobStatus) error {
		c := jobCondition(st, batchv1.JobFailed)
		if c == nil || c.Reason != batchv1.JobReasonBackoffLimitExceeded || !hasJobCondition(st, batchv1.JobFailureTarget) || st.Failed != 2 || st.CompletionTime != nil {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(other), other); err != nil || other.Status.StartTime != nil {
		t.Errorf("the Job of another node was run: %+v (%v)", other.Status, err)
	}
}

func job(ns, name, node string, backoff int32, spec corev1.PodSpec) *batchv1.Job {
	spec.NodeName, spec.RestartPolicy = node, corev1.RestartPolicyNever
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			cs[i].Image = "example.com/" + cs[i].Name
		}
	}
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: batchv1.JobSpec{BackoffLimit: &backoff, Template: corev1.PodTemplateSpec{Spec: spec}}}
}

func waitJob(t *testing.T, j *batchv1.Job, what string, check func(batchv1.JobStatus) error) {
	t.Helper()
	eventually(t, "Job "+j.Name+" "+what, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(j), j); err != nil {
			return err
		}
		return check(j.Status)
	})
}

func jobCondition(st batchv1.JobStatus, typ batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ && st.Conditions[i].Status == corev1.ConditionTrue {
			return &st.Conditions[i]
		}
	}
	return nil
}

func hasJobCondition(st batchv1.JobStatus, typ batchv1.JobConditionType) bool {
	return jobCondition(st, typ) != nil
}
