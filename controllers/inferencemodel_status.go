package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
)

// patchStatus turns the facts of a pass into conditions and events, and
// patches the status once, when it changed.
func (r *InferenceModelReconciler) patchStatus(ctx context.Context, s *modelScope) error {
	st := &s.model.Status
	st.ObservedGeneration = s.model.Generation
	setConditions(&st.Conditions, s.model.Generation, withHeld(s.outcome, s.held))
	setHeld(&st.Conditions, s.model.Generation, s.held)
	r.events(s)
	if equality.Semantic.DeepEqual(s.before.Status, *st) {
		return nil
	}
	if err := r.Status().Patch(ctx, s.model, client.MergeFrom(s.before)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("patch status of InferenceModel %s/%s: %w", s.model.Namespace, s.model.Name, err)
	}
	r.saw(s.model)
	return nil
}

// events tells users what changed, once: a new digest, a rollout, nodes
// becoming ready or failing, and each new failure of the pass itself.
func (r *InferenceModelReconciler) events(s *modelScope) {
	m, before := s.model, s.before
	emit := func(eventType, reason, action, note string, args ...any) {
		r.recorder.Eventf(m, nil, eventType, reason, action, note, args...)
	}
	if s.rollout != nil {
		for _, e := range s.rollout.events {
			emit(e.eventType, e.reason, "Rollout", "%s", e.note)
		}
	}
	heldEvent(emit, s.held, before.Status.Conditions, m.Status.Conditions)
	if f := s.outcome.failure; f != nil {
		if readyChanged(before.Status.Conditions, m.Status.Conditions) {
			reason := f.reason
			if s.failedIn != "" {
				reason = s.failedIn
			}
			emit(corev1.EventTypeWarning, reason, "Reconcile", "%s", f.message)
		}
		return
	}
	if s.newDigest && m.Status.Resolved != nil {
		emit(corev1.EventTypeNormal, ReasonResolved, "Resolve", "resolved %s to %s", s.src.String(), m.Status.Resolved.Digest)
	}
	if s.metricsErr != nil {
		emit(corev1.EventTypeWarning, ReasonMetricsFailed, "Resolve", "read metrics: %v", s.metricsErr)
	}
	nodeEvents(emit, s.placed, s.targetResolved(), before.Status.Nodes, m.Status.Nodes)
	if apimeta.IsStatusConditionTrue(m.Status.Conditions, v1alpha1.ReadyCondition) && readyChanged(before.Status.Conditions, m.Status.Conditions) &&
		(m.Spec.DeployToLayer == v1alpha1.LayerCloud || m.Spec.DeployToLayer == v1alpha1.LayerJoint) {
		emit(corev1.EventTypeNormal, ReasonDeployed, "Deploy", "%s", apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ReadyCondition).Message)
	}
}

// nodeEvents reports what a placement pass did and what the pullers
// reported since the last pass.
func nodeEvents(emit func(eventType, reason, action, note string, args ...any), placed *placeResult, resolved *v1alpha1.ResolvedArtifact, before, after v1alpha1.NodeCounts) {
	if placed == nil || resolved == nil {
		return
	}
	v := versionText(resolved)
	if placed.rolloutStarted {
		emit(corev1.EventTypeNormal, ReasonRolloutStarted, "Rollout", "rolling out %s to %d node(s); moving %s first", v, after.Desired, listNodes(placed.moved))
	}
	if after.Ready > before.Ready {
		emit(corev1.EventTypeNormal, ReasonNodeReady, "Rollout", "%d of %d nodes hold %s", after.Ready, after.Desired, v)
	}
	if after.Failed > before.Failed && len(placed.failed) > 0 {
		f := placed.failed[0]
		emit(corev1.EventTypeWarning, ReasonNodeFailed, "Rollout", "%d node(s) failed to pull %s; %s: %s", after.Failed, v, f.node, f.message)
	}
	if len(placed.removed) > 0 {
		emit(corev1.EventTypeNormal, ReasonNodeRemoved, "Rollout", "removing %s from %s: no longer selected", v, listNodes(placed.removed))
	}
	if len(placed.repaired) > 0 {
		emit(corev1.EventTypeWarning, ReasonNodeArtifactRepaired, "Repair", "set back NodeArtifact %s: its labels or spec had been changed by someone other than barge-controller", listNodes(placed.repaired))
	}
}
