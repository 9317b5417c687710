//go:build linux

// Command controller measures barge-controller at scale: 1,000
// InferenceModels over 10 nodes, every part but the registry a real
// process. It reports the time from the first create until every model is
// Ready on every node, the controller's peak memory and CPU, the API
// objects and requests the rollout made, and the registry requests of each
// re-resolve: a HEAD per model whose targetVersion is a tag, a tag list
// only for a semver range.
//
// Run it with `make bench` (after the pull benchmark) or
// `go run ./test/bench/controller`; it is not part of `make test`. It
// listens on loopback only, stops by itself, and removes what it wrote.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"oras.land/oras-go/v2/registry/remote"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/kube"
	"github.com/bargeml/barge/internal/testenv"
	"github.com/bargeml/barge/registry"
	"github.com/bargeml/barge/test/bench/benchdoc"
)

type config struct {
	bin      string
	doc      string
	models   int
	ranges   int
	nodes    int
	repos    int
	interval time.Duration
	windows  int
	pullers  string
	nodeQPS  float64
	rollout  time.Duration
	timeout  time.Duration
	keep     bool
	profile  string
	ctrlArgs string

	section    string        // the -doc block written
	target     time.Duration // time to all Ready to reach; 0: for the record
	before     time.Duration // the last run's time to all Ready, to compare with
	beforeWhen string        // when and how that was measured
}

// rangeVersion is the targetVersion of the range models; their repository
// has 1.0.0, 1.1.0 and 2.0.0, so it resolves to 1.1.0.
const rangeVersion = ">=1.0 <2"

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "", "directory holding barge-controller and barge-edgepuller; if empty, they are built with go build")
	flag.StringVar(&cfg.doc, "doc", "", "markdown file whose generated controller section is replaced with the results (e.g. docs/benchmarks.md)")
	flag.IntVar(&cfg.models, "models", 1000, "InferenceModels in all")
	flag.IntVar(&cfg.ranges, "ranges", 10, "of which this many have a semver range as targetVersion")
	flag.IntVar(&cfg.nodes, "nodes", 10, "Node objects, each with a barge-edgepuller process; every model selects all of them")
	flag.StringVar(&cfg.pullers, "pullers", "simulated", `"real": a barge-edgepuller process per node; "simulated": a goroutine per node that lists and watches its NodeArtifacts, GETs each manifest and patches status Ready (Pulling first when the GET takes over a second)`)
	flag.Float64Var(&cfg.nodeQPS, "node-qps", kube.DefaultQPS, "with -pullers simulated: each node's client-side limit of API requests per second (burst twice that), as barge-edgepuller's default; 0 for none")
	flag.IntVar(&cfg.repos, "repos", 10, "repositories, two tags each, that the tag models share")
	flag.DurationVar(&cfg.interval, "interval", 30*time.Second, "spec.interval of every model: how often it is resolved again")
	flag.IntVar(&cfg.windows, "windows", 2, "intervals over which the registry requests of re-resolves are counted, once all models are Ready")
	flag.DurationVar(&cfg.rollout, "rollout-timeout", 7*time.Minute, "give up when the models are not all Ready after this long")
	flag.DurationVar(&cfg.timeout, "timeout", 12*time.Minute, "stop everything after this long")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (for debugging)")
	flag.StringVar(&cfg.profile, "profile", "", "directory to write the controller's CPU profile of the rollout's first 30 s (cpu.pprof) and its heap at all Ready (heap.pprof) into; it runs with --profiling")
	flag.StringVar(&cfg.ctrlArgs, "controller-args", "", "more barge-controller flags, space-separated (e.g. \"--kube-api-qps 50\")")
	flag.StringVar(&cfg.section, "section", "scale-models", "with -doc: the block written, between <!-- bench:SECTION:begin … --> and <!-- bench:SECTION:end -->")
	flag.DurationVar(&cfg.target, "target", 0, "time from the first create to all Ready to reach, reported as met or not; 0 for the record only")
	flag.DurationVar(&cfg.before, "before", 0, "an earlier run's time to all Ready, reported as the ratio of this one to it")
	flag.StringVar(&cfg.beforeWhen, "before-when", "the last run", "what -before was (when, which code)")
	flag.Parse()
	if cfg.models < 1 || cfg.ranges < 0 || cfg.ranges >= cfg.models || cfg.nodes < 1 || cfg.repos < 1 || cfg.windows < 1 || cfg.interval < 5*time.Second ||
		(cfg.pullers != "real" && cfg.pullers != "simulated") {
		fmt.Fprintln(os.Stderr, "bench: want -models > -ranges >= 0, -nodes, -repos and -windows at least 1, -interval at least 5s, -pullers real or simulated")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	err := run(ctx, cfg)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// bench is one run: the parts it started and what it measured.
type bench struct {
	cfg   config
	work  string
	env   *testenv.Env
	c     client.WithWatch
	admin *rest.Config
	proxy *countingProxy
	ns    string

	controller  *process
	metricsAddr string
	pullers     []*process
	stopSim     context.CancelFunc
	lastReady   atomic.Int64 // unix ns of the last status Ready a simulated node patched

	// expected digest of each model, by name
	expected map[string]string
	isRange  map[string]bool
	repoOf   map[string]string

	res results
}

// results are the figures, filled in as the run goes.
type results struct {
	machine                   machine
	took                      time.Duration
	tResolved, tCreated, tAll time.Duration // from the first create
	tLastNode                 time.Duration // the last status Ready of a simulated node
	createTook                time.Duration
	peakKiB, peakAtReadyKiB   int64
	endRSSKiB                 int64
	cpuRollout, cpuWindow     time.Duration
	apiserverCPU, etcdCPU     time.Duration // during the rollout
	pullerPeakKiB             int64
	apiserverKiB, etcdKiB     int64
	nodeArtifacts, events     int
	warnings                  map[string]float64 // Warning events by reason
	apiRollout                map[string]float64 // API server requests during the rollout, every client
	listsRollout              map[string]float64 // NodeArtifact lists from storage: storageLists by storage
	ctrlRollout, ctrlWindow   map[string]float64 // the controller's API requests by method
	reconcRollout, reconcWin  map[string]float64
	regRollout, regWindow     counts
	window                    time.Duration
	resolvesTag, resolvesRng  int
	modelsResolvedTag         int // tag models resolved at least once in the window
	modelsResolvedRng         int
}

func run(ctx context.Context, cfg config) (err error) {
	start := time.Now()
	b := &bench{cfg: cfg, ns: "bench", expected: map[string]string{}, isRange: map[string]bool{}, repoOf: map[string]string{}}
	b.res.machine = describeMachine()
	b.work, err = os.MkdirTemp("", "barge-bench-controller-")
	if err != nil {
		return err
	}
	if cfg.keep {
		fmt.Fprintln(os.Stderr, "work directory:", b.work)
	} else {
		defer os.RemoveAll(b.work)
	}
	bins := cfg.bin
	if bins == "" {
		bins = filepath.Join(b.work, "bin")
		step("build barge-controller and barge-edgepuller")
		build := exec.CommandContext(ctx, "go", "build", "-o", bins+"/", "./cmd/barge-controller", "./cmd/barge-edgepuller")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build: %w", err)
		}
	}
	for _, name := range []string{"barge-controller", "barge-edgepuller"} {
		if _, err := os.Stat(filepath.Join(bins, name)); err != nil {
			return fmt.Errorf("%w (run make build, or leave -bin empty to build them)", err)
		}
	}

	step("start kube-apiserver and etcd")
	b.env, err = testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		// Under load kube-apiserver may outlast envtest's stop timeout; it
		// is then killed, which changes nothing to the figures.
		if serr := b.env.Stop(); serr != nil {
			fmt.Fprintln(os.Stderr, "bench: warning:", serr)
		}
	}()
	b.admin = rest.CopyConfig(b.env.Config)
	b.admin.QPS = -1 // the bench must not be what slows the rollout
	b.c, err = client.NewWithWatch(b.admin, client.Options{Scheme: b.env.Scheme})
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(b.work, "kubeconfig")
	if err := os.WriteFile(kubeconfig, b.env.KubeConfig, 0o600); err != nil {
		return err
	}

	step("start the registry and push the models")
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0", Root: filepath.Join(b.work, "registry")})
	if err != nil {
		return err
	}
	defer reg.Close(context.Background())
	if b.proxy, err = startProxy(reg.Host()); err != nil {
		return err
	}
	defer b.proxy.close()
	digests, err := b.push(ctx, reg.Host())
	if err != nil {
		return err
	}

	if err := b.createNodes(ctx); err != nil {
		return err
	}
	if err := b.startProcesses(ctx, bins, kubeconfig); err != nil {
		return err
	}
	defer b.stopProcesses()

	if err := b.rollout(ctx, digests); err != nil {
		return err
	}
	if err := b.reresolve(ctx); err != nil {
		return err
	}
	b.res.peakKiB = procStatus(b.controller.pid(), "VmHWM")
	b.res.endRSSKiB = procStatus(b.controller.pid(), "VmRSS")
	for _, p := range b.pullers {
		b.res.pullerPeakKiB = max(b.res.pullerPeakKiB, procStatus(p.pid(), "VmHWM"))
	}
	b.res.apiserverKiB = procStatus(childByName("kube-apiserver"), "VmHWM")
	b.res.etcdKiB = procStatus(childByName("etcd"), "VmHWM")
	b.res.machine.loadAfter = benchdoc.LoadAvg()
	b.res.took = time.Since(start)

	report := b.report()
	fmt.Println(report)
	if cfg.doc != "" {
		if err := writeDoc(cfg.doc, cfg.section, report); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", cfg.doc)
	}
	return nil
}

func step(s string) { fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), s) }

// push makes repos tag repositories of two versions each and one range
// repository of three, small models all different, and returns the digest
// of each repo:tag. It pushes to the registry itself, not through the
// proxy, so that the counts hold only the controller's and pullers'.
func (b *bench) push(ctx context.Context, host string) (map[string]string, error) {
	out := map[string]string{}
	pushOne := func(repo, tag string) error {
		dir := filepath.Join(b.work, "src", repo, tag)
		files := map[string]string{
			"model.onnx":            fmt.Sprintf("weights of %s:%s\n%s", repo, tag, strings.Repeat("w", 4096)),
			"labels.txt":            "cat\ndog\n",
			"preprocess/resize.py":  fmt.Sprintf("# %s %s\nSIZE = 224\n", repo, tag),
			"postprocess/argmax.py": "def argmax(x): return max(range(len(x)), key=x.__getitem__)\n",
		}
		for name, content := range files {
			p := filepath.Join(dir, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return err
			}
		}
		r, err := remote.NewRepository(host + "/" + repo)
		if err != nil {
			return err
		}
		r.PlainHTTP = true
		desc, err := artifact.Pack(ctx, r, dir, artifact.PackOptions{Metadata: artifact.Metadata{Framework: "onnx", Task: "image-classification"}})
		if err != nil {
			return fmt.Errorf("push %s:%s: %w", repo, tag, err)
		}
		if err := r.Tag(ctx, desc, tag); err != nil {
			return err
		}
		out[repo+":"+tag] = desc.Digest.String()
		return nil
	}
	for i := range b.cfg.repos {
		for _, tag := range []string{"1.0.0", "1.1.0"} {
			if err := pushOne(fmt.Sprintf("models/m%d", i), tag); err != nil {
				return nil, err
			}
		}
	}
	if b.cfg.ranges > 0 {
		for _, tag := range []string{"1.0.0", "1.1.0", "2.0.0"} {
			if err := pushOne("models/ranged", tag); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func nodeName(i int) string { return fmt.Sprintf("edge-%02d", i) }

func (b *bench) createNodes(ctx context.Context) error {
	for i := range b.cfg.nodes {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName(i),
			Labels: map[string]string{"node-role.kubernetes.io/edge": "", "bench": "yes"}}}
		if err := b.c.Create(ctx, n); err != nil {
			return err
		}
	}
	return b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: b.ns}})
}

func (b *bench) startProcesses(ctx context.Context, bins, kubeconfig string) error {
	if b.cfg.pullers == "real" {
		step(fmt.Sprintf("start barge-controller and %d barge-edgepuller processes", b.cfg.nodes))
	} else {
		step(fmt.Sprintf("start barge-controller and %d simulated nodes", b.cfg.nodes))
	}
	var err error
	if b.metricsAddr, err = freePort(); err != nil {
		return err
	}
	args := []string{"--kubeconfig", kubeconfig, "--metrics-bind-address", b.metricsAddr, "--health-probe-bind-address", "0", "--zap-log-level", "error"}
	if b.cfg.profile != "" {
		args = append(args, "--profiling")
	}
	args = append(args, strings.Fields(b.cfg.ctrlArgs)...)
	b.controller, err = startProcess("barge-controller", filepath.Join(b.work, "controller.log"), filepath.Join(bins, "barge-controller"), args...)
	if err != nil {
		return err
	}
	simCtx, stopSim := context.WithCancel(ctx)
	b.stopSim = stopSim
	for i := range b.cfg.nodes {
		name := nodeName(i)
		if b.cfg.pullers == "simulated" {
			if _, err := startSimNode(simCtx, b.env.Config, b.env.Scheme, name, float32(b.cfg.nodeQPS), 2*b.cfg.models, &b.lastReady); err != nil {
				return err
			}
			continue
		}
		p, err := startProcess("puller "+name, filepath.Join(b.work, name+".log"), filepath.Join(bins, "barge-edgepuller"),
			"--kubeconfig", kubeconfig, "--node-name", name, "--root", filepath.Join(b.work, "nodes", name),
			"--metrics-addr", "", "--log-level", "warn")
		if err != nil {
			return err
		}
		b.pullers = append(b.pullers, p)
	}
	// Wait until the controller serves metrics: its caches have synced.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, _, err := controllerMetrics(ctx, b.metricsAddr); err == nil {
			return nil
		}
		if !b.controller.running() {
			return fmt.Errorf("barge-controller exited:\n%s", b.controller.tail(30))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.New("barge-controller did not serve /metrics within 2 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *bench) stopProcesses() {
	if b.stopSim != nil {
		b.stopSim()
	}
	var wg sync.WaitGroup
	for _, p := range append([]*process{b.controller}, b.pullers...) {
		if p != nil {
			wg.Go(p.stop)
		}
	}
	wg.Wait()
}

// alive fails when a process the bench needs has exited.
func (b *bench) alive() error {
	for _, p := range append([]*process{b.controller}, b.pullers...) {
		if !p.running() {
			return fmt.Errorf("%s exited:\n%s", p.name, p.tail(30))
		}
	}
	return nil
}

func (b *bench) model(i int, digests map[string]string) *v1alpha1.InferenceModel {
	name := fmt.Sprintf("m-%04d", i)
	repo, version := fmt.Sprintf("models/m%d", i%b.cfg.repos), "1.0.0"
	if (i/b.cfg.repos)%2 == 1 {
		version = "1.1.0"
	}
	b.expected[name] = digests[repo+":"+version]
	if i >= b.cfg.models-b.cfg.ranges {
		repo, version = "models/ranged", rangeVersion
		b.expected[name] = digests[repo+":1.1.0"]
		b.isRange[name] = true
	}
	b.repoOf[name] = repo
	return &v1alpha1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: b.ns, Name: name},
		Spec: v1alpha1.InferenceModelSpec{
			Artifact:      b.proxy.host + "/" + repo,
			TargetVersion: version,
			Insecure:      true,
			NodeSelector:  map[string]string{"bench": "yes"},
			Interval:      &metav1.Duration{Duration: b.cfg.interval},
		},
	}
}

// rollout creates the models and waits until every one is Ready on every
// node, noting when all were resolved and all NodeArtifacts existed.
func (b *bench) rollout(ctx context.Context, digests map[string]string) error {
	models := make([]*v1alpha1.InferenceModel, b.cfg.models)
	for i := range models {
		models[i] = b.model(i, digests)
	}
	apiBefore, listsBefore, err := apiRequests(ctx, b.admin)
	if err != nil {
		return err
	}
	reconcBefore, ctrlBefore, err := controllerMetrics(ctx, b.metricsAddr)
	if err != nil {
		return err
	}
	regBefore := b.proxy.snapshot()
	cpuBefore := cpuTime(b.controller.pid())
	apiserverPID, etcdPID := childByName("kube-apiserver"), childByName("etcd")
	apiserverBefore, etcdBefore := cpuTime(apiserverPID), cpuTime(etcdPID)

	if b.cfg.profile != "" {
		go b.saveProfile(ctx, "profile?seconds=30", "cpu.pprof")
	}
	step(fmt.Sprintf("create %d InferenceModels (%d on a tag over %d repositories, %d on %q), each selecting all %d nodes",
		b.cfg.models, b.cfg.models-b.cfg.ranges, b.cfg.repos, b.cfg.ranges, rangeVersion, b.cfg.nodes))
	t0 := time.Now()
	work := make(chan *v1alpha1.InferenceModel)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for m := range work {
				if err := b.c.Create(ctx, m); err != nil {
					errs <- fmt.Errorf("create %s: %w", m.Name, err)
					return
				}
			}
		})
	}
	for _, m := range models {
		select {
		case work <- m:
		case err := <-errs:
			close(work)
			wg.Wait()
			return err
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	b.res.createTook = time.Since(t0)

	want := b.cfg.models * b.cfg.nodes
	lastLog := time.Now()
	for {
		if err := b.alive(); err != nil {
			return err
		}
		var list v1alpha1.InferenceModelList
		if err := b.c.List(ctx, &list, &client.ListOptions{Namespace: b.ns, Raw: &metav1.ListOptions{ResourceVersion: "0"}}); err != nil {
			return err
		}
		resolved, ready, nodesReady := 0, 0, 0
		for i := range list.Items {
			m := &list.Items[i]
			st := m.Status
			if st.Resolved != nil && st.Resolved.Digest == b.expected[m.Name] {
				resolved++
			}
			nodesReady += int(st.Nodes.Ready)
			if b.ready(m) {
				ready++
			}
		}
		now := time.Since(t0)
		if b.res.tCreated == 0 {
			n, err := b.countNodeArtifacts(ctx)
			if err != nil {
				return err
			}
			if n >= want {
				b.res.tCreated = now
			}
		}
		if resolved == b.cfg.models && b.res.tResolved == 0 {
			b.res.tResolved = now
		}
		if ready == b.cfg.models {
			b.res.tAll = now
			break
		}
		if time.Since(lastLog) >= 15*time.Second {
			lastLog = time.Now()
			step(fmt.Sprintf("%4.0fs: %d of %d models resolved, %d Ready; %d of %d NodeArtifacts Ready", now.Seconds(), resolved, b.cfg.models, ready, nodesReady, want))
		}
		if now > b.cfg.rollout {
			return fmt.Errorf("after %s only %d of %d models are Ready (%d of %d NodeArtifacts)\n%s",
				b.cfg.rollout, ready, b.cfg.models, nodesReady, want, b.diagnose(ctx, list.Items))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if ns := b.lastReady.Load(); ns > 0 {
		b.res.tLastNode = time.Unix(0, ns).Sub(t0)
	}
	step(fmt.Sprintf("all %d models Ready on %d nodes after %s", b.cfg.models, b.cfg.nodes, b.res.tAll.Round(time.Second)))
	b.res.cpuRollout = cpuTime(b.controller.pid()) - cpuBefore
	b.res.apiserverCPU, b.res.etcdCPU = cpuTime(apiserverPID)-apiserverBefore, cpuTime(etcdPID)-etcdBefore
	if b.cfg.profile != "" {
		b.saveProfile(ctx, "heap", "heap.pprof")
	}
	b.res.peakAtReadyKiB = procStatus(b.controller.pid(), "VmHWM")
	if b.res.nodeArtifacts, err = b.countNodeArtifacts(ctx); err != nil {
		return err
	}
	var events corev1.EventList
	if err := b.c.List(ctx, &events, client.InNamespace(b.ns)); err != nil {
		return err
	}
	b.res.events = len(events.Items)
	b.res.warnings = map[string]float64{}
	for _, e := range events.Items {
		if e.Type == corev1.EventTypeWarning {
			b.res.warnings[e.Reason]++
		}
	}
	apiAfter, listsAfter, err := apiRequests(ctx, b.admin)
	if err != nil {
		return err
	}
	b.res.apiRollout, b.res.listsRollout = diff(apiAfter, apiBefore), diff(listsAfter, listsBefore)
	reconcAfter, ctrlAfter, err := controllerMetrics(ctx, b.metricsAddr)
	if err != nil {
		return err
	}
	b.res.reconcRollout, b.res.ctrlRollout = diff(reconcAfter, reconcBefore), diff(ctrlAfter, ctrlBefore)
	b.res.regRollout = b.proxy.snapshot().sub(regBefore)
	return nil
}

// saveProfile GETs the controller's /debug/pprof/NAME into the -profile
// directory.
func (b *bench) saveProfile(ctx context.Context, name, file string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.metricsAddr+"/debug/pprof/"+name, nil)
	if err == nil {
		var resp *http.Response
		if resp, err = http.DefaultClient.Do(req); err == nil {
			defer resp.Body.Close()
			var body []byte
			if body, err = io.ReadAll(resp.Body); err == nil {
				err = os.MkdirAll(b.cfg.profile, 0o755)
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(b.cfg.profile, file), body, 0o644)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: warning: profile:", err)
	}
}

// diagnose says what a rollout that did not finish looks like: some models
// that are not Ready, the controller's work queue, its log.
func (b *bench) diagnose(ctx context.Context, models []v1alpha1.InferenceModel) string {
	var w strings.Builder
	shown := 0
	for i := range models {
		m := &models[i]
		if b.ready(m) || shown == 5 {
			continue
		}
		shown++
		fmt.Fprintf(&w, "%s (%s %s): resolved %+v, nodes %+v\n", m.Name, m.Spec.Artifact, m.Spec.TargetVersion, m.Status.Resolved, m.Status.Nodes)
		for _, c := range m.Status.Conditions {
			fmt.Fprintf(&w, "  %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
		}
	}
	if m, err := scrape(ctx, http.DefaultClient, "http://"+b.metricsAddr+"/metrics", "workqueue_depth", "workqueue_unfinished_work_seconds",
		"workqueue_longest_running_processor_seconds", "controller_runtime_active_workers", "controller_runtime_reconcile_total"); err == nil {
		for name, samples := range m {
			for _, s := range samples {
				if s.labels["controller"] == "inferencemodel" || s.labels["name"] == "inferencemodel" {
					fmt.Fprintf(&w, "controller %s%v = %g\n", name, s.labels, s.value)
				}
			}
		}
	}
	fmt.Fprintf(&w, "controller log:\n%s", b.controller.tail(20))
	return w.String()
}

// ready: the Ready condition is True, on every node, at the expected digest.
func (b *bench) ready(m *v1alpha1.InferenceModel) bool {
	st := m.Status
	return apimeta.IsStatusConditionTrue(st.Conditions, v1alpha1.ReadyCondition) &&
		st.Resolved != nil && st.Resolved.Digest == b.expected[m.Name] &&
		int(st.Nodes.Desired) == b.cfg.nodes && st.Nodes.Ready == st.Nodes.Desired
}

// countNodeArtifacts asks for one item and how many remain.
func (b *bench) countNodeArtifacts(ctx context.Context) (int, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("NodeArtifactList"))
	if err := b.c.List(ctx, list, client.InNamespace(b.ns), client.Limit(1)); err != nil {
		return 0, err
	}
	n := len(list.Items)
	if list.RemainingItemCount != nil {
		n += int(*list.RemainingItemCount)
	}
	return n, nil
}

// reresolve counts, over cfg.windows intervals, the re-resolves (a model's
// status.resolved.resolvedAt moving, seen through a watch) and the
// registry requests the controller sent meanwhile.
func (b *bench) reresolve(ctx context.Context) error {
	b.res.window = time.Duration(b.cfg.windows) * b.cfg.interval
	step(fmt.Sprintf("count the registry requests of re-resolves for %s (%d × spec.interval)", b.res.window, b.cfg.windows))
	// The registry's count starts right before the list the watch starts
	// from, and ends when the watch stops being read: a pass in flight at
	// either edge counts its requests and not its resolve at the end, its
	// resolve and not its requests at the start, so the two cancel out.
	reconcBefore, ctrlBefore, err := controllerMetrics(ctx, b.metricsAddr)
	if err != nil {
		return err
	}
	cpuBefore := cpuTime(b.controller.pid())
	regBefore := b.proxy.snapshot()
	var list v1alpha1.InferenceModelList
	if err := b.c.List(ctx, &list, client.InNamespace(b.ns)); err != nil {
		return err
	}
	last := map[string]string{}
	for _, m := range list.Items {
		last[m.Name] = resolvedAt(&m)
	}
	w, err := b.c.Watch(ctx, &v1alpha1.InferenceModelList{}, &client.ListOptions{Namespace: b.ns,
		Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true}})
	if err != nil {
		return err
	}
	defer w.Stop()
	end := time.After(b.res.window)
	resolvedIn := map[string]bool{}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-end:
			b.res.regWindow = b.proxy.snapshot().sub(regBefore)
			done = true
		case ev, ok := <-w.ResultChan():
			if !ok {
				return errors.New("the watch of InferenceModels ended early")
			}
			if ev.Type == watch.Error {
				return fmt.Errorf("watch of InferenceModels: %v", apierrorOf(ev))
			}
			m, ok := ev.Object.(*v1alpha1.InferenceModel)
			if !ok || ev.Type != watch.Modified {
				continue
			}
			if at := resolvedAt(m); at != last[m.Name] {
				last[m.Name] = at
				resolvedIn[m.Name] = true
				if b.isRange[m.Name] {
					b.res.resolvesRng++
				} else {
					b.res.resolvesTag++
				}
			}
		}
	}
	b.res.cpuWindow = cpuTime(b.controller.pid()) - cpuBefore
	reconcAfter, ctrlAfter, err := controllerMetrics(ctx, b.metricsAddr)
	if err != nil {
		return err
	}
	b.res.reconcWin, b.res.ctrlWindow = diff(reconcAfter, reconcBefore), diff(ctrlAfter, ctrlBefore)
	for name := range resolvedIn {
		if b.isRange[name] {
			b.res.modelsResolvedRng++
		} else {
			b.res.modelsResolvedTag++
		}
	}
	return b.alive()
}

func resolvedAt(m *v1alpha1.InferenceModel) string {
	if m.Status.Resolved == nil || m.Status.Resolved.ResolvedAt == nil {
		return ""
	}
	return m.Status.Resolved.ResolvedAt.UTC().Format(time.RFC3339)
}

func apierrorOf(ev watch.Event) string {
	if st, ok := ev.Object.(*metav1.Status); ok {
		return st.Message
	}
	return fmt.Sprintf("%v", ev.Object)
}

// itoa writes n with thousands separators.
func itoa(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
