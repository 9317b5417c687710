//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/edgepuller/kube"
)

// simNode plays a node's puller for the controller: it lists (500 at a
// time) and watches the node's NodeArtifacts as barge-edgepuller does (label
// barge.dev/node=NAME, with the puller's client-side limit of 50 requests a
// second, burst 100, unless -node-qps says otherwise), and for each one not
// Ready at its digest GETs the manifest from the registry and patches status
// Ready; two at a time, as the puller's default --concurrency. As the puller,
// it reports Pulling only for a pull still running after one progress tick
// (1 s): a quick pull is one status patch. It writes no files and never
// releases finalizers: the bench deletes nothing.
type simNode struct {
	name  string
	c     client.WithWatch
	hc    *http.Client
	queue chan *v1alpha1.NodeArtifact

	// lastReady is when any simulated node last patched a status Ready.
	lastReady *atomic.Int64

	mu   sync.Mutex
	done map[string]bool // uid/generation handled
}

func startSimNode(ctx context.Context, admin *rest.Config, scheme *runtime.Scheme, name string, qps float32, queueLen int, lastReady *atomic.Int64) (*simNode, error) {
	cfg := rest.CopyConfig(admin)
	cfg.QPS, cfg.Burst = qps, 2*int(qps)
	if qps <= 0 {
		cfg.QPS = -1
	}
	cfg.UserAgent = "barge-edgepuller-sim/" + name
	// Its own connection, as a puller on its own node has: with the
	// shared transport client-go would otherwise give every simulated node,
	// a thousand watches would share one HTTP/2 connection and its flow
	// control, and the API server would find them slow together.
	cfg.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	n := &simNode{name: name, c: c, hc: &http.Client{Timeout: 30 * time.Second}, lastReady: lastReady,
		queue: make(chan *v1alpha1.NodeArtifact, queueLen), done: map[string]bool{}}
	go n.watch(ctx)
	for range 2 {
		go n.work(ctx)
	}
	return n, nil
}

func (n *simNode) watch(ctx context.Context) {
	seen := ""
	for ctx.Err() == nil {
		sel := client.MatchingLabels{v1alpha1.NodeLabel: n.name}
		rv, err := n.list(ctx, sel, seen)
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		seen = rv
		for ctx.Err() == nil {
			w, err := n.c.Watch(ctx, &v1alpha1.NodeArtifactList{}, sel, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
			if err != nil {
				break
			}
			expired := false
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					expired = true
					break
				}
				if na, ok := ev.Object.(*v1alpha1.NodeArtifact); ok {
					rv, seen = na.ResourceVersion, na.ResourceVersion
					if ev.Type == watch.Added || ev.Type == watch.Modified {
						n.consider(na)
					}
				}
			}
			w.Stop()
			if expired {
				break
			}
		}
	}
}

// list reads the node's NodeArtifacts in pages of 500, as the puller does:
// a consistent read the first time, then from the API server's watch
// cache, not older than minRV; it returns the resource version to watch
// from.
func (n *simNode) list(ctx context.Context, sel client.MatchingLabels, minRV string) (string, error) {
	var items []v1alpha1.NodeArtifact
	cont := ""
	for {
		var page v1alpha1.NodeArtifactList
		opts := &client.ListOptions{Limit: kube.DefaultListPageSize, Continue: cont}
		if cont == "" && minRV != "" {
			opts.Raw = &metav1.ListOptions{ResourceVersion: minRV, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan}
		}
		if err := n.c.List(ctx, &page, sel, opts); err != nil {
			return "", err
		}
		items = append(items, page.Items...)
		if cont = page.Continue; cont == "" {
			for i := range items {
				n.consider(&items[i])
			}
			return page.ResourceVersion, nil
		}
	}
}

// consider queues a NodeArtifact whose current generation is not handled yet.
func (n *simNode) consider(na *v1alpha1.NodeArtifact) {
	if na.DeletionTimestamp != nil || na.Spec.NodeName != n.name {
		return
	}
	if na.Status.Phase == v1alpha1.NodeArtifactReady && na.Status.Digest == na.Spec.Digest {
		return
	}
	key := fmt.Sprintf("%s/%d", na.UID, na.Generation)
	n.mu.Lock()
	seen := n.done[key]
	n.done[key] = true
	n.mu.Unlock()
	if !seen {
		n.queue <- na
	}
}

func (n *simNode) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case na := <-n.queue:
			if err := n.pull(ctx, na); err != nil && ctx.Err() == nil {
				fmt.Printf("simulated node %s: %s/%s: %v\n", n.name, na.Namespace, na.Name, err)
			}
		}
	}
}

func (n *simNode) pull(ctx context.Context, na *v1alpha1.NodeArtifact) error {
	type got struct {
		size int64
		err  error
	}
	done := make(chan got, 1)
	go func() {
		size, err := n.manifest(ctx, na.Spec.Reference)
		done <- got{size, err}
	}()
	var g got
	select {
	case g = <-done:
	case <-time.After(kube.DefaultProgressEvery): // the puller holds an unfinished status this long
		if err := n.patch(ctx, na, map[string]any{"phase": v1alpha1.NodeArtifactPulling, "observedGeneration": na.Generation}); err != nil {
			return err
		}
		g = <-done
	}
	size, err := g.size, g.err
	if err != nil {
		return n.patch(ctx, na, map[string]any{"phase": v1alpha1.NodeArtifactFailed, "message": err.Error(), "observedGeneration": na.Generation})
	}
	now := time.Now().UTC().Truncate(time.Second).Format(time.RFC3339)
	defer func() { n.lastReady.Store(time.Now().UnixNano()) }()
	return n.patch(ctx, na, map[string]any{
		"phase": v1alpha1.NodeArtifactReady, "digest": na.Spec.Digest, "observedGeneration": na.Generation,
		"path":      "/var/lib/barge/artifacts/" + na.Namespace + "/" + na.Spec.ArtifactName + "/current",
		"bytesDone": size, "bytesTotal": size,
		"conditions": []map[string]any{{"type": v1alpha1.ReadyCondition, "status": "True", "reason": "Ready",
			"message": na.Spec.Digest + " is materialized", "observedGeneration": na.Generation, "lastTransitionTime": now}},
	})
}

func (n *simNode) patch(ctx context.Context, na *v1alpha1.NodeArtifact, status map[string]any) error {
	body, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	return n.c.Status().Patch(ctx, na, client.RawPatch(types.MergePatchType, body))
}

// manifest GETs the manifest reference (host/repo@digest) names, and
// returns the size of its config and layers.
func (n *simNode) manifest(ctx context.Context, reference string) (int64, error) {
	repo, dgst, ok := strings.Cut(reference, "@")
	host, path, ok2 := strings.Cut(repo, "/")
	if !ok || !ok2 {
		return 0, fmt.Errorf("reference %q is not host/repository@digest", reference)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/"+path+"/manifests/"+dgst, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	req.Header.Set("User-Agent", "barge-edgepuller-sim")
	resp, err := n.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET manifest %s: %s", reference, resp.Status)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return 0, err
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
