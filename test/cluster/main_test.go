// Package cluster runs Barge as it runs in a cluster, every part a real
// process: kube-apiserver and etcd (built from Go modules into bin/), the
// registry (barge serve), barge-controller, and one barge-edgepuller per
// edge node, with Node objects the test creates.
package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bargeml/barge/internal/testenv"
)

var (
	env        *testenv.Env
	bins       string // barge, barge-controller, barge-edgepuller, modelserver
	kubeconfig string
	registry   string // host:port of the barge serve process
	work       string
)

func TestMain(m *testing.M) {
	if os.Getenv(trainerEnv) != "" {
		// A trainer Job started this binary (see plusOneTrainer).
		if err := plusOneTrainer(); err != nil {
			fmt.Fprintln(os.Stderr, "plus-one trainer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	work, err = os.MkdirTemp("", "barge-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(work)
	bins = filepath.Join(work, "bin")
	build := exec.Command("go", "build", "-o", bins+"/", "github.com/bargeml/barge/cmd/...", "github.com/bargeml/barge/internal/testenv/modelserver",
		"github.com/bargeml/barge/examples/trainer/logreg")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	// A cloud Job's command is "barge", found on PATH as in the barge image.
	os.Setenv("PATH", bins+string(os.PathListSeparator)+os.Getenv("PATH"))
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop()
	kubeconfig = filepath.Join(work, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	for i, site := range []string{"a", "a", "b"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:   fmt.Sprintf("edge-%d", i+1),
			Labels: map[string]string{"node-role.kubernetes.io/edge": "", "site": site},
		}}
		if err := env.Client.Create(ctx, node); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	reg := startProcess(nil, "registry", filepath.Join(bins, "barge"), "serve", "--addr", "127.0.0.1:0", "--root", filepath.Join(work, "registry"))
	defer reg.stop()
	m2 := reg.waitLog(nil, regexp.MustCompile(`Serving an OCI registry on http://([^,]+),`), 30*time.Second)
	if m2 == nil {
		fmt.Fprintf(os.Stderr, "the registry did not start:\n%s", reg.logs)
		return 1
	}
	registry = m2[1]
	ctrl := startProcess(nil, "controller", filepath.Join(bins, "barge-controller"), "--kubeconfig", kubeconfig,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0")
	defer ctrl.stop()
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "controller log:\n%s", ctrl.logs.tail(80))
	}
	return code
}

// process is a running binary whose output is kept.
type process struct {
	name   string
	cmd    *exec.Cmd
	logs   *logBuffer
	exited chan struct{}
}

func startProcess(t *testing.T, name, bin string, args ...string) *process {
	p := &process{name: name, cmd: exec.Command(bin, args...), logs: &logBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		if t != nil {
			t.Fatal(err)
		}
		panic(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	if t != nil {
		t.Cleanup(func() {
			p.stop()
			if t.Failed() {
				t.Logf("%s log:\n%s", name, p.logs.tail(60))
			}
		})
	}
	return p
}

func (p *process) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *process) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *process) waitLog(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.logs.String()); m != nil {
			return m
		}
		select {
		case <-p.exited:
			if t != nil {
				t.Fatalf("%s exited:\n%s", p.name, p.logs.tail(40))
			}
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	if t != nil {
		t.Fatalf("%s: no log line matching %s within %s:\n%s", p.name, re, timeout, p.logs.tail(40))
	}
	return nil
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) tail(n int) string {
	lines := strings.Split(l.String(), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// barge runs the CLI.
func barge(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(filepath.Join(bins, "barge"), args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "BARGE_CACHE="+filepath.Join(work, "cli-cache"), "DOCKER_CONFIG="+filepath.Join(work, "docker"))
	if err := cmd.Run(); err != nil {
		t.Fatalf("barge %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// push writes files into a new directory and pushes them as a model.
func push(t *testing.T, ref string, files map[string]string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return barge(t, append(append([]string{"push"}, extra...), dir, ref)...)
}

// node is one edge node: its puller process and its root directory.
type node struct {
	name string
	root string
	p    *process
	args []string
}

func startNode(t *testing.T, name string, extra ...string) *node {
	t.Helper()
	n := &node{name: name, root: filepath.Join(t.TempDir(), name)}
	n.args = append([]string{"--kubeconfig", kubeconfig, "--node-name", name, "--root", n.root,
		"--metrics-addr", "127.0.0.1:0"}, extra...)
	n.start(t)
	return n
}

func (n *node) start(t *testing.T) {
	t.Helper()
	n.p = startProcess(t, "puller "+n.name, filepath.Join(bins, "barge-edgepuller"), n.args...)
}

// files lists what a workload on the node sees of an artifact (path →
// content), or nil when the directory does not exist.
func (n *node) files(t *testing.T, dir string) map[string]string {
	t.Helper()
	if dir == "" {
		return nil
	}
	// The path is the artifact's "current" symlink, switched atomically.
	resolved, err := filepath.EvalSymlinks(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	err = filepath.Walk(resolved, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(resolved, p)
			out[filepath.ToSlash(rel)] = string(b)
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
