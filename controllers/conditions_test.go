package controllers

import (
	"errors"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// TestSetConditions: Ready always; Stalled and Reconciling only while true,
// as kstatus reads them.
func TestSetConditions(t *testing.T) {
	tests := []struct {
		name string
		o    outcome
		want conds
	}{
		{"stalled", outcome{failure: stalledf(ReasonWrongKind, "a dataset")},
			conds{ready: metav1.ConditionFalse, reason: ReasonWrongKind, message: "a dataset", stalled: true}},
		{"retried", outcome{failure: retryf(ReasonRegistryUnreachable, errors.New("refused"), "registry down")},
			conds{ready: metav1.ConditionFalse, reason: ReasonRegistryUnreachable, message: "registry down", reconciling: true}},
		{"api error", outcome{failure: asFailure(errors.New("conflict"))},
			conds{ready: metav1.ConditionFalse, reason: ReasonReconcileFailed, message: "conflict", reconciling: true}},
		{"progressing", outcome{progressReason: ReasonRollingOut, progressMessage: "1 of 3"},
			conds{ready: metav1.ConditionFalse, reason: ReasonRollingOut, message: "1 of 3", reconciling: true}},
		{"ready", outcome{readyMessage: "on 3 of 3 nodes"},
			conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "on 3 of 3 nodes"}},
	}
	// Each row starts from every other row's conditions: no condition of
	// an earlier outcome may linger.
	for _, from := range tests {
		for _, tt := range tests {
			var c []metav1.Condition
			setConditions(&c, 3, from.o)
			setConditions(&c, 4, tt.o)
			if err := tt.want.check(4, 4, c); err != nil {
				t.Errorf("%s after %s: %v", tt.name, from.name, err)
			}
			for _, cond := range c {
				if cond.ObservedGeneration != 4 {
					t.Errorf("%s after %s: %s has observedGeneration %d", tt.name, from.name, cond.Type, cond.ObservedGeneration)
				}
			}
		}
	}
}

// TestRetryLimiterNoStarvation: when a thousand models fail on an API error
// at once, and go on failing, none waits longer than maxRetryDelay for its
// next pass: the retries of one do not queue behind the others'.
func TestRetryLimiterNoStarvation(t *testing.T) {
	l := retryLimiter()
	var longest time.Duration
	for round := range 30 {
		for i := range 1000 {
			req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("m-%04d", i)}}
			longest = max(longest, l.When(req))
			if round == 0 && i == 999 && longest > time.Second {
				t.Fatalf("after one failure each, a model waits %s; want well under a second", longest)
			}
		}
	}
	if longest > maxRetryDelay {
		t.Errorf("a model failing again and again waits %s for its next pass; want at most %s", longest, maxRetryDelay)
	}
}

// TestFirstInFirstOut: the controllers' queues serve objects in the order
// they came, whatever event brought them: controller-runtime's priority
// queue starved the objects of the informer's initial list (see
// controllerOptions).
func TestFirstInFirstOut(t *testing.T) {
	o := controllerOptions(Options{}.withDefaults())
	if o.UsePriorityQueue == nil || *o.UsePriorityQueue {
		t.Errorf("UsePriorityQueue %v; want false: the priority queue leaves the models of the initial list without a pass while others keep coming", o.UsePriorityQueue)
	}
	if o.MaxConcurrentReconciles != 4 || o.RateLimiter == nil {
		t.Errorf("options %+v; want the Options' workers and retryLimiter", o)
	}
}
