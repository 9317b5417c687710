package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// patchStatus turns the facts of a pass into conditions and events, and
// patches the status once, when it changed.
func (r *DatasetReconciler) patchStatus(ctx context.Context, s *datasetScope) error {
	st := &s.dataset.Status
	st.ObservedGeneration = s.dataset.Generation
	setConditions(&st.Conditions, s.dataset.Generation, s.outcome)
	r.events(s)
	if equality.Semantic.DeepEqual(s.before.Status, *st) {
		return nil
	}
	if err := r.Status().Patch(ctx, s.dataset, client.MergeFrom(s.before)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("patch status of Dataset %s/%s: %w", s.dataset.Namespace, s.dataset.Name, err)
	}
	return nil
}

func (r *DatasetReconciler) events(s *datasetScope) {
	ds, before := s.dataset, s.before
	emit := func(eventType, reason, action, note string, args ...any) {
		r.recorder.Eventf(ds, nil, eventType, reason, action, note, args...)
	}
	if f := s.outcome.failure; f != nil {
		if readyChanged(before.Status.Conditions, ds.Status.Conditions) {
			reason := f.reason
			if s.failedIn != "" {
				reason = s.failedIn
			}
			emit(corev1.EventTypeWarning, reason, "Reconcile", "%s", f.message)
		}
		return
	}
	if s.newDigest && ds.Status.Resolved != nil {
		emit(corev1.EventTypeNormal, ReasonResolved, "Resolve", "resolved %s to %s: %s, %d samples", s.src.String(), ds.Status.Resolved.Digest, ds.Status.Format, ds.Status.NumberOfSamples)
	}
	nodeEvents(emit, s.placed, ds.Status.Resolved, before.Status.Nodes, ds.Status.Nodes)
}
