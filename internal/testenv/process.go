package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ProcessConfig is how the process mode of the Kubelet stand-in maps a
// pod onto this machine.
//
// A process cannot see a mount namespace, so the stand-in maps each of the
// container's volume mounts to a directory of this machine and rewrites the
// paths the process is told: an env value, command or args element that
// begins with a mount path (the path itself, or the path and "/…") is
// rewritten to the mapped directory before $(VAR) expansion, so
// "$(BARGE_MODEL_DIR)/model.onnx" expands to the mapped file too. A path
// the process knows of itself (a default compiled into it, or
// "--model=/models/x" where the mount path is not at the start) is not
// rewritten: pass it as its own argument or through the environment.
//
//   - hostPath: the same path under NodeRoot(node), for a path under
//     EdgeRoot (the controller's --edge-root); any other host path under
//     HostRoot(node), when HostRoot is set, else it is refused. A pod of no
//     node (a cloud Job's) has CloudRoot for NodeRoot. Type Directory holds
//     the pod in ContainerCreating until the directory exists, as a kubelet
//     does; DirectoryOrCreate creates it.
//   - configMap, secret and downwardAPI: files written from the API objects into
//     a directory of the pod when its container starts (not updated while
//     it runs, as a kubelet would within a minute).
//   - emptyDir: an empty directory of the pod.
//
// Read-only mounts are not enforced. Each pod's process gets a free port of
// 127.0.0.1 in the environment variable PORT (which overrides the pod's own
// PORT, and which $(PORT) in args expands to): the container port is not
// mapped, so a server run this way must listen on $PORT. The pod's
// readiness probe (tcpSocket or httpGet) runs against that port; a pod with
// none is Ready once its process started.
type ProcessConfig struct {
	// EdgeRoot is the controller's --edge-root: the prefix of the hostPath
	// volumes the stand-in maps.
	EdgeRoot string
	// NodeRoot is the directory that holds node's EdgeRoot on this machine:
	// its puller's --root.
	NodeRoot func(node string) string
	// HostRoot, if set, is the directory that stands in for the root of
	// node's file system, for host paths outside EdgeRoot (a
	// TrainingModel's spec.localDataset); if nil, those are refused.
	HostRoot func(node string) string
	// CloudRoot stands in for NodeRoot for pods of no node (cloud Jobs);
	// if empty, a directory of the test.
	CloudRoot string
	// Backoff is the delay before the second restart of a process that
	// exited, doubling with each further exit up to 8 times it (a kubelet:
	// 10 s up to 5 min); the first restart is at once. If <= 0, 500 ms.
	Backoff time.Duration
}

// Process-mode timings.
const (
	// probePeriod is how often a readiness probe runs (a kubelet's
	// default periodSeconds is 10).
	probePeriod = 100 * time.Millisecond
	// probeFailures is the failureThreshold: a Ready process is not Ready
	// after this many failed probes in a row.
	probeFailures = 3
	// maxGrace bounds the grace period between SIGTERM and SIGKILL, which
	// a pod gives as terminationGracePeriodSeconds (30 s by default).
	maxGrace = 5 * time.Second
	// logTail is how much of each pod's output is kept.
	logTail = 32 << 10
)

// StartProcessKubelet runs the stand-in of StartKubelet in process mode
// until the test ends: each pod it keeps runs its single container as a
// local process (see ProcessConfig for the mapping), and each Job of its
// nodes, or of no node, runs as processes (jobs.go). State hooks
// (SetState) are not asked: a pod's status is what its process does. c
// must be an uncached cluster-admin client.
//
// What it does as a kubelet would: ContainerCreating while a hostPath of
// type Directory or a ConfigMap volume is missing;
// CreateContainerConfigError while an env var's ConfigMap or key is
// missing; Ready as the readiness probe says; a process that exits is
// restarted (restartPolicy Always) with back-off, the container waiting in
// CrashLoopBackOff with restartCount and the last exit code, not Ready; a
// pod being deleted gets SIGTERM, then SIGKILL after its grace period (at
// most 5 s), and is removed once its process is gone. The pod's IP is
// 127.0.0.1.
func StartProcessKubelet(t TB, c client.Client, namespace string, cfg ProcessConfig, nodes ...string) *Kubelet {
	t.Helper()
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	dir := t.TempDir()
	if cfg.CloudRoot == "" {
		cfg.CloudRoot = filepath.Join(dir, "cloud")
	}
	k := newKubelet(c, namespace, nodes)
	k.procs = &processes{cfg: cfg, c: c, dir: dir, byUID: map[types.UID]*podProcess{}, jobs: map[types.UID]*jobRun{}}
	k.start(t)
	t.Cleanup(func() {
		if t.Failed() {
			k.procs.logTails(t)
			k.procs.jobLogTails(t.Logf)
		}
	})
	return k
}

// Addr is host:port of the process of daemonSet's live pod on node, or ""
// while there is none (in object mode, always). The process may not be
// listening yet.
func (k *Kubelet) Addr(daemonSet, node string) string {
	if k.procs == nil {
		return ""
	}
	if p := k.procs.live(daemonSet, node); p != nil {
		return p.addr()
	}
	return ""
}

// processes are the running pods of a process-mode stand-in, by pod UID.
type processes struct {
	cfg ProcessConfig
	c   client.Client
	dir string

	mu    sync.Mutex
	byUID map[types.UID]*podProcess
	jobs  map[types.UID]*jobRun
}

// status runs p's process, if it does not run yet, and is the status a
// kubelet would report of it now.
func (ps *processes) status(p *corev1.Pod) corev1.PodStatus {
	ps.mu.Lock()
	pp := ps.byUID[p.UID]
	if pp == nil {
		pp = ps.start(p)
		ps.byUID[p.UID] = pp
	}
	ps.mu.Unlock()
	return pp.status()
}

// stopped begins to stop the process of a pod being deleted and says
// whether it is gone, so that the pod can be removed.
func (ps *processes) stopped(p *corev1.Pod) bool {
	ps.mu.Lock()
	pp := ps.byUID[p.UID]
	ps.mu.Unlock()
	if pp == nil {
		return true
	}
	pp.terminate()
	select {
	case <-pp.done:
		ps.forget(p.UID)
		return true
	default:
		return false
	}
}

// sweep stops the processes of pods that are gone from the API server
// without a graceful deletion (grace period 0, or their namespace).
func (ps *processes) sweep(pods []corev1.Pod) {
	present := map[types.UID]bool{}
	for i := range pods {
		present[pods[i].UID] = true
	}
	ps.mu.Lock()
	var gone []*podProcess
	for uid, pp := range ps.byUID {
		if !present[uid] {
			gone = append(gone, pp)
			delete(ps.byUID, uid)
		}
	}
	ps.mu.Unlock()
	for _, pp := range gone {
		pp.terminate()
	}
}

func (ps *processes) forget(uid types.UID) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	delete(ps.byUID, uid)
}

// stopAll stops every process and waits for them: the test is over.
func (ps *processes) stopAll() {
	ps.stopJobs()
	ps.mu.Lock()
	all := slices.Collect(maps.Values(ps.byUID))
	ps.mu.Unlock()
	for _, pp := range all {
		pp.terminate()
	}
	for _, pp := range all {
		<-pp.done
	}
}

// live is the process of daemonSet's pod on node that is not being
// deleted.
func (ps *processes) live(daemonSet, node string) *podProcess {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, pp := range ps.byUID {
		if pp.pod.Spec.NodeName == node && pp.owner == daemonSet && !pp.terminating() {
			return pp
		}
	}
	return nil
}

// logTails logs the end of every pod's output, for a failed test.
func (ps *processes) logTails(t TB) {
	ps.mu.Lock()
	all := slices.Collect(maps.Values(ps.byUID))
	ps.mu.Unlock()
	slices.SortFunc(all, func(a, b *podProcess) int { return strings.Compare(a.pod.Name, b.pod.Name) })
	for _, pp := range all {
		t.Logf("pod %s on %s (stand-in process):\n%s", pp.pod.Name, pp.pod.Spec.NodeName, pp.logs.String())
	}
}

// start begins to run the pod p: it prepares and starts its process in
// the background.
func (ps *processes) start(p *corev1.Pod) *podProcess {
	ctx, cancel := context.WithCancel(context.Background())
	pp := &podProcess{
		pod: p.DeepCopy(), cfg: ps.cfg, c: ps.c,
		dir:    filepath.Join(ps.dir, p.Name+"-"+string(p.UID)[:8]),
		logs:   &tailBuffer{max: logTail},
		cancel: cancel, done: make(chan struct{}),
		state: containerState{waiting: string(PodStarting)},
	}
	if ref := metav1.GetControllerOf(p); ref != nil {
		pp.owner = ref.Name
	}
	pp.port, pp.startErr = freePort()
	go pp.supervise(ctx)
	return pp
}

// freePort is a port of 127.0.0.1 that nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// podProcess is one pod's container, run as a process and restarted when
// it exits, until the pod is deleted.
type podProcess struct {
	pod   *corev1.Pod // as created: a kubelet runs the spec of that moment
	owner string      // the pod's DaemonSet
	cfg   ProcessConfig
	c     client.Client
	dir   string
	port  int
	// startErr is why the process cannot start at all.
	startErr error
	logs     *tailBuffer

	cancel context.CancelFunc
	done   chan struct{} // closed once the process is gone for good

	mu      sync.Mutex
	state   containerState
	stopped bool
}

// containerState is what a kubelet knows of the container.
type containerState struct {
	// waiting is the reason the container does not run; "" while it
	// runs.
	waiting, message string
	started          time.Time // of the running process
	ever             bool      // a process has started once
	ready            bool
	readySince       time.Time
	restarts         int32
	last             *corev1.ContainerStateTerminated
}

func (pp *podProcess) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(pp.port)) }

func (pp *podProcess) terminate() {
	pp.mu.Lock()
	pp.stopped = true
	pp.mu.Unlock()
	pp.cancel()
}

func (pp *podProcess) terminating() bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.stopped
}

func (pp *podProcess) update(f func(*containerState)) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	f(&pp.state)
}

// supervise is the kubelet's loop for one container: prepare, start, wait,
// back off, start again; until ctx ends.
func (pp *podProcess) supervise(ctx context.Context) {
	defer close(pp.done)
	for {
		l, err := pp.launchWhenReady(ctx)
		if err != nil {
			return // ctx ended
		}
		exit := pp.run(ctx, l)
		if ctx.Err() != nil {
			return
		}
		var delay time.Duration
		var restarts int32
		pp.update(func(s *containerState) {
			s.restarts++
			s.last = exit
			s.ready = false
			if s.restarts > 1 {
				delay = min(pp.cfg.Backoff<<min(s.restarts-2, 3), 8*pp.cfg.Backoff)
				s.waiting = string(PodCrashLoop)
				s.message = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
					delay, pp.container().Name, pp.pod.Name, pp.pod.Namespace, pp.pod.UID)
			}
			restarts = s.restarts
		})
		fmt.Fprintf(pp.logs, "--- exited: %s (exit code %d); restart %d in %s\n", exit.Reason, exit.ExitCode, restarts, delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// launchWhenReady prepares the container until it can start, reporting why
// it waits meanwhile.
func (pp *podProcess) launchWhenReady(ctx context.Context) (*launch, error) {
	for {
		l, err := pp.prepare(ctx)
		if err == nil {
			return l, nil
		}
		var w *waitError
		if !errors.As(err, &w) {
			w = &waitError{reason: "CreateContainerError", message: err.Error()}
		}
		pp.update(func(s *containerState) { s.waiting, s.message = w.reason, w.message })
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(kubeletTick):
		}
	}
}

// waitError is why a container cannot start yet, as the waiting reason a
// kubelet reports.
type waitError struct{ reason, message string }

func (e *waitError) Error() string { return e.reason + ": " + e.message }

func creating(format string, a ...any) error {
	return &waitError{reason: string(PodStarting), message: fmt.Sprintf(format, a...)}
}

func configError(format string, a ...any) error {
	return &waitError{reason: "CreateContainerConfigError", message: fmt.Sprintf(format, a...)}
}

// launch is a container ready to start: its process's command line and
// environment, with the mounts mapped.
type launch struct {
	argv []string
	env  []string
}

func (pp *podProcess) container() *corev1.Container { return &pp.pod.Spec.Containers[0] }

// prepare maps the volumes and resolves the environment, as a kubelet sets
// up a pod and creates its container.
func (pp *podProcess) prepare(ctx context.Context) (*launch, error) {
	if pp.startErr != nil {
		return nil, pp.startErr
	}
	if n := len(pp.pod.Spec.Containers); n != 1 || len(pp.pod.Spec.InitContainers) > 0 {
		return nil, fmt.Errorf("the process stand-in runs pods of one container and no init containers; pod %s has %d and %d",
			pp.pod.Name, n, len(pp.pod.Spec.InitContainers))
	}
	ctr := pp.container()
	if len(ctr.Command) == 0 {
		return nil, fmt.Errorf("container %s has no command: the process stand-in runs command and args as a process, with no image to take an entrypoint from", ctr.Name)
	}
	mounts, err := pp.mountAll(ctx)
	if err != nil {
		return nil, err
	}
	env, err := pp.environment(ctx, mounts)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	var argv []string
	for _, a := range slices.Concat(ctr.Command, ctr.Args) {
		argv = append(argv, expand(mounts.rewrite(a), vars))
	}
	return &launch{argv: argv, env: env}, nil
}

// mount is a container path and the directory of this machine that
// stands in for it.
type mount struct{ path, dir string }

type mountTable []mount

// rewrite maps a value that begins with a mount path to the mapped
// directory; the longest mount path wins.
func (mt mountTable) rewrite(v string) string {
	for _, m := range mt {
		if v == m.path || strings.HasPrefix(v, m.path+"/") {
			return m.dir + v[len(m.path):]
		}
	}
	return v
}

// mountAll maps each of the container's volume mounts to a directory.
func (pp *podProcess) mountAll(ctx context.Context) (mountTable, error) {
	var mt mountTable
	for _, vm := range pp.container().VolumeMounts {
		i := slices.IndexFunc(pp.pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 {
			return nil, fmt.Errorf("volume mount %s names no volume of the pod", vm.Name)
		}
		dir, err := pp.volume(ctx, &pp.pod.Spec.Volumes[i])
		if err != nil {
			return nil, err
		}
		if vm.SubPath != "" {
			dir = filepath.Join(dir, filepath.FromSlash(vm.SubPath))
		}
		mt = append(mt, mount{path: strings.TrimSuffix(vm.MountPath, "/"), dir: dir})
	}
	slices.SortFunc(mt, func(a, b mount) int { return len(b.path) - len(a.path) })
	return mt, nil
}

// volume is the directory that stands in for v.
func (pp *podProcess) volume(ctx context.Context, v *corev1.Volume) (string, error) {
	dir := filepath.Join(pp.dir, "volumes", v.Name)
	switch {
	case v.HostPath != nil:
		return pp.hostPath(v)
	case v.ConfigMap != nil:
		var cm corev1.ConfigMap
		err := pp.c.Get(ctx, client.ObjectKey{Namespace: pp.pod.Namespace, Name: v.ConfigMap.Name}, &cm)
		switch {
		case client.IgnoreNotFound(err) != nil:
			return "", creating("MountVolume.SetUp failed for volume %q: %v", v.Name, err)
		case err != nil && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional):
			return "", creating("MountVolume.SetUp failed for volume %q: configmap %q not found", v.Name, v.ConfigMap.Name)
		}
		files := map[string]string{}
		for k, val := range cm.Data {
			files[k] = val
		}
		if len(v.ConfigMap.Items) > 0 {
			files = map[string]string{}
			for _, it := range v.ConfigMap.Items {
				val, ok := cm.Data[it.Key]
				if !ok {
					return "", creating("MountVolume.SetUp failed for volume %q: configmap %q has no key %q", v.Name, cm.Name, it.Key)
				}
				files[it.Path] = val
			}
		}
		return dir, writeFiles(dir, files)
	case v.Secret != nil:
		var secret corev1.Secret
		err := pp.c.Get(ctx, client.ObjectKey{Namespace: pp.pod.Namespace, Name: v.Secret.SecretName}, &secret)
		switch {
		case client.IgnoreNotFound(err) != nil:
			return "", creating("MountVolume.SetUp failed for volume %q: %v", v.Name, err)
		case err != nil && (v.Secret.Optional == nil || !*v.Secret.Optional):
			return "", creating("MountVolume.SetUp failed for volume %q: secret %q not found", v.Name, v.Secret.SecretName)
		}
		files := map[string]string{}
		for k, val := range secret.Data {
			files[k] = string(val)
		}
		if len(v.Secret.Items) > 0 {
			files = map[string]string{}
			for _, it := range v.Secret.Items {
				val, ok := secret.Data[it.Key]
				if !ok {
					return "", creating("MountVolume.SetUp failed for volume %q: secret %q has no key %q", v.Name, secret.Name, it.Key)
				}
				files[it.Path] = string(val)
			}
		}
		return dir, writeFiles(dir, files)
	case v.DownwardAPI != nil:
		files := map[string]string{}
		for _, it := range v.DownwardAPI.Items {
			if it.FieldRef == nil {
				return "", configError("downwardAPI volume %s: item %s: the process stand-in resolves fieldRef only", v.Name, it.Path)
			}
			val, err := fieldValue(pp.pod, it.FieldRef.FieldPath)
			if err != nil {
				return "", configError("downwardAPI volume %s: %v", v.Name, err)
			}
			files[it.Path] = val
		}
		return dir, writeFiles(dir, files)
	case v.EmptyDir != nil:
		return dir, os.MkdirAll(dir, 0o755)
	}
	return "", configError("volume %s: the process stand-in maps hostPath, configMap, secret, downwardAPI and emptyDir volumes only", v.Name)
}

// hostPath maps a hostPath volume under EdgeRoot to the node's root.
func (pp *podProcess) hostPath(v *corev1.Volume) (string, error) {
	hp := v.HostPath
	root := strings.TrimSuffix(pp.cfg.EdgeRoot, "/")
	p := filepath.Clean(hp.Path)
	node := pp.pod.Spec.NodeName
	var dir string
	switch {
	case root != "" && (p == root || strings.HasPrefix(p, root+"/")):
		nodeRoot := pp.cfg.CloudRoot
		if node != "" {
			nodeRoot = pp.cfg.NodeRoot(node)
		}
		dir = filepath.Join(nodeRoot, filepath.FromSlash(strings.TrimPrefix(p, root)))
	case pp.cfg.HostRoot != nil && node != "":
		dir = filepath.Join(pp.cfg.HostRoot(node), filepath.FromSlash(p))
	default:
		return "", configError("volume %s: hostPath %s is outside the edge root %s, the only host directory the process stand-in maps", v.Name, hp.Path, root)
	}
	typ := corev1.HostPathUnset
	if hp.Type != nil {
		typ = *hp.Type
	}
	switch typ {
	case corev1.HostPathDirectoryOrCreate:
		return dir, os.MkdirAll(dir, 0o755)
	case corev1.HostPathDirectory:
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return "", creating("MountVolume.SetUp failed for volume %q: hostPath type check failed: %s is not a directory", v.Name, hp.Path)
		}
	case corev1.HostPathFile:
		if fi, err := os.Stat(dir); err != nil || !fi.Mode().IsRegular() {
			return "", creating("MountVolume.SetUp failed for volume %q: hostPath type check failed: %s is not a file", v.Name, hp.Path)
		}
	}
	return dir, nil
}

// writeFiles makes dir hold exactly files (relative path → content).
func writeFiles(dir string, files map[string]string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
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
	return nil
}

// environment is the process's environment: PATH and HOME of its own (a
// container has its image's), HOSTNAME, the container's env in order with
// $(VAR) expanded over the variables before it, and PORT.
func (pp *podProcess) environment(ctx context.Context, mounts mountTable) ([]string, error) {
	var env []string
	vars := map[string]string{}
	set := func(k, v string) {
		if _, ok := vars[k]; ok {
			env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, k+"=") })
		}
		vars[k] = v
		env = append(env, k+"="+v)
	}
	set("PATH", os.Getenv("PATH"))
	set("HOME", pp.dir)
	set("HOSTNAME", pp.pod.Name)
	for _, e := range pp.container().Env {
		v, err := pp.envValue(ctx, e)
		if err != nil {
			return nil, err
		}
		if e.ValueFrom == nil {
			v = expand(mounts.rewrite(v), vars)
		}
		set(e.Name, v)
	}
	set("PORT", strconv.Itoa(pp.port))
	return env, nil
}

// envValue is the value of e before expansion.
func (pp *podProcess) envValue(ctx context.Context, e corev1.EnvVar) (string, error) {
	src := e.ValueFrom
	switch {
	case src == nil:
		return e.Value, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		var cm corev1.ConfigMap
		err := pp.c.Get(ctx, client.ObjectKey{Namespace: pp.pod.Namespace, Name: ref.Name}, &cm)
		switch {
		case client.IgnoreNotFound(err) != nil:
			return "", configError("env %s: %v", e.Name, err)
		case err != nil && optional:
			return "", nil
		case err != nil:
			return "", configError("configmap %q not found", ref.Name)
		}
		v, ok := cm.Data[ref.Key]
		if !ok && !optional {
			return "", configError("couldn't find key %s in ConfigMap %s/%s", ref.Key, cm.Namespace, cm.Name)
		}
		return v, nil
	case src.FieldRef != nil:
		v, err := fieldValue(pp.pod, src.FieldRef.FieldPath)
		if err != nil {
			return "", configError("env %s: %v", e.Name, err)
		}
		return v, nil
	}
	return "", configError("env %s: the process stand-in resolves value, configMapKeyRef and fieldRef only", e.Name)
}

// fieldValue is what the downward API gives for a field path of p.
func fieldValue(p *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return p.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.podIP", "status.hostIP", "status.podIPs", "status.hostIPs":
		return "127.0.0.1", nil
	case "metadata.labels":
		return formatMap(p.Labels), nil
	case "metadata.annotations":
		return formatMap(p.Annotations), nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels['": p.Labels, "metadata.annotations['": p.Annotations} {
		if key, ok := strings.CutPrefix(path, prefix); ok && strings.HasSuffix(key, "']") {
			return m[strings.TrimSuffix(key, "']")], nil
		}
	}
	return "", fmt.Errorf("the process stand-in does not resolve fieldPath %q", path)
}

// formatMap is the downward API's form of labels or annotations: one
// key="value" per line, sorted.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s=%s\n", k, strconv.Quote(m[k]))
	}
	return b.String()
}

// expand is Kubernetes' $(VAR) expansion: $(VAR) of a defined variable is
// its value, an undefined one stays as it is, and $$ is a literal $.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := vars[name]; ok {
					b.WriteString(v)
				} else {
					b.WriteString(s[i : i+3+end])
				}
				i += 2 + end
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// run starts the process, probes it while it runs, and returns how it
// ended; when ctx ends it stops the process with SIGTERM, then SIGKILL.
func (pp *podProcess) run(ctx context.Context, l *launch) *corev1.ContainerStateTerminated {
	cmd := exec.Command(l.argv[0], l.argv[1:]...)
	cmd.Env, cmd.Dir = l.env, pp.dir
	cmd.Stdout, cmd.Stderr = pp.logs, pp.logs
	setProcessGroup(cmd)
	if err := os.MkdirAll(pp.dir, 0o755); err != nil {
		return pp.startFailed(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return pp.startFailed(err)
	}
	pp.update(func(s *containerState) {
		s.waiting, s.message, s.started, s.ever, s.ready = "", "", start, true, false
	})
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	probeCtx, stopProbe := context.WithCancel(ctx)
	probed := make(chan struct{})
	go func() { pp.probe(probeCtx); close(probed) }()
	// A probe that passed just before the process ended must not make the
	// next one Ready.
	endProbe := func() {
		stopProbe()
		<-probed
		pp.update(func(s *containerState) { s.ready = false })
	}
	select {
	case <-exited:
		endProbe()
	case <-ctx.Done():
		endProbe()
		signalGroup(cmd, false)
		select {
		case <-exited:
		case <-time.After(pp.grace()):
			signalGroup(cmd, true)
			<-exited
		}
	}
	code := cmd.ProcessState.ExitCode()
	t := &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: "Error",
		StartedAt: metav1.NewTime(start), FinishedAt: metav1.Now()}
	if code == 0 {
		t.Reason = "Completed"
	}
	if code < 0 {
		// Killed by a signal: a container runtime reports 128+signal.
		t.ExitCode = 137
	}
	return t
}

// startFailed is an exec that failed, as a runtime reports it.
func (pp *podProcess) startFailed(err error) *corev1.ContainerStateTerminated {
	fmt.Fprintf(pp.logs, "--- start: %v\n", err)
	now := metav1.Now()
	return &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now}
}

// grace is the pod's termination grace period, at most maxGrace.
func (pp *podProcess) grace() time.Duration {
	g := maxGrace
	if s := pp.pod.Spec.TerminationGracePeriodSeconds; s != nil {
		g = min(g, time.Duration(*s)*time.Second)
	}
	return g
}

// probe runs the container's readiness probe against its port until ctx
// ends; without a probe the container is Ready once it runs.
func (pp *podProcess) probe(ctx context.Context) {
	rp := pp.container().ReadinessProbe
	failures := 0
	for {
		ok := rp == nil || pp.probeOnce(ctx, rp)
		pp.update(func(s *containerState) {
			switch {
			case ok && !s.ready:
				s.ready, s.readySince = true, time.Now()
			case !ok && s.ready && failures+1 >= probeFailures:
				s.ready, s.readySince = false, time.Now()
			}
		})
		if ok {
			failures = 0
		} else {
			failures++
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(probePeriod):
		}
	}
}

// probeOnce is one readiness probe: tcpSocket or httpGet on the pod's
// port, whichever port the probe names. An exec or gRPC probe passes.
func (pp *podProcess) probeOnce(ctx context.Context, rp *corev1.Probe) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	switch {
	case rp.TCPSocket != nil:
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", pp.addr())
		if err != nil {
			return false
		}
		conn.Close()
		return true
	case rp.HTTPGet != nil:
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pp.addr()+rp.HTTPGet.Path, nil)
		if err != nil {
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	}
	return true
}

// status is the pod's status as a kubelet reports it.
func (pp *podProcess) status() corev1.PodStatus {
	pp.mu.Lock()
	s := pp.state
	pp.mu.Unlock()
	created := pp.pod.CreationTimestamp
	st := corev1.PodStatus{Phase: corev1.PodPending, StartTime: &created, PodIP: "127.0.0.1", HostIP: "127.0.0.1"}
	if s.ever {
		st.Phase = corev1.PodRunning
	}
	ctr := pp.container()
	cs := corev1.ContainerStatus{Name: ctr.Name, Image: ctr.Image, Ready: s.waiting == "" && s.ready, RestartCount: s.restarts}
	if s.last != nil {
		cs.LastTerminationState.Terminated = s.last
	}
	started := s.waiting == ""
	cs.Started = &started
	if s.waiting != "" {
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: s.waiting, Message: s.message}
	} else {
		// The API server keeps seconds: a finer time would differ from it
		// on every look.
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(s.started.Truncate(time.Second))}
	}
	ready := corev1.ConditionFalse
	if cs.Ready {
		ready = corev1.ConditionTrue
	}
	since := metav1.NewTime(s.readySince)
	st.Conditions = []corev1.PodCondition{
		{Type: corev1.PodReady, Status: ready, LastTransitionTime: since},
		{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: since},
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: created},
	}
	st.ContainerStatuses = []corev1.ContainerStatus{cs}
	return st
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = bytes.Clone(b.buf[over:])
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
