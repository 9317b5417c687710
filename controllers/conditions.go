package controllers

import (
	"errors"
	"fmt"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bargev1alpha1 "github.com/bargeml/barge/api/v1alpha1"
)

// Condition and event reasons. They are short, CamelCase, and stable: users
// and tools match on them.
const (
	ReasonSucceeded            = "Succeeded"
	ReasonProgressingWithRetry = "ProgressingWithRetry"
	ReasonDeleting             = "Deleting"
	ReasonDeletionBlocked      = "DeletionBlocked"

	ReasonResolved            = "Resolved"
	ReasonResolveFailed       = "ResolveFailed"
	ReasonVersionNotFound     = "VersionNotFound"
	ReasonNoMatchingVersion   = "NoMatchingVersion"
	ReasonInvalidVersion      = "InvalidVersion"
	ReasonInvalidReference    = "InvalidReference"
	ReasonRegistryUnreachable = "RegistryUnreachable"
	ReasonRegistryError       = "RegistryError"
	ReasonRegistryTimeout     = "RegistryTimeout"
	ReasonRegistryNotAllowed  = "RegistryNotAllowed"
	ReasonInsecureRegistry    = "InsecureRegistry"
	ReasonUnauthorized        = "Unauthorized"
	ReasonPullSecretNotFound  = "PullSecretNotFound"
	ReasonPullSecretForbidden = "PullSecretForbidden"
	ReasonInvalidPullSecret   = "InvalidPullSecret"
	ReasonInvalidArtifact     = "InvalidArtifact"
	ReasonWrongKind           = "WrongKind"
	ReasonFormatMismatch      = "FormatMismatch"
	ReasonMetricsFailed       = "MetricsFailed"
	ReasonInvalidSpec         = "InvalidSpec"
	ReasonNoServingImage      = "NoServingImage"

	ReasonRolloutStarted       = "RolloutStarted"
	ReasonRollingOut           = "RollingOut"
	ReasonNodeReady            = "NodeReady"
	ReasonNodeFailed           = "NodeFailed"
	ReasonNodeRemoved          = "NodeRemoved"
	ReasonNodeConflict         = "NodeArtifactConflict"
	ReasonNodeArtifactRepaired = "NodeArtifactRepaired"
	ReasonDeployed             = "Deployed"
	ReasonDeploymentWait       = "DeploymentProgressing"
	ReasonObjectConflict       = "ObjectConflict"
	ReasonReconcileFailed      = "ReconcileFailed"
)

// ReasonVerificationFailed: the digest carries no signature spec.verify
// trusts, or the key material it names cannot be read.
const ReasonVerificationFailed = "VerificationFailed"

// failure is why a reconcile pass stopped. A stalled failure needs a person
// (a tag that does not exist, a dataset given as a model); any other is
// retried on its own (a registry that is down).
type failure struct {
	reason  string
	message string
	stalled bool
	err     error
}

func (f *failure) Error() string { return f.message }
func (f *failure) Unwrap() error { return f.err }

func stalledf(reason, format string, args ...any) *failure {
	return &failure{reason: reason, message: fmt.Sprintf(format, args...), stalled: true}
}

func retryf(reason string, err error, format string, args ...any) *failure {
	return &failure{reason: reason, message: fmt.Sprintf(format, args...), err: err}
}

// asFailure turns any error of a phase into a failure; an error that is not
// one already (the API server refused a write) is retried.
func asFailure(err error) *failure {
	var f *failure
	if errors.As(err, &f) {
		return f
	}
	return &failure{reason: ReasonReconcileFailed, message: err.Error(), err: err}
}

// outcome is what a reconcile pass found, in the terms conditions speak.
// Exactly one of its parts decides the conditions: a failure, then work in
// progress, then success.
type outcome struct {
	failure *failure
	// progressReason and progressMessage say what is still under way: a
	// rollout, a Deployment becoming available, a deletion.
	progressReason  string
	progressMessage string
	// readyMessage says what is in place when all is done; readyReason,
	// when set, replaces Succeeded as its reason.
	readyMessage string
	readyReason  string
}

// setConditions writes o as kstatus-compatible conditions: Ready always,
// Reconciling and Stalled only while true.
func setConditions(conds *[]metav1.Condition, generation int64, o outcome) {
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		apimeta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: generation})
	}
	switch {
	case o.failure != nil && o.failure.stalled:
		set(bargev1alpha1.ReadyCondition, metav1.ConditionFalse, o.failure.reason, o.failure.message)
		set(bargev1alpha1.StalledCondition, metav1.ConditionTrue, o.failure.reason, o.failure.message)
		apimeta.RemoveStatusCondition(conds, bargev1alpha1.ReconcilingCondition)
	case o.failure != nil:
		set(bargev1alpha1.ReadyCondition, metav1.ConditionFalse, o.failure.reason, o.failure.message)
		set(bargev1alpha1.ReconcilingCondition, metav1.ConditionTrue, ReasonProgressingWithRetry, o.failure.message)
		apimeta.RemoveStatusCondition(conds, bargev1alpha1.StalledCondition)
	case o.progressReason != "":
		set(bargev1alpha1.ReadyCondition, metav1.ConditionFalse, o.progressReason, o.progressMessage)
		set(bargev1alpha1.ReconcilingCondition, metav1.ConditionTrue, o.progressReason, o.progressMessage)
		apimeta.RemoveStatusCondition(conds, bargev1alpha1.StalledCondition)
	default:
		reason := ReasonSucceeded
		if o.readyReason != "" {
			reason = o.readyReason
		}
		set(bargev1alpha1.ReadyCondition, metav1.ConditionTrue, reason, o.readyMessage)
		apimeta.RemoveStatusCondition(conds, bargev1alpha1.ReconcilingCondition)
		apimeta.RemoveStatusCondition(conds, bargev1alpha1.StalledCondition)
	}
}

// readyChanged reports whether the Ready condition differs in reason or
// message between two lists: the moment to tell the user with an event.
func readyChanged(before, after []metav1.Condition) bool {
	b := apimeta.FindStatusCondition(before, bargev1alpha1.ReadyCondition)
	a := apimeta.FindStatusCondition(after, bargev1alpha1.ReadyCondition)
	if a == nil {
		return false
	}
	return b == nil || b.Reason != a.Reason || b.Message != a.Message || b.Status != a.Status
}
