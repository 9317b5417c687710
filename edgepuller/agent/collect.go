package agent

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/bargeml/barge/edgepuller/gc"
)

func (a *Agent) kickGC() {
	select {
	case a.gcKick <- struct{}{}:
	default: // one is due already
	}
}

func (a *Agent) collectLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.GCInterval)
	defer t.Stop()
	var ended time.Time
	var took time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.gcKick:
			// Kicked collections take at most a tenth of the time. In a
			// rollout of many artifacts every list change and every
			// activation kicks one, each walks every artifact and blob,
			// and activations wait for it: back to back, a node given
			// 1,000 artifacts spent its time collecting. Kicks meanwhile
			// fold into this one.
			if wait := time.Until(ended.Add(gcDuty * took)); wait > 0 {
				sleepCtx(ctx, wait)
			}
		}
		start := time.Now()
		if _, err := a.Collect(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("garbage collection failed", "err", err)
		}
		ended = time.Now()
		took = ended.Sub(start)
	}
}

// gcDuty: a kicked collection waits gcDuty times as long as the last one
// took, after it ended.
const gcDuty = 9

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Collect runs a garbage collection now (see gc.Collect) over the desired
// artifacts. Activations wait for it. Until a desired list is known it
// does nothing, since everything would look unreferenced.
func (a *Agent) Collect(ctx context.Context) (gc.Result, error) {
	a.disk.Lock()
	defer a.disk.Unlock()
	a.mu.Lock()
	known := a.known
	roots := make([]string, 0, len(a.desired))
	for _, d := range a.desired {
		roots = append(roots, a.ArtifactDir(d.Name))
	}
	pinned := make([]digest.Digest, 0, len(a.pins))
	for _, d := range a.pins {
		pinned = append(pinned, d)
	}
	a.mu.Unlock()
	if !known {
		return gc.Result{}, nil
	}
	opts := a.opts.GC
	if opts.Log == nil {
		opts.Log = a.log.With("component", "gc")
	}
	res, err := gc.Collect(ctx, a.st, roots, pinned, opts)
	a.metrics.gcFreed.Add(float64(res.BytesFreed))
	if err == nil {
		a.metrics.usage.Set(float64(res.Usage))
	}
	if res.VersionsRemoved+res.BlobsDeleted+res.IngestsAborted > 0 {
		a.log.Info("garbage collected", "versions", res.VersionsRemoved, "blobs", res.BlobsDeleted,
			"partials", res.IngestsAborted, "freed", res.BytesFreed, "usage", res.Usage)
	}
	return res, err
}
