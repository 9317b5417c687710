package controllers

import (
	"context"
	"time"

	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// DefaultNodeReportDelay is how long a NodeArtifact event waits before it
// takes its owner through a pass (Options.NodeReportDelay).
const DefaultNodeReportDelay = time.Second

// ownerAfter enqueues the controller owner of a NodeArtifact delay after
// the event rather than at once. In a rollout the nodes of a model report
// within moments of each other and the controller's own creates come back
// as events by the hundred: queued at once, each would be one more pass and
// one more status write and event of the model, about one per node.
// Waiting lets the work queue fold them into one, since a request already
// waiting is not added twice; the model's status trails its nodes by at
// most delay.
func ownerAfter(mgr ctrl.Manager, owner client.Object, delay time.Duration) handler.TypedEventHandler[client.Object, reconcile.Request] {
	return delayed{inner: handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), owner, handler.OnlyControllerOwner()), delay: delay}
}

type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

type delayed struct {
	inner handler.TypedEventHandler[client.Object, reconcile.Request]
	delay time.Duration
}

func (d delayed) Create(ctx context.Context, e event.TypedCreateEvent[client.Object], q queue) {
	d.inner.Create(ctx, e, d.wrap(q))
}

func (d delayed) Update(ctx context.Context, e event.TypedUpdateEvent[client.Object], q queue) {
	d.inner.Update(ctx, e, d.wrap(q))
}

func (d delayed) Delete(ctx context.Context, e event.TypedDeleteEvent[client.Object], q queue) {
	d.inner.Delete(ctx, e, d.wrap(q))
}

func (d delayed) Generic(ctx context.Context, e event.TypedGenericEvent[client.Object], q queue) {
	d.inner.Generic(ctx, e, d.wrap(q))
}

func (d delayed) wrap(q queue) queue {
	if d.delay <= 0 {
		return q
	}
	return addAfter{queue: q, delay: d.delay}
}

// addAfter turns the handler's Add into AddAfter.
type addAfter struct {
	queue
	delay time.Duration
}

func (a addAfter) Add(r reconcile.Request) { a.AddAfter(r, a.delay) }
