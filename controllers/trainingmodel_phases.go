package controllers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/errcode"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/selection"
)

// Condition and event reasons of training.
const (
	ReasonTraining        = "Training"
	ReasonAggregating     = "Aggregating"
	ReasonRoundStarted    = "RoundStarted"
	ReasonUpdatesIn       = "UpdatesIn"
	ReasonAggregated      = "Aggregated"
	ReasonRoundFailed     = "RoundFailed"
	ReasonPromoted        = "Promoted"
	ReasonNotPromoted     = "NotPromoted"
	ReasonNoTrainCode     = "NoTrainCode"
	ReasonNoAggregateCode = "NoAggregateCode"
	ReasonNoTrainerImage  = "NoTrainerImage"
	ReasonDatasetNotFound = "DatasetNotFound"
	ReasonPushSecret      = "PushSecretInvalid"
)

// defaultRoundTimeout is spec.roundTimeout when unset (the CRD defaults it).
const defaultRoundTimeout = 30 * time.Minute

func trainingModelName(tm *v1alpha1.TrainingModel) string {
	if tm.Spec.ModelName != "" {
		return tm.Spec.ModelName
	}
	return tm.Name
}

func finished(p v1alpha1.TrainingPhase) bool {
	return p == v1alpha1.TrainingCompleted || p == v1alpha1.TrainingFailed
}

// checkSpec refuses what the schema cannot, before anything is created:
// a trainer it cannot run, an image or registry that is not allowed,
// require expressions that do not compile, a Dataset that does not exist.
func (r *TrainingModelReconciler) checkSpec(ctx context.Context, s *trainingScope) (ctrl.Result, error) {
	tm := s.tm
	spec := &tm.Spec
	s.src = source{Namespace: tm.Namespace, Repository: spec.Artifact, Version: spec.TargetVersion, Insecure: spec.Insecure, PullSecret: spec.PullSecretRef}
	s.out = s.src
	s.out.Version = ""
	if spec.Output != "" {
		s.out.Repository = spec.Output
	}
	s.roundTimeout = defaultRoundTimeout
	if spec.RoundTimeout != nil && spec.RoundTimeout.Duration > 0 {
		s.roundTimeout = spec.RoundTimeout.Duration
	}
	if finished(tm.Status.Phase) {
		return ctrl.Result{}, nil
	}
	if name := trainingModelName(tm); name == "." || name == ".." || strings.ContainsAny(name, "/\\") {
		return ctrl.Result{}, stalledf(ReasonInvalidSpec, "spec.modelName %q must be a plain name", name)
	}
	for _, src := range []source{s.src, s.out} {
		if err := r.resolver.checkAllowed(src); err != nil {
			s.failedIn = ReasonResolveFailed
			return ctrl.Result{}, err
		}
	}
	if err := r.chooseTrainer(s); err != nil {
		return ctrl.Result{}, err
	}
	if err := checkLocalDataset(spec.LocalDataset, r.opts.EdgeRoot, r.opts.LocalDatasetRoots); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.checkPushSecret(ctx, tm); err != nil {
		return ctrl.Result{}, err
	}
	if p := spec.Promote; p != nil {
		if _, err := selection.Compile(p.Require, nil); err != nil {
			return ctrl.Result{}, stalledf(ReasonInvalidSpec, "spec.promote.require: %s", oneLine(err))
		}
	}
	if spec.Dataset != nil {
		ds := &v1alpha1.Dataset{}
		err := r.Get(ctx, client.ObjectKey{Namespace: tm.Namespace, Name: spec.Dataset.Name}, ds)
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, stalledf(ReasonDatasetNotFound, "Dataset %s/%s named by spec.dataset does not exist: create it, or correct spec.dataset", tm.Namespace, spec.Dataset.Name)
		}
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("get Dataset %s: %w", spec.Dataset.Name, err)
		}
		s.dataset = ds
	}
	return ctrl.Result{}, nil
}

// checkLocalDataset refuses a spec.localDataset the trainer must not read:
// anything under the edge root (every namespace's models and updates), or
// outside the operator's --local-dataset-roots when there are some. The
// trainer is the user's own code, run on the node with that directory
// mounted.
func checkLocalDataset(dir, edgeRoot string, roots []string) error {
	if dir == "" {
		return nil
	}
	clean := path.Clean(dir)
	under := func(root string) bool {
		root = path.Clean(root)
		return root == "/" || clean == root || strings.HasPrefix(clean, root+"/")
	}
	if under(edgeRoot) || strings.HasPrefix(edgeRoot, clean+"/") || clean == "/" {
		return stalledf(ReasonInvalidSpec, "spec.localDataset %s holds the edge pullers' directory %s, which has every namespace's models: name the directory of this training's data", dir, edgeRoot)
	}
	if len(roots) > 0 && !slices.ContainsFunc(roots, under) {
		return stalledf(ReasonInvalidSpec, "spec.localDataset %s is outside the directories this controller lets trainers read (%s, --local-dataset-roots): move the data there, or ask the cluster's operator", dir, strings.Join(roots, ", "))
	}
	return nil
}

// chooseTrainer takes spec.trainer.image, or the runtime table's trainer
// for spec.frameworkType.
func (r *TrainingModelReconciler) chooseTrainer(s *trainingScope) error {
	t := s.tm.Spec.Trainer
	if t != nil {
		for _, e := range t.Env {
			if strings.HasPrefix(e.Name, reservedEnvPrefix) {
				return stalledf(ReasonInvalidSpec, "spec.trainer.env %s: the %s prefix is Barge's own (the trainer contract); rename the variable", e.Name, reservedEnvPrefix)
			}
		}
	}
	if t != nil && t.Image != "" {
		if err := checkImage(r.opts.AllowedRegistries, "spec.trainer.image", t.Image); err != nil {
			return err
		}
		s.trainer = TrainerRuntime{Image: t.Image}
		return nil
	}
	framework := s.tm.Spec.FrameworkType
	rt, ok := r.opts.TrainerImages[strings.ToLower(framework)]
	if !ok {
		return stalledf(ReasonNoTrainerImage, "no trainer image for frameworkType %q: set spec.trainer.image, or spec.frameworkType to one of %s", framework, r.opts.TrainerImages.names())
	}
	s.trainer = rt
	return nil
}

// resolveInitial turns spec.targetVersion into the initial global model,
// once: training never moves to another version of spec.artifact. The
// model must carry its training code.
func (r *TrainingModelReconciler) resolveInitial(ctx context.Context, s *trainingScope) (ctrl.Result, error) {
	st := &s.tm.Status
	if st.Initial != nil && st.Initial.Digest != "" {
		return ctrl.Result{}, nil
	}
	repo, err := r.resolver.open(ctx, s.src)
	if err != nil {
		s.failedIn = ReasonResolveFailed
		return ctrl.Result{}, err
	}
	s.repo = repo
	res, err := r.resolver.resolve(ctx, repo, s.src)
	if err != nil {
		s.failedIn = ReasonResolveFailed
		return ctrl.Result{}, err
	}
	in, err := r.resolver.inspect(ctx, &s.repo, s.src, res.Descriptor)
	if err != nil {
		return ctrl.Result{}, err
	}
	a := in.Artifact
	switch a.Kind {
	case artifact.KindModel, artifact.KindGeneric:
	default:
		s.failedIn = ReasonWrongKind
		return ctrl.Result{}, stalledf(ReasonWrongKind, "%s@%s is %s, not a model: %s", s.src.Repository, a.Digest, kindPhrase(a.Kind), modelKindHint(a.Kind))
	}
	if !slices.ContainsFunc(a.Files, func(f artifact.File) bool { return f.Role == artifact.RoleTrain }) {
		return ctrl.Result{}, stalledf(ReasonNoTrainCode, "%s@%s has no train code layer: put the training code in train/ (train/train.py) and push the model again with `barge push DIR REF`", s.src.Repository, shortText(a.Digest.String()))
	}
	if err := checkAggregateCode(s, a); err != nil {
		return ctrl.Result{}, err
	}
	st.Initial = resolvedStatus(res, in, time.Now())
	s.event(corev1.EventTypeNormal, ReasonResolved, "resolved %s to %s: the initial global model", s.src.String(), st.Initial.Digest)
	return ctrl.Result{}, nil
}

// checkAggregateCode: with spec.aggregation Script the initial model must
// carry the aggregate code the Job will run: aggregate/aggregate, or, for
// a runtime with its own aggregate command, an aggregate/ layer.
func checkAggregateCode(s *trainingScope, a *artifact.Artifact) error {
	if s.tm.Spec.Aggregation != v1alpha1.AggregationScript {
		return nil
	}
	cmd := s.trainer.aggregateCommand()
	has := slices.ContainsFunc(a.Files, func(f artifact.File) bool {
		return f.Role == artifact.RoleAggregate && (len(s.trainer.Aggregate) > 0 || f.Path == aggregateEntry)
	})
	if has {
		return nil
	}
	what := "an executable " + aggregateEntry
	if len(s.trainer.Aggregate) > 0 {
		what = "an aggregate/ code layer"
	}
	return stalledf(ReasonNoAggregateCode, "%s@%s has no aggregate code, which spec.aggregation Script runs (%s): put %s in the model and push it again, or use aggregation FedAvg",
		s.src.Repository, shortText(a.Digest.String()), strings.Join(cmd, " "), what)
}

// train runs the rounds: the current one until it is aggregated or fails,
// then the next, until the last is done.
func (r *TrainingModelReconciler) train(ctx context.Context, s *trainingScope) (ctrl.Result, error) {
	st := &s.tm.Status
	switch st.Phase {
	case v1alpha1.TrainingCompleted:
		s.outcome = completedOutcome(s)
		// The nodes need the model no more: the final one is in
		// spec.output, for an InferenceModel to serve.
		_, err := r.placer.remove(ctx, s.tm, kindTrainingModel)
		return ctrl.Result{}, err
	case v1alpha1.TrainingFailed:
		return ctrl.Result{}, stalledf(ReasonRoundFailed, "%s", failedMessage(st))
	}
	if len(st.Rounds) == 0 {
		if err := r.startRound(ctx, s, 1, st.Initial.Digest); err != nil {
			return ctrl.Result{}, err
		}
	}
	for {
		rd := &st.Rounds[len(st.Rounds)-1]
		if rd.Aggregated == "" {
			result, err := r.runRound(ctx, s, rd)
			if err != nil || rd.Aggregated == "" {
				return result, err
			}
		}
		if rd.Round >= rounds(s.tm) {
			return ctrl.Result{}, r.complete(ctx, s)
		}
		if err := r.startRound(ctx, s, rd.Round+1, rd.Aggregated); err != nil {
			return ctrl.Result{}, err
		}
	}
}

func rounds(tm *v1alpha1.TrainingModel) int32 { return max(tm.Spec.Rounds, 1) }

// failedMessage is why training failed: the failed round's message.
func failedMessage(st *v1alpha1.TrainingModelStatus) string {
	if n := len(st.Rounds); n > 0 && st.Rounds[n-1].Message != "" {
		return st.Rounds[n-1].Message
	}
	return "training failed; delete and create the TrainingModel again to train again"
}

// startRound records round n, trained from base. The Jobs of the rounds
// before are done with: they go.
func (r *TrainingModelReconciler) startRound(ctx context.Context, s *trainingScope, n int32, base string) error {
	tm := s.tm
	err := r.deleteJobs(ctx, tm, func(j *batchv1.Job) bool {
		round, err := strconv.Atoi(j.Labels[roundLabel])
		return err == nil && int32(round) < n
	})
	if err != nil {
		return err
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	tm.Status.Round = n
	tm.Status.Phase = v1alpha1.TrainingTraining
	tm.Status.Rounds = append(tm.Status.Rounds, v1alpha1.RoundStatus{Round: n, Base: base, StartedAt: &now})
	s.event(corev1.EventTypeNormal, ReasonRoundStarted, "round %d of %d started from %s", n, rounds(tm), shortText(base))
	return nil
}

// baseSource is where round rd's base model is: spec.artifact for the
// first round, spec.output after.
func (s *trainingScope) baseSource(rd *v1alpha1.RoundStatus) source {
	src := s.src
	if rd.Round > 1 {
		src = s.out
	}
	src.Version = rd.Base
	return src
}

// outRepository opens spec.output once per pass.
func (r *TrainingModelReconciler) outRepository(ctx context.Context, s *trainingScope) (*remote.Repository, error) {
	if s.outRepo != nil {
		return s.outRepo, nil
	}
	repo, err := r.resolver.open(ctx, s.out)
	if err != nil {
		return nil, err
	}
	s.outRepo = repo
	return repo, nil
}

// runRound takes round rd one step: the base model on every participant,
// a trainer on each that holds it, and once enough updates are in (or the
// round timed out) the aggregation Job, whose outcome it records.
func (r *TrainingModelReconciler) runRound(ctx context.Context, s *trainingScope, rd *v1alpha1.RoundStatus) (ctrl.Result, error) {
	tm := s.tm
	base := s.baseSource(rd)
	placed, err := r.placer.place(ctx, placement{
		owner:      tm,
		kind:       kindTrainingModel,
		repository: base.Repository,
		digest:     rd.Base,
		insecure:   tm.Spec.Insecure,
		selector:   tm.Spec.NodeSelector,
		// Every participant trains on the same base: all move at once.
		maxConcurrent: math.MaxInt32,
		upload:        &v1alpha1.UploadSpec{Round: rd.Round, Repository: s.out.Repository, Run: string(tm.UID)},
	})
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := conflictFailure(placed); err != nil {
		return ctrl.Result{}, err
	}
	jobs, err := r.jobs(ctx, tm)
	if err != nil {
		return ctrl.Result{}, err
	}
	if agg := jobs[aggregateJobName(tm.Name, rd.Round)]; agg != nil {
		return ctrl.Result{}, r.aggregation(ctx, s, rd, agg)
	}
	rd.Participants = placed.counts.Desired
	nas, err := r.placer.owned(ctx, tm, kindTrainingModel)
	if err != nil {
		return ctrl.Result{}, err
	}
	byNode := map[string]*v1alpha1.NodeArtifact{}
	for _, na := range nas {
		if na.DeletionTimestamp == nil {
			byNode[na.Spec.NodeName] = na
		}
	}
	tally, err := r.countUpdates(ctx, s, rd, placed.desired, byNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	w, err := r.runTrainers(ctx, s, rd, placed.desired, byNode, jobs, tally)
	if err != nil {
		return ctrl.Result{}, err
	}
	rd.Updates, rd.Samples = int32(len(tally.in)), tally.samples()
	return r.decide(ctx, s, rd, tally, w)
}

// roundUpdate is one participant's update that counts for the round.
type roundUpdate struct {
	node, digest string
	samples      int64
}

// roundTally is what the participants have uploaded for a round.
type roundTally struct {
	in []roundUpdate
	// stale are updates a node reported that do not count, and why.
	stale []string
	// refused are uploads a node's puller refused (a malformed update)
	// or could not push.
	refused []nodeProblem
}

func (t roundTally) has(node string) bool {
	return slices.ContainsFunc(t.in, func(u roundUpdate) bool { return u.node == node })
}

// staleText names the updates that do not count, a few of them.
func (t roundTally) staleText() string {
	if len(t.stale) == 0 {
		return ""
	}
	text := "; not counted: " + strings.Join(t.stale[:min(len(t.stale), 3)], ", ")
	if len(t.stale) > 3 {
		text += fmt.Sprintf(" and %d more", len(t.stale)-3)
	}
	return text
}

func (t roundTally) samples() int64 {
	var n int64
	for _, u := range t.in {
		n += u.samples
	}
	return n
}

// countUpdates counts the updates the participants' pullers report for
// round rd: for this round, uploaded, from a node that holds the round's
// base. Each is read from spec.output (content-addressed, so once) and
// must say the same of itself: this round, this base, this training, this
// node. A stale update (an earlier round, another base or run) never
// counts, whatever the node reports.
func (r *TrainingModelReconciler) countUpdates(ctx context.Context, s *trainingScope, rd *v1alpha1.RoundStatus, desired []string, byNode map[string]*v1alpha1.NodeArtifact) (roundTally, error) {
	var t roundTally
	for _, node := range desired {
		na := byNode[node]
		if na == nil {
			continue
		}
		u := na.Status.Upload
		if u != nil && u.Round == rd.Round && u.Phase == v1alpha1.UploadFailed {
			t.refused = append(t.refused, nodeProblem{node: node, message: u.Message})
		}
		if u == nil || u.Round != rd.Round || u.Phase != v1alpha1.UploadUploaded || u.Digest == "" {
			continue
		}
		if na.Spec.Digest != rd.Base || na.Status.Digest != rd.Base || na.Spec.Upload == nil || na.Spec.Upload.Round != rd.Round {
			t.stale = append(t.stale, fmt.Sprintf("%s's (not on the round's base)", node))
			continue
		}
		up, why, err := r.readUpdate(ctx, s, u.Digest)
		if err != nil {
			return t, err
		}
		switch {
		case why != "":
		case up.Round != int(rd.Round):
			why = fmt.Sprintf("round %d", up.Round)
		case up.Base.Digest.String() != rd.Base:
			why = "trained from " + shortText(up.Base.Digest.String())
		case up.Run != string(s.tm.UID):
			why = "another training's"
		case up.Node != node:
			why = "from node " + up.Node
		}
		if why != "" {
			t.stale = append(t.stale, fmt.Sprintf("%s's (%s)", node, why))
			continue
		}
		t.in = append(t.in, roundUpdate{node: node, digest: u.Digest, samples: up.Samples})
	}
	return t, nil
}

// readUpdate reads the update d from spec.output. why says why it cannot
// count (no such update, not an update); err is a registry that failed.
func (r *TrainingModelReconciler) readUpdate(ctx context.Context, s *trainingScope, d string) (artifact.Update, string, error) {
	dg, err := digest.Parse(d)
	if err != nil {
		return artifact.Update{}, "not a digest", nil
	}
	repo, err := r.outRepository(ctx, s)
	if err != nil {
		return artifact.Update{}, "", err
	}
	in, err := r.resolver.inspect(ctx, &repo, s.out, ocispec.Descriptor{Digest: dg})
	if err != nil {
		var f *failure
		if errors.As(err, &f) && f.stalled {
			return artifact.Update{}, "not in " + s.out.Repository, nil
		}
		return artifact.Update{}, "", err
	}
	up, err := artifact.UpdateOf(in.Artifact)
	if err != nil {
		return artifact.Update{}, "not an update", nil
	}
	return up, "", nil
}

// trainerWait is what a round waits for besides updates.
type trainerWait struct {
	pulling, noData []string
	// pullFailed are nodes whose puller failed to pull the base; failed,
	// those whose trainer Job failed.
	pullFailed, failed []nodeProblem
}

// runTrainers creates the trainer Job of each participant that holds the
// base (and, with spec.dataset, the Dataset) and has not uploaded yet.
func (r *TrainingModelReconciler) runTrainers(ctx context.Context, s *trainingScope, rd *v1alpha1.RoundStatus, desired []string,
	byNode map[string]*v1alpha1.NodeArtifact, jobs map[string]*batchv1.Job, tally roundTally) (trainerWait, error) {
	var w trainerWait
	left := time.Until(rd.StartedAt.Add(s.roundTimeout))
	for _, node := range desired {
		if tally.has(node) {
			continue
		}
		na := byNode[node]
		if na != nil && na.Spec.Digest == rd.Base && failedNow(na) {
			w.pullFailed = append(w.pullFailed, nodeProblem{node: node, message: na.Status.Message})
			continue
		}
		if na == nil || na.Spec.Digest != rd.Base || !holds(na, rd.Base) {
			w.pulling = append(w.pulling, node)
			continue
		}
		if j := jobs[trainerJobName(s.tm.Name, rd.Round, node)]; j != nil {
			if _, failed, why := jobFinished(j); failed {
				w.failed = append(w.failed, nodeProblem{node: node, message: why})
			}
			continue
		}
		dir, ok, err := r.dataDir(ctx, s, node)
		if err != nil {
			return w, err
		}
		if !ok {
			w.noData = append(w.noData, node)
			continue
		}
		if left <= time.Second {
			continue // too late to train for this round
		}
		job, err := trainerJob{tm: s.tm, round: rd.Round, node: node, base: rd.Base, edge: r.opts.EdgeRoot,
			runtime: s.trainer, dataDir: dir, deadline: int64(left.Seconds())}.job()
		if err != nil {
			return w, err
		}
		if err := r.createJob(ctx, s.tm, job); err != nil {
			return w, err
		}
	}
	return w, nil
}

// dataDir is the host directory of node's data, and whether it is there:
// spec.localDataset, or the version directory of the Dataset the node's
// puller reports Ready.
func (r *TrainingModelReconciler) dataDir(ctx context.Context, s *trainingScope, node string) (string, bool, error) {
	if s.dataset == nil {
		return s.tm.Spec.LocalDataset, true, nil
	}
	ds := s.dataset
	na := &v1alpha1.NodeArtifact{}
	err := r.Get(ctx, client.ObjectKey{Namespace: ds.Namespace, Name: nodeArtifactName(kindDataset, ds.Name, node)}, na)
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("get the NodeArtifact of Dataset %s on node %s: %w", ds.Name, node, err)
	}
	if ref := metav1.GetControllerOf(na); ref == nil || ref.UID != ds.UID || !holds(na, na.Spec.Digest) {
		return "", false, nil
	}
	dir, err := versionDir(r.opts.EdgeRoot, ds.Namespace, artifactName(kindDataset, ds.Name), na.Status.Digest)
	return dir, err == nil, err
}

// createJob creates a Job that tm controls; a Job of its name that tm does
// not control is a conflict only a person can resolve.
func (r *TrainingModelReconciler) createJob(ctx context.Context, tm *v1alpha1.TrainingModel, job *batchv1.Job) error {
	if err := controllerutil.SetControllerReference(tm, job, r.Scheme()); err != nil {
		return err
	}
	err := r.Create(ctx, job)
	if apierrors.IsAlreadyExists(err) {
		// Ours, made by a pass whose Job the cache does not hold yet, or
		// another's.
		existing := &batchv1.Job{}
		if err := r.reader.Get(ctx, client.ObjectKeyFromObject(job), existing); err != nil {
			return fmt.Errorf("get Job %s: %w", job.Name, err)
		}
		if metav1.IsControlledBy(existing, tm) {
			return nil
		}
		return stalledf(ReasonObjectConflict, "a Job named %s already exists in %s and does not belong to this TrainingModel: delete it or rename the TrainingModel", job.Name, tm.Namespace)
	}
	if err != nil {
		return fmt.Errorf("create Job %s: %w", job.Name, err)
	}
	return nil
}

// decide starts the aggregation when every participant's update is in, or
// at the round's timeout with at least minParticipants; fewer at the
// timeout fail the round. Otherwise the round waits.
func (r *TrainingModelReconciler) decide(ctx context.Context, s *trainingScope, rd *v1alpha1.RoundStatus, t roundTally, w trainerWait) (ctrl.Result, error) {
	tm := s.tm
	need := rd.Participants
	if m := tm.Spec.MinParticipants; m != nil {
		need = *m
	}
	need = max(need, 1)
	in := int32(len(t.in))
	deadline := rd.StartedAt.Add(s.roundTimeout)
	left := time.Until(deadline)
	switch {
	case rd.Participants > 0 && in == rd.Participants, left <= 0 && in >= need:
		return ctrl.Result{}, r.startAggregation(ctx, s, rd, t)
	case left <= 0:
		msg := fmt.Sprintf("round %d: %d of %d updates by the %s timeout; minParticipants is %d", rd.Round, in, rd.Participants, s.roundTimeout, need)
		return ctrl.Result{}, r.failRound(s, rd, msg+problemsText(t, w))
	}
	tm.Status.Phase = v1alpha1.TrainingTraining
	rd.Message = waitingText(s, rd, t, w, deadline)
	s.outcome = outcome{progressReason: ReasonTraining, progressMessage: rd.Message}
	return ctrl.Result{RequeueAfter: left + time.Second}, nil
}

// waitingText says what round rd waits for.
func waitingText(s *trainingScope, rd *v1alpha1.RoundStatus, t roundTally, w trainerWait, deadline time.Time) string {
	if rd.Participants == 0 {
		return fmt.Sprintf("round %d of %d: no node matches spec.nodeSelector; waiting until %s", rd.Round, rounds(s.tm), deadline.UTC().Format(time.RFC3339))
	}
	parts := []string{fmt.Sprintf("round %d of %d: %d of %d updates in", rd.Round, rounds(s.tm), len(t.in), rd.Participants)}
	if len(w.pulling) > 0 {
		parts = append(parts, "pulling the model: "+listNodes(w.pulling))
	}
	if len(w.noData) > 0 {
		parts = append(parts, fmt.Sprintf("waiting for Dataset %s on %s", s.tm.Spec.Dataset.Name, listNodes(w.noData)))
	}
	parts = append(parts, "timeout "+deadline.UTC().Format(time.RFC3339))
	return strings.Join(parts, "; ") + problemsText(t, w) + t.staleText()
}

// problemsText names the first node of each kind of failure a round saw:
// a pull, a trainer, an upload that failed.
func problemsText(t roundTally, w trainerWait) string {
	var b strings.Builder
	for _, p := range []struct {
		what  string
		probs []nodeProblem
	}{{"pull failed", w.pullFailed}, {"trainer failed", w.failed}, {"upload failed", t.refused}} {
		if len(p.probs) > 0 {
			fmt.Fprintf(&b, "; %s on %d node(s), %s: %s", p.what, len(p.probs), p.probs[0].node, clipTo(p.probs[0].message, 120))
		}
	}
	return b.String()
}

// failRound ends the training: the round failed.
func (r *TrainingModelReconciler) failRound(s *trainingScope, rd *v1alpha1.RoundStatus, msg string) error {
	s.tm.Status.Phase = v1alpha1.TrainingFailed
	rd.Message = msg
	s.event(corev1.EventTypeWarning, ReasonRoundFailed, "%s", msg)
	return stalledf(ReasonRoundFailed, "%s", msg)
}

// startAggregation runs the aggregation Job over the updates that are in.
func (r *TrainingModelReconciler) startAggregation(ctx context.Context, s *trainingScope, rd *v1alpha1.RoundStatus, t roundTally) error {
	tm := s.tm
	var updates []string
	for _, u := range t.in {
		updates = append(updates, u.digest)
	}
	base := s.baseSource(rd)
	w := aggregateJob{tm: tm, round: rd.Round, last: rd.Round >= rounds(tm), baseRef: base.Repository + "@" + rd.Base, base: rd.Base,
		output: s.out.Repository, updates: updates, bargeImage: r.opts.BargeImage}
	if tm.Spec.Aggregation == v1alpha1.AggregationScript {
		w.script = &s.trainer
	}
	job := w.job()
	if err := r.createJob(ctx, tm, job); err != nil {
		return err
	}
	tm.Status.Phase = v1alpha1.TrainingAggregating
	rd.Message = fmt.Sprintf("round %d of %d: aggregating %d of %d updates (%d samples) with Job %s%s", rd.Round, rounds(tm), len(t.in), rd.Participants, t.samples(), job.Name, t.staleText())
	s.outcome = outcome{progressReason: ReasonAggregating, progressMessage: rd.Message}
	s.event(corev1.EventTypeNormal, ReasonUpdatesIn, "round %d: %d of %d updates in (%d samples); aggregating with Job %s%s", rd.Round, len(t.in), rd.Participants, t.samples(), job.Name, t.staleText())
	return nil
}

// checkPushSecret refuses a spec.pushSecretRef that the aggregation Job
// could not use, before anything starts, rather than leave the Job's pod
// waiting for a volume rounds later.
func (r *TrainingModelReconciler) checkPushSecret(ctx context.Context, tm *v1alpha1.TrainingModel) error {
	ref := tm.Spec.PushSecretRef
	if ref == nil || r.resolver.Secrets == nil {
		return nil
	}
	var secret corev1.Secret
	err := r.resolver.Secrets.Get(ctx, client.ObjectKey{Namespace: tm.Namespace, Name: ref.Name}, &secret)
	switch {
	case apierrors.IsForbidden(err):
		return nil // the controller may not read it; the Job's pod may
	case apierrors.IsNotFound(err):
		return retryf(ReasonPushSecret, err, "secret %s/%s named by spec.pushSecretRef does not exist: create it with `kubectl create secret docker-registry %s -n %s --docker-server=... --docker-username=... --docker-password=...`", tm.Namespace, ref.Name, ref.Name, tm.Namespace)
	case err != nil:
		return retryf(ReasonPushSecret, err, "read secret %s/%s named by spec.pushSecretRef: %v", tm.Namespace, ref.Name, err)
	case secret.Type != corev1.SecretTypeDockerConfigJson:
		return stalledf(ReasonPushSecret, "secret %s/%s named by spec.pushSecretRef has type %q; it must be %s (kubectl create secret docker-registry)", tm.Namespace, ref.Name, secret.Type, corev1.SecretTypeDockerConfigJson)
	}
	return nil
}

// aggregation follows the round's aggregation Job: once it completed, the
// round's global model is what spec.output's round tag names.
func (r *TrainingModelReconciler) aggregation(ctx context.Context, s *trainingScope, rd *v1alpha1.RoundStatus, job *batchv1.Job) error {
	tm := s.tm
	// The Job's command is the truth of what it aggregates, should the
	// pass that made it have lost its status patch.
	rd.Updates = int32(len(updatesOf(job)))
	done, failed, why := jobFinished(job)
	switch {
	case failed:
		return r.failRound(s, rd, fmt.Sprintf("round %d: aggregation Job %s failed: %s; its pod's log says why", rd.Round, job.Name, why))
	case !done:
		tm.Status.Phase = v1alpha1.TrainingAggregating
		if rd.Message == "" || !strings.Contains(rd.Message, job.Name) {
			rd.Message = fmt.Sprintf("round %d of %d: aggregating with Job %s", rd.Round, rounds(tm), job.Name)
		}
		s.outcome = outcome{progressReason: ReasonAggregating, progressMessage: rd.Message}
		return nil
	}
	repo, err := r.outRepository(ctx, s)
	if err != nil {
		return err
	}
	tag := roundTag(tm.Name, rd.Round)
	desc, err := repo.Resolve(ctx, tag)
	if notFound(err) {
		return r.failRound(s, rd, fmt.Sprintf("round %d: aggregation Job %s completed, but %s:%s does not exist", rd.Round, job.Name, s.out.Repository, tag))
	}
	if err != nil {
		src := s.out
		src.Version = tag
		return explain(err, src, "tag "+tag)
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	rd.Aggregated, rd.Tag, rd.AggregatedAt, rd.Message = desc.Digest.String(), tag, &now, ""
	metrics, err := r.resolver.metrics(ctx, repo, s.out, desc)
	if err != nil {
		// The model is there; its metrics may be read again by no one,
		// but the event says why they are missing.
		s.event(corev1.EventTypeWarning, ReasonMetricsFailed, "round %d: read the metrics of %s: %v", rd.Round, shortText(rd.Aggregated), err)
	}
	rd.Metrics = metrics
	s.event(corev1.EventTypeNormal, ReasonAggregated, "round %d: aggregated %d updates into %s:%s (%s)%s", rd.Round, rd.Updates, s.out.Repository, tag, shortText(rd.Aggregated), metricsText(metrics))
	return nil
}

// updatesOf are the --update arguments of an aggregation Job: of its
// container (FedAvg) or of its fetch init container (Script), each once.
func updatesOf(job *batchv1.Job) []string {
	var out []string
	pod := job.Spec.Template.Spec
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		for i := 0; i+1 < len(c.Args); i++ {
			if c.Args[i] == "--update" && !slices.Contains(out, c.Args[i+1]) {
				out = append(out, c.Args[i+1])
			}
		}
	}
	return out
}

func notFound(err error) bool {
	var resp *errcode.ErrorResponse
	return errors.Is(err, errdef.ErrNotFound) || (errors.As(err, &resp) && resp.StatusCode == http.StatusNotFound)
}

// metricsText shows a few metrics: ", accuracy 0.91".
func metricsText(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+" "+m[k])
		if len(parts) == 4 {
			break
		}
	}
	return ", " + strings.Join(parts, ", ")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// complete ends the training after its last round: the final model is
// promoted when spec.output's promote.version tag names it (the last
// aggregation Job pushed that tag once require passed).
func (r *TrainingModelReconciler) complete(ctx context.Context, s *trainingScope) error {
	tm := s.tm
	st := &tm.Status
	final := st.Rounds[len(st.Rounds)-1]
	if p := tm.Spec.Promote; p != nil {
		repo, err := r.outRepository(ctx, s)
		if err != nil {
			return err
		}
		desc, err := repo.Resolve(ctx, p.Version)
		switch {
		case err == nil && desc.Digest.String() == final.Aggregated:
			now := metav1.NewTime(time.Now().Truncate(time.Second))
			st.Promoted = &v1alpha1.ResolvedArtifact{Version: p.Version, Digest: final.Aggregated, ShortDigest: shortDigest(final.Aggregated), ResolvedAt: &now}
			s.event(corev1.EventTypeNormal, ReasonPromoted, "promoted %s to %s:%s", shortText(final.Aggregated), s.out.Repository, p.Version)
		case err != nil && !notFound(err):
			src := s.out
			src.Version = p.Version
			return explain(err, src, "tag "+p.Version)
		}
	}
	st.Phase = v1alpha1.TrainingCompleted
	s.outcome = completedOutcome(s)
	_, err := r.placer.remove(ctx, tm, kindTrainingModel)
	return err
}

// completedOutcome says what the training produced, and whether it was
// promoted; a final model that was not is Ready with reason NotPromoted,
// and the message says which requirement it failed.
func completedOutcome(s *trainingScope) outcome {
	st := &s.tm.Status
	final := st.Rounds[len(st.Rounds)-1]
	msg := fmt.Sprintf("trained %d rounds: %s:%s (%s)", len(st.Rounds), s.out.Repository, final.Tag, shortText(final.Aggregated))
	p := s.tm.Spec.Promote
	switch {
	case p == nil:
		return outcome{readyMessage: msg}
	case st.Promoted != nil:
		return outcome{readyMessage: msg + "; promoted to " + p.Version}
	}
	return outcome{readyReason: ReasonNotPromoted, readyMessage: fmt.Sprintf("%s; not promoted to %s: %s", msg, p.Version, whyNotPromoted(p, final))}
}

// whyNotPromoted evaluates spec.promote.require over the final metrics, as
// the aggregation did, to say which requirement failed.
func whyNotPromoted(p *v1alpha1.PromoteSpec, final v1alpha1.RoundStatus) string {
	policy, err := selection.Compile(p.Require, nil)
	if err != nil {
		return oneLine(err)
	}
	metrics := map[string]float64{}
	for k, v := range final.Metrics {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			metrics[k] = f
		}
	}
	ch := policy.Choose([]selection.Candidate{{Version: p.Version, Digest: final.Aggregated, Metrics: metrics}})
	if len(ch.Refused) > 0 {
		return policy.RefusalSummary(ch)
	}
	return fmt.Sprintf("the tag %s does not name the final model; the aggregation Job's log says why", p.Version)
}
