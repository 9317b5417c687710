package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bargev1 "github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/internal/testenv"
)

// Edge serving with every part a real process, the kubelet's too: the
// serving pods that barge-controller's DaemonSet asks for run the model
// server (internal/testenv/modelserver) as processes on this machine
// (testenv.StartProcessKubelet), each mounting its node's puller root.

// servingSite is a namespace whose edge nodes run a puller each, and whose
// serving pods run as processes.
type servingSite struct {
	ns      string
	nodes   []string
	kubelet *testenv.Kubelet
}

func startServingSite(t *testing.T, names ...string) *servingSite {
	t.Helper()
	s := &servingSite{ns: env.Namespace(t), nodes: names}
	roots := map[string]string{}
	for _, n := range names {
		roots[n] = startNode(t, n).root
	}
	// The controller runs with the default --edge-root; each node's puller
	// has a root of its own, which stands in for that path on the node.
	s.kubelet = testenv.StartProcessKubelet(t, env.Client, s.ns, testenv.ProcessConfig{
		EdgeRoot: bargev1.DefaultEdgeRoot,
		NodeRoot: func(node string) string { return roots[node] },
	}, names...)
	return s
}

// serverModel is an edge InferenceModel served by the model server.
func (s *servingSite) serverModel(name, artifact, version string, rollout bargev1.RolloutSpec) *bargev1.InferenceModel {
	return &bargev1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: name},
		Spec: bargev1.InferenceModelSpec{
			Artifact: artifact, TargetVersion: version, Insecure: true,
			NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
			Rollout:      rollout,
			Server: &bargev1.ServerSpec{
				// The stand-in runs the command; the image is never pulled.
				Image:   "registry.example.com/serving/modelserver:1",
				Command: []string{filepath.Join(bins, "modelserver")},
				// A second to load: a restart is seen, and so would be two
				// at once.
				Args: []string{"-model", "$(BARGE_MODEL_DIR)/model.bin", "-load-time", "1s"},
			},
		},
	}
}

// deploy creates im, and deletes it when the test ends, while the nodes'
// pullers still run: envtest deletes no namespace, and a later test's
// pullers would pull every model an earlier test left.
func (s *servingSite) deploy(t *testing.T, im *bargev1.InferenceModel) {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, im); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Client.Delete(ctx, im); client.IgnoreNotFound(err) != nil {
			t.Error(err)
			return
		}
		waitFor(t, im.Name+" and its NodeArtifacts to be gone", 60*time.Second, func() bool {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(im), &bargev1.InferenceModel{})
			return apierrors.IsNotFound(err) && len(nodeArtifacts(t, s.ns)) == 0
		})
	})
}

// waitReady waits for the model's Ready condition: the pullers' reports
// can follow the files, and the servers, by a moment.
func (s *servingSite) waitReady(t *testing.T, model string) {
	t.Helper()
	var im *bargev1.InferenceModel
	deadline := time.Now().Add(60 * time.Second)
	for im = getModel(t, s.ns, model); !meta.IsStatusConditionTrue(im.Status.Conditions, "Ready"); im = getModel(t, s.ns, model) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is not Ready: nodes %+v, conditions %+v", model, im.Status.Nodes, im.Status.Conditions)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c := im.Status.Nodes; int(c.Serving) != len(s.nodes) || c.Serving != c.Desired {
		t.Errorf("%s is Ready with nodes %+v, want all %d serving", model, c, len(s.nodes))
	}
}

// serverAnswer is what the model server says (modelserver.Answer).
type serverAnswer struct {
	Name       string            `json:"name"`
	Digest     string            `json:"digest"`
	Model      string            `json:"model"`
	Preprocess map[string]string `json:"preprocess"`
	Labels     []string          `json:"labels"`
	// CloudURL is $BARGE_CLOUD_URL; CloudURLFile the file -cloud-url-file.
	CloudURL     string `json:"cloudURL"`
	CloudURLFile string `json:"cloudURLFile"`
	PID          int    `json:"pid"`
}

var serverClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// ask asks the server of model on node, if it has one.
func (s *servingSite) ask(model, node string) (serverAnswer, error) {
	var a serverAnswer
	addr := s.kubelet.Addr(model, node)
	if addr == "" {
		return a, fmt.Errorf("no serving pod on %s", node)
	}
	resp, err := serverClient.Get("http://" + addr + "/")
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("%s: %s", addr, resp.Status)
	}
	return a, json.NewDecoder(resp.Body).Decode(&a)
}

// waitServing waits until every node's server answers with digest and
// status.nodes counts them all serving, and returns the answers.
func (s *servingSite) waitServing(t *testing.T, model, digest string) map[string]serverAnswer {
	t.Helper()
	out := map[string]serverAnswer{}
	var last string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		im := getModel(t, s.ns, model)
		c := im.Status.Nodes
		last = fmt.Sprintf("status.nodes %+v", c)
		done := int(c.Desired) == len(s.nodes) && int(c.Serving) == len(s.nodes)
		for _, n := range s.nodes {
			a, err := s.ask(model, n)
			switch {
			case err != nil:
				last, done = fmt.Sprintf("%s: %v", n, err), false
			case a.Digest != digest:
				last, done = fmt.Sprintf("%s serves %s", n, a.Digest), false
			}
			out[n] = a
		}
		if done {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s to serve %s on %s: %s; conditions %+v", model, digest, strings.Join(s.nodes, ", "), last, im.Status.Conditions)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setTarget changes spec.targetVersion, again on a conflict.
func setTarget(t *testing.T, ns, name, version string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		im := getModel(t, ns, name)
		im.Spec.TargetVersion = version
		return env.Client.Update(context.Background(), im)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// seen is one server as a watch saw it: the digest it answered with and
// its process, or "" while it did not answer.
type seen struct {
	digest string
	pid    int
}

// serverWatch asks every node's server, all at once, every 50 ms, and keeps
// what each said whenever it changed.
type serverWatch struct {
	site  *servingSite
	model string
	// onNew is called when a node first answers with a digest it did not
	// answer with before; it returns a problem, or "".
	onNew func(node, digest string) string

	stopc, done chan struct{}
	mu          sync.Mutex
	history     map[string][]seen
	maxDown     int
	downAt      string
	problems    []string
}

func (s *servingSite) watch(model string, onNew func(node, digest string) string) *serverWatch {
	w := &serverWatch{site: s, model: model, onNew: onNew, stopc: make(chan struct{}), done: make(chan struct{}), history: map[string][]seen{}}
	go w.run()
	return w
}

func (w *serverWatch) run() {
	defer close(w.done)
	for {
		round := make([]seen, len(w.site.nodes))
		var wg sync.WaitGroup
		for i, n := range w.site.nodes {
			wg.Go(func() {
				if a, err := w.site.ask(w.model, n); err == nil {
					round[i] = seen{a.Digest, a.PID}
				}
			})
		}
		wg.Wait()
		w.record(round)
		select {
		case <-w.stopc:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *serverWatch) record(round []seen) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var down []string
	for i, n := range w.site.nodes {
		h := w.history[n]
		if len(h) == 0 || h[len(h)-1] != round[i] {
			d := round[i].digest
			if d != "" && !slices.ContainsFunc(h, func(x seen) bool { return x.digest == d }) && w.onNew != nil {
				if p := w.onNew(n, d); p != "" {
					w.problems = append(w.problems, p)
				}
			}
			w.history[n] = append(h, round[i])
		}
		if round[i].digest == "" {
			down = append(down, n)
		}
	}
	if len(down) > w.maxDown {
		w.maxDown, w.downAt = len(down), strings.Join(down, ", ")
	}
}

// stop ends the watch; it reports the problems onNew found, and logs what
// each server answered.
func (w *serverWatch) stop(t *testing.T) {
	t.Helper()
	close(w.stopc)
	<-w.done
	for _, p := range w.problems {
		t.Error(p)
	}
	for _, n := range w.site.nodes {
		var b strings.Builder
		for _, s := range w.history[n] {
			if s.digest == "" {
				b.WriteString(" (no answer)")
				continue
			}
			fmt.Fprintf(&b, " %s (pid %d)", s.digest[:len("sha256:")+12], s.pid)
		}
		t.Logf("%s's server:%s", n, b.String())
	}
}

// digests is what node's server answered with, in order, "" for no answer.
func (w *serverWatch) digests(node string) []string {
	var out []string
	for _, s := range w.history[node] {
		if len(out) == 0 || out[len(out)-1] != s.digest {
			out = append(out, s.digest)
		}
	}
	return out
}

// processes counts the processes that answered on node.
func (w *serverWatch) processes(node string) int {
	pids := map[int]bool{}
	for _, s := range w.history[node] {
		if s.digest != "" {
			pids[s.pid] = true
		}
	}
	return len(pids)
}

// The serving contract, end to end: each node's server finds the model's
// files, scripts and labels where the README says, and a new version
// reaches every node one node at a time, each node's server restarting
// only once its files are Ready and never failing but for that restart.
func TestEdgeServingContract(t *testing.T) {
	s := startServingSite(t, "edge-1", "edge-2", "edge-3")
	repo := registry + "/models/" + s.ns
	d1 := push(t, repo+":1.0.0", map[string]string{"model.bin": "weights v1", "preprocess/prep.py": "print('v1')"},
		"--label", "cat", "--label", "dog")
	s.deploy(t, s.serverModel("detector", repo, "1.0.0", bargev1.RolloutSpec{MaxConcurrentNodes: 1}))
	for n, a := range s.waitServing(t, "detector", d1) {
		if a.Name != "detector" || a.Model != "weights v1" || a.Preprocess["prep.py"] != "print('v1')" || len(a.Preprocess) != 1 ||
			!slices.Equal(a.Labels, []string{"cat", "dog"}) {
			t.Errorf("%s's server answers %+v", n, a)
		}
	}
	s.waitReady(t, "detector")

	// Version 2: every answer that names it comes from a node whose
	// NodeArtifact holds it Ready.
	d2 := push(t, repo+":2.0.0", map[string]string{"model.bin": "weights v2", "preprocess/prep.py": "print('v2')"},
		"--label", "cat", "--label", "dog", "--label", "bird")
	w := s.watch("detector", func(node, digest string) string {
		if digest != d2 {
			return ""
		}
		na, ok := nodeArtifacts(t, s.ns)[node]
		if !ok || na.Status.Phase != bargev1.NodeArtifactReady || na.Status.Digest != d2 {
			return fmt.Sprintf("%s's server answered %s while its NodeArtifact was %s on %s", node, d2, na.Status.Phase, na.Status.Digest)
		}
		return ""
	})
	setTarget(t, s.ns, "detector", "2.0.0")
	answers := s.waitServing(t, "detector", d2)
	w.stop(t)

	for n, a := range answers {
		if a.Model != "weights v2" || a.Preprocess["prep.py"] != "print('v2')" || !slices.Equal(a.Labels, []string{"cat", "dog", "bird"}) {
			t.Errorf("%s's server answers %+v after the switch", n, a)
		}
		got := w.digests(n)
		if !slices.Equal(got, []string{d1, "", d2}) {
			t.Errorf("%s's server answered %q during the switch; want %s, then (while it restarts) nothing, then %s", n, got, d1, d2)
		}
		if p := w.processes(n); p != 2 {
			t.Errorf("%s: %d server processes answered during the switch, want 2 (one restart)", n, p)
		}
	}
	if w.maxDown > 1 {
		t.Errorf("%d servers did not answer at once (%s); maxConcurrentNodes is 1", w.maxDown, w.downAt)
	}
	s.waitReady(t, "detector")
}

// A version whose server crashes on the canary node rolls back: the canary
// serves the previous version again, and the other nodes never stop
// serving it.
func TestCrashingVersionRollsBack(t *testing.T) {
	s := startServingSite(t, "edge-1", "edge-2", "edge-3")
	repo := registry + "/models/" + s.ns
	d1 := push(t, repo+":1.0.0", map[string]string{"model.bin": "weights v1"})
	one := int32(1)
	im := s.serverModel("detector", repo, "1.0.0", bargev1.RolloutSpec{
		MaxConcurrentNodes: 1, Canary: &bargev1.CanarySpec{Nodes: &one}, FailurePolicy: bargev1.FailurePolicyRollback,
	})
	s.deploy(t, im)
	s.waitServing(t, "detector", d1)

	d2 := push(t, repo+":2.0.0", map[string]string{"model.bin": "weights v2", "CRASH": ""})
	w := s.watch("detector", nil)
	setTarget(t, s.ns, "detector", "2.0.0")
	var last *bargev1.InferenceModel
	waitFor(t, "the rollout of 2.0.0 to roll back", 2*time.Minute, func() bool {
		last = getModel(t, s.ns, "detector")
		return last.Status.Rollout != nil && last.Status.Rollout.Digest == d2 && last.Status.Rollout.Phase == bargev1.RolloutRolledBack
	})
	s.waitServing(t, "detector", d1)
	w.stop(t)

	canary := last.Status.Rollout.CanaryNodes
	if !slices.Equal(canary, []string{"edge-1"}) {
		t.Fatalf("canary nodes %v, want edge-1 (the first by name)", canary)
	}
	if got := w.digests("edge-1"); !slices.Equal(got, []string{d1, "", d1}) || w.processes("edge-1") != 2 {
		t.Errorf("the canary's server answered %q from %d processes; want %s, nothing while 2.0.0 crashed, then %s again from a new process",
			got, w.processes("edge-1"), d1, d1)
	}
	for _, n := range []string{"edge-2", "edge-3"} {
		if got := w.digests(n); !slices.Equal(got, []string{d1}) || w.processes(n) != 1 {
			t.Errorf("%s's server answered %q from %d processes; want only %s from one", n, got, w.processes(n), d1)
		}
	}
	im = getModel(t, s.ns, "detector")
	h := im.Status.History
	if len(h) == 0 || h[0].Action != "RolledBack" || h[0].Digest != d2 || !strings.Contains(h[0].Reason, "edge-1") || !strings.Contains(h[0].Reason, "CrashLoopBackOff") {
		t.Errorf("history %+v: want 2.0.0 rolled back for edge-1's CrashLoopBackOff", h)
	}
	for _, na := range nodeArtifacts(t, s.ns) {
		if na.Status.Digest != d1 || na.Status.Phase != bargev1.NodeArtifactReady {
			t.Errorf("%s's NodeArtifact is %s on %s after the rollback", na.Spec.NodeName, na.Status.Phase, na.Status.Digest)
		}
	}
}

// A joint model's edge server finds its cloud part where the README says:
// in BARGE_CLOUD_URL and in the file /etc/barge/joint/cloud-url, both from
// the ConfigMap the controller writes.
func TestJointEdgeServerFindsCloud(t *testing.T) {
	s := startServingSite(t, "edge-1", "edge-2")
	repo := registry + "/models/" + s.ns
	edge, cloud := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(edge, "model.bin"), "backbone")
	writeFile(t, filepath.Join(cloud, "model.onnx"), "head")
	barge(t, "push", "--joint", "edge="+edge, "--joint", "cloud="+cloud, repo+":1.0.0")
	im := s.serverModel("pipeline", repo, "1.0.0", bargev1.RolloutSpec{})
	im.Spec.NodeSelector = map[string]string{"site": "a"}
	im.Spec.DeployToLayer = bargev1.LayerJoint
	im.Spec.FrameworkType = "onnx" // the cloud part's runtime
	im.Spec.Server.Args = append(im.Spec.Server.Args, "-cloud-url-file", "/etc/barge/joint/cloud-url")
	s.deploy(t, im)
	// The servers report the edge part's digest: the files they mount.
	var files string
	waitFor(t, "the edge part on edge-1 and edge-2", 90*time.Second, func() bool {
		nas := nodeArtifacts(t, s.ns)
		files = nas["edge-1"].Spec.Digest
		return len(nas) == 2 && files != "" && nas["edge-2"].Spec.Digest == files
	})
	answers := s.waitServing(t, "pipeline", files)
	url := getModel(t, s.ns, "pipeline").Status.URL
	if url == "" {
		t.Fatal("status.url of the joint model is empty")
	}
	for n, a := range answers {
		if a.Model != "backbone" || a.CloudURL != url || a.CloudURLFile != url {
			t.Errorf("%s's server answers model %q, cloud URL %q and file %q; want backbone and %s", n, a.Model, a.CloudURL, a.CloudURLFile, url)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
