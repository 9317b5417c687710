package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
)

// filesDigest is the digest whose files an edge node holds for the model
// digest d: d itself, or the edge member of a joint index.
func (r *InferenceModelReconciler) filesDigest(_ context.Context, _ *modelScope, d string) (string, error) {
	return d, nil
}

// deployJoint runs a joint model: its edge part on the matching nodes, its
// cloud part as the Deployment and Service, both from one digest.
func (r *InferenceModelReconciler) deployJoint(_ context.Context, _ *modelScope) (ctrl.Result, error) {
	return ctrl.Result{}, stalledf(ReasonInvalidSpec, "deployToLayer: joint is not deployed by this controller yet")
}
