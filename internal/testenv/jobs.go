package testenv

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The process mode also stands in for the Job controller and the kubelet
// together, for the Jobs of its namespace: envtest runs neither, and a
// TrainingModel's trainers and aggregation are Jobs. Each Job that has not
// finished and whose pod template is for one of the stand-in's nodes
// (spec.nodeName), or for no node at all (a cloud Job, whose hostPaths map
// under ProcessConfig.CloudRoot), runs as processes: its init containers
// one after the other, then its container, each with the mounts and
// environment of a pod (see ProcessConfig), sharing the attempt's
// emptyDirs. No Pod object is made. An attempt that fails is tried again
// after a short back-off until spec.backoffLimit (6 when unset) failures;
// spec.activeDeadlineSeconds ends it. The Job's status is then written as
// the Job controller writes it: startTime and active while it runs;
// succeeded or failed, the SuccessCriteriaMet then Complete (or
// FailureTarget then Failed) conditions, and completionTime on success.
// Parallelism, completions, indexes and pod failure policies are not
// honoured: one pod at a time, one success completes.

// jobRetryDelay is the back-off between a Job's attempts (the Job
// controller's starts at 10 s).
const jobRetryDelay = 200 * time.Millisecond

// jobRun is one Job run as processes.
type jobRun struct {
	job  *batchv1.Job // as first seen: a Job's pod template is immutable
	logs *tailBuffer

	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	status batchv1.JobStatus
}

// runsJob: the stand-in runs j, a Job of one of its nodes or of none.
func (k *Kubelet) runsJob(j *batchv1.Job) bool {
	node := j.Spec.Template.Spec.NodeName
	return node == "" || slices.Contains(k.nodes, node)
}

// syncJobs runs the unfinished Jobs of the namespace and writes their
// status; a Job that is gone has its processes stopped.
func (k *Kubelet) syncJobs(ctx context.Context) error {
	var jobs batchv1.JobList
	if err := k.c.List(ctx, &jobs, client.InNamespace(k.namespace)); err != nil {
		return err
	}
	ps := k.procs
	present := map[types.UID]bool{}
	for i := range jobs.Items {
		j := &jobs.Items[i]
		present[j.UID] = true
		if !k.runsJob(j) || j.DeletionTimestamp != nil {
			continue
		}
		ps.mu.Lock()
		jr := ps.jobs[j.UID]
		if jr == nil && !jobDone(j.Status) {
			jr = ps.startJob(j)
			ps.jobs[j.UID] = jr
		}
		ps.mu.Unlock()
		if jr == nil {
			continue
		}
		want := jr.snapshot()
		if jobStatusEqual(j.Status, want) {
			continue
		}
		before := j.DeepCopy()
		j.Status = want
		if err := k.c.Status().Patch(ctx, j, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("status of Job %s: %w", j.Name, err)
		}
	}
	ps.mu.Lock()
	var gone []*jobRun
	for uid, jr := range ps.jobs {
		if !present[uid] {
			gone = append(gone, jr)
			delete(ps.jobs, uid)
		}
	}
	ps.mu.Unlock()
	for _, jr := range gone {
		jr.cancel()
		<-jr.done
	}
	return nil
}

// startJob begins to run j in the background.
func (ps *processes) startJob(j *batchv1.Job) *jobRun {
	ctx, cancel := context.WithCancel(context.Background())
	jr := &jobRun{job: j.DeepCopy(), logs: &tailBuffer{max: logTail}, cancel: cancel, done: make(chan struct{})}
	start := metav1.NewTime(time.Now().Truncate(time.Second))
	jr.status = batchv1.JobStatus{StartTime: &start, Active: 1}
	go jr.run(ctx, ps)
	return jr
}

func (jr *jobRun) snapshot() batchv1.JobStatus {
	jr.mu.Lock()
	defer jr.mu.Unlock()
	return *jr.status.DeepCopy()
}

// run tries the Job's pod until it succeeds, fails too often, or runs past
// the Job's deadline.
func (jr *jobRun) run(ctx context.Context, ps *processes) {
	defer close(jr.done)
	j := jr.job
	if s := j.Spec.ActiveDeadlineSeconds; s != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*s)*time.Second)
		defer cancel()
	}
	limit := int32(6)
	if j.Spec.BackoffLimit != nil {
		limit = *j.Spec.BackoffLimit
	}
	var failures int32
	for attempt := 0; ; attempt++ {
		err := jr.attempt(ctx, ps, attempt)
		switch {
		case err == nil:
			jr.finish(false, 0, "", "")
			return
		case ctx.Err() == context.DeadlineExceeded:
			fmt.Fprintf(jr.logs, "--- %v\n", err)
			jr.finish(true, failures+1, batchv1.JobReasonDeadlineExceeded, "Job was active longer than specified deadline")
			return
		case ctx.Err() != nil:
			return // the Job is gone, or the test is over
		}
		failures++
		fmt.Fprintf(jr.logs, "--- attempt %d: %v\n", attempt+1, err)
		if failures > limit {
			jr.finish(true, failures, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit")
			return
		}
		jr.mu.Lock()
		jr.status.Failed = failures
		jr.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(jobRetryDelay):
		}
	}
}

// attempt runs one pod of the Job: each init container to its end, then
// the container. A pod of its own (name, UID, directory) per attempt, as
// the Job controller makes a new pod for each.
func (jr *jobRun) attempt(ctx context.Context, ps *processes, n int) error {
	j := jr.job
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: j.Namespace, Name: fmt.Sprintf("%s-%d", j.Name, n),
			UID: types.UID(fmt.Sprintf("%s-%d", j.UID, n)), Labels: j.Spec.Template.Labels, Annotations: j.Spec.Template.Annotations},
		Spec: *j.Spec.Template.Spec.DeepCopy(),
	}
	dir := filepath.Join(ps.dir, "jobs", pod.Name+"-"+string(j.UID)[:8])
	for _, ctr := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		one := pod.DeepCopy()
		one.Spec.InitContainers, one.Spec.Containers = nil, []corev1.Container{ctr}
		pp := &podProcess{pod: one, cfg: ps.cfg, c: ps.c, dir: dir, logs: jr.logs, cancel: func() {}, done: make(chan struct{}),
			state: containerState{waiting: string(PodStarting)}}
		pp.port, pp.startErr = freePort()
		fmt.Fprintf(jr.logs, "--- %s: container %s\n", pod.Name, ctr.Name)
		l, err := pp.launchWhenReady(ctx)
		if err != nil {
			pp.mu.Lock()
			why := pp.state.waiting + ": " + pp.state.message
			pp.mu.Unlock()
			return fmt.Errorf("container %s did not start (%s): %w", ctr.Name, why, err)
		}
		exit := pp.run(ctx, l)
		if exit.ExitCode != 0 {
			return fmt.Errorf("container %s: %s, exit code %d", ctr.Name, exit.Reason, exit.ExitCode)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// finish records the Job's end as the Job controller does.
func (jr *jobRun) finish(failed bool, failures int32, reason, message string) {
	jr.mu.Lock()
	defer jr.mu.Unlock()
	jr.status = FinishedJobStatus(jr.status.StartTime.Time, time.Now(), failed, failures, reason, message)
}

// FinishedJobStatus is the status the Job controller writes for a Job of
// one pod that ended at end: succeeded, or failed after failures failed
// pods with reason and message (BackoffLimitExceeded, DeadlineExceeded).
// The API server refuses a finished Job's status without the conditions
// and times it has here.
func FinishedJobStatus(start, end time.Time, failed bool, failures int32, reason, message string) batchv1.JobStatus {
	st := metav1.NewTime(start.Truncate(time.Second))
	now := metav1.NewTime(end.Truncate(time.Second))
	if now.Before(&st) {
		now = st
	}
	status := batchv1.JobStatus{StartTime: &st, Failed: failures}
	cond := func(t batchv1.JobConditionType, reason, message string) batchv1.JobCondition {
		return batchv1.JobCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastProbeTime: now, LastTransitionTime: now}
	}
	if failed {
		status.Conditions = []batchv1.JobCondition{cond(batchv1.JobFailureTarget, reason, message), cond(batchv1.JobFailed, reason, message)}
		return status
	}
	status.Succeeded = 1
	status.CompletionTime = &now
	status.Conditions = []batchv1.JobCondition{
		cond(batchv1.JobSuccessCriteriaMet, batchv1.JobReasonCompletionsReached, "Reached expected number of succeeded pods"),
		cond(batchv1.JobComplete, batchv1.JobReasonCompletionsReached, "Reached expected number of succeeded pods"),
	}
	return status
}

// jobDone: the Job has a Complete or Failed condition.
func jobDone(st batchv1.JobStatus) bool {
	return slices.ContainsFunc(st.Conditions, func(c batchv1.JobCondition) bool {
		return (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue
	})
}

// jobStatusEqual compares what the stand-in writes, ignoring times.
func jobStatusEqual(a, b batchv1.JobStatus) bool {
	if a.Active != b.Active || a.Succeeded != b.Succeeded || a.Failed != b.Failed || (a.StartTime == nil) != (b.StartTime == nil) ||
		len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i].Type != b.Conditions[i].Type || a.Conditions[i].Status != b.Conditions[i].Status {
			return false
		}
	}
	return true
}

// jobLogTails logs the end of every Job's output, for a failed test.
func (ps *processes) jobLogTails(logf func(format string, args ...any)) {
	ps.mu.Lock()
	var all []*jobRun
	for _, jr := range ps.jobs {
		all = append(all, jr)
	}
	ps.mu.Unlock()
	slices.SortFunc(all, func(a, b *jobRun) int { return strings.Compare(a.job.Name, b.job.Name) })
	for _, jr := range all {
		logf("job %s on %s (stand-in processes):\n%s", jr.job.Name, nodeText(jr.job.Spec.Template.Spec.NodeName), jr.logs.String())
	}
}

func nodeText(node string) string {
	if node == "" {
		return "the cloud"
	}
	return node
}

// stopJobs stops every Job's processes and waits for them.
func (ps *processes) stopJobs() {
	ps.mu.Lock()
	var all []*jobRun
	for _, jr := range ps.jobs {
		all = append(all, jr)
	}
	ps.mu.Unlock()
	for _, jr := range all {
		jr.cancel()
	}
	for _, jr := range all {
		<-jr.done
	}
}
