package controllers

import (
	"context"
	"math"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

// resolve turns spec.targetVersion into a digest when the interval has
// passed or the spec changed; otherwise it keeps the digest in status.
func (r *DatasetReconciler) resolve(ctx context.Context, s *datasetScope) (ctrl.Result, error) {
	st := &s.dataset.Status
	return s.resolveStep(ctx, r.resolver, s.dataset.Generation, st.ObservedGeneration, st.Resolved, st.Conditions)
}

// inspect refuses an artifact that is not a dataset, or not of spec.format,
// and copies the dataset's statistics into status.
func (r *DatasetReconciler) inspect(ctx context.Context, s *datasetScope) (ctrl.Result, error) {
	in, err := r.resolver.inspect(ctx, &s.repo, s.src, s.res.Descriptor)
	if err != nil {
		return ctrl.Result{}, err
	}
	a := in.Artifact
	if a.Kind != artifact.KindDataset || in.Dataset == nil {
		s.failedIn = ReasonWrongKind
		return ctrl.Result{}, stalledf(ReasonWrongKind, "%s@%s is %s, not a dataset: push the data with `barge push --kind dataset DIR REF`, or use an InferenceModel for a model", s.src.Repository, a.Digest, kindPhrase(a.Kind))
	}
	cfg := in.Dataset
	if want := s.dataset.Spec.Format; want != "" && string(want) != cfg.Format {
		s.failedIn = ReasonFormatMismatch
		return ctrl.Result{}, stalledf(ReasonFormatMismatch, "%s@%s is a %s dataset, but spec.format is %s: correct spec.format, or push the dataset in %s format", s.src.Repository, a.Digest, formatText(cfg.Format), want, want)
	}
	if !s.due {
		return ctrl.Result{}, nil
	}
	st := &s.dataset.Status
	st.Resolved = resolvedStatus(s.res, in, time.Now())
	st.Format = v1alpha1.DatasetFormat(cfg.Format)
	st.NumberOfSamples = cfg.NumberOfSamples
	st.Classes = cfg.Classes
	st.Size = cfg.Bytes
	if st.Size == 0 {
		st.Size = in.contentSize
	}
	return ctrl.Result{}, nil
}

func formatText(f string) string {
	if f == "" {
		return "format-less"
	}
	return f
}

// place puts the dataset on every matching node.
func (r *DatasetReconciler) place(ctx context.Context, s *datasetScope) (ctrl.Result, error) {
	ds := s.dataset
	res, err := r.placer.place(ctx, placement{
		owner:      ds,
		kind:       kindDataset,
		repository: s.src.Repository,
		digest:     ds.Status.Resolved.Digest,
		insecure:   ds.Spec.Insecure,
		selector:   ds.Spec.NodeSelector,
		// Every node keeps its old version until the new one is Ready,
		// and a Dataset has no rollout knob: all nodes move at once.
		maxConcurrent: math.MaxInt32,
		verify:        ds.Spec.Verify,
	})
	if err != nil {
		return ctrl.Result{}, err
	}
	s.placed = &res
	ds.Status.Nodes = res.counts
	s.outcome = edgeOutcome(ds.Status.Resolved, res)
	return ctrl.Result{}, conflictFailure(res)
}
