package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
)

// patchStatus turns the facts of a pass into conditions and events, and
// patches the status once, when it changed.
func (r *TrainingModelReconciler) patchStatus(ctx context.Context, s *trainingScope) error {
	st := &s.tm.Status
	st.ObservedGeneration = s.tm.Generation
	if st.Phase == "" {
		st.Phase = v1alpha1.TrainingPending
	}
	setConditions(&st.Conditions, s.tm.Generation, s.outcome)
	r.events(s)
	if equality.Semantic.DeepEqual(s.before.Status, *st) {
		return nil
	}
	// Optimistic: a status written since this pass read the object is never
	// overwritten; the conflict brings a new pass.
	if err := r.Status().Patch(ctx, s.tm, client.MergeFromWithOptions(s.before, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("patch status of TrainingModel %s/%s: %w", s.tm.Namespace, s.tm.Name, err)
	}
	return nil
}

// events tells users what the pass did (a round started, its updates in,
// aggregated, failed, the result promoted), and each new failure of the
// pass itself.
func (r *TrainingModelReconciler) events(s *trainingScope) {
	tm, before := s.tm, s.before
	for _, e := range s.events {
		r.recorder.Eventf(tm, nil, e.eventType, e.reason, "Train", "%s", e.note)
	}
	f := s.outcome.failure
	if f == nil || f.reason == ReasonRoundFailed || !readyChanged(before.Status.Conditions, tm.Status.Conditions) {
		return
	}
	reason := f.reason
	if s.failedIn != "" {
		reason = s.failedIn
	}
	r.recorder.Eventf(tm, nil, corev1.EventTypeWarning, reason, "Reconcile", "%s", f.message)
}
