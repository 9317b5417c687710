package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/internal/testenv"
	"github.com/bargeml/barge/registry"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// startController runs the barge-controller binary with args against env
// until the test ends or stop is called. A process of its own, since a
// manager's controller names are unique per process (TestRun runs one in
// this one).
func startController(t *testing.T, env *testenv.Env, args ...string) (stop func()) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "barge-controller-test-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "barge-controller")
		if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(binary, append([]string{"--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, args...)...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var once sync.Once
	stop = func() { once.Do(func() { stopController(t, cmd, done, &logs) }) }
	t.Cleanup(stop)
	return stop
}

// stopController sends SIGTERM, as the kubelet does, and waits for a clean
// exit.
func stopController(t *testing.T, cmd *exec.Cmd, done <-chan error, logs *bytes.Buffer) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("barge-controller: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Error("barge-controller did not stop on SIGTERM")
	}
	if t.Failed() {
		t.Logf("controller log:\n%s", logs.String())
	}
}

// countingProxy fronts target under another host:port and counts the
// requests that reach it.
func countingProxy(t *testing.T, target string) (string, *atomic.Int64) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &n
}

// TestAllowedRegistries: with --allowed-registries, an InferenceModel or a
// Dataset naming another registry is Stalled with a message that names the
// allowed ones, and the controller sends that registry nothing; one on an
// allowed registry resolves as before.
func TestAllowedRegistries(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	reg := registry.StartForTest(t)
	reg.PushForTest(t, "models/m", "1.0.0", map[string]string{"m.onnx": "weights"})
	// The same content under another address: only the address differs, so
	// the allow-list alone decides.
	other, requests := countingProxy(t, reg.URL())
	startController(t, env, "--allowed-registries", "registry.example.com, "+reg.Host())

	ctx := context.Background()
	ns := env.Namespace(t)
	noNode := map[string]string{"barge-test": "no-such-node"}
	objs := []client.Object{
		&v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allowed"},
			Spec: v1alpha1.InferenceModelSpec{Artifact: reg.Host() + "/models/m", TargetVersion: "1.0.0", Insecure: true, NodeSelector: noNode}},
		&v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "elsewhere"},
			Spec: v1alpha1.InferenceModelSpec{Artifact: other + "/models/m", TargetVersion: "1.0.0", Insecure: true, NodeSelector: noNode}},
		&v1alpha1.Dataset{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "elsewhere"},
			Spec: v1alpha1.DatasetSpec{Artifact: other + "/data/d", TargetVersion: "1", Insecure: true, NodeSelector: noNode}},
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	conditions := func(o client.Object) []metav1.Condition {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Fatal(err)
		}
		switch o := o.(type) {
		case *v1alpha1.InferenceModel:
			return o.Status.Conditions
		case *v1alpha1.Dataset:
			return o.Status.Conditions
		}
		return nil
	}
	want := fmt.Sprintf("registry %s is not allowed: this controller fetches only from registry.example.com, %s (--allowed-registries)", other, reg.Host())
	waitFor(t, "the allowed model Ready and the others Stalled", func() error {
		if c := apimeta.FindStatusCondition(conditions(objs[0]), v1alpha1.ReadyCondition); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("allowed model: %+v", c)
		}
		for _, o := range objs[1:] {
			c := apimeta.FindStatusCondition(conditions(o), v1alpha1.StalledCondition)
			if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "RegistryNotAllowed" || !strings.Contains(c.Message, want) {
				return fmt.Errorf("%T %s: Stalled %+v, want RegistryNotAllowed with %q", o, o.GetName(), c, want)
			}
		}
		return nil
	})
	// A change of spec makes the controller look again; still nothing.
	m := objs[1].(*v1alpha1.InferenceModel)
	m.Spec.TargetVersion = "2.0.0"
	if err := env.Client.Update(ctx, m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new generation Stalled too", func() error {
		c := apimeta.FindStatusCondition(conditions(m), v1alpha1.StalledCondition)
		if c == nil || c.ObservedGeneration != m.Generation || c.Reason != "RegistryNotAllowed" {
			return fmt.Errorf("Stalled %+v at generation %d", c, m.Generation)
		}
		return nil
	})
	if n := requests.Load(); n != 0 {
		t.Errorf("the controller sent %d requests to the registry it does not allow", n)
	}
}

func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 60s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReconcileTimeout: a registry that answers every request, each a
// little slowly, with one more page of tags, never times out a request; the
// pass's own deadline ends it, and the status still says why.
func TestReconcileTimeout(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	var pages atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/tags/list") {
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			http.NotFound(w, r)
			return
		}
		n := pages.Add(1)
		time.Sleep(500 * time.Millisecond)
		w.Header().Set("Link", fmt.Sprintf(`<%s?n=1&last=t%d>; rel="next"`, r.URL.Path, n))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"name":"models/m","tags":["junk-%d"]}`, n)
	}))
	defer slow.Close()
	startController(t, env, "--registry-timeout", "2s", "--reconcile-timeout", "3s")

	ctx := context.Background()
	ns := env.Namespace(t)
	m := &v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m"},
		Spec: v1alpha1.InferenceModelSpec{Artifact: strings.TrimPrefix(slow.URL, "http://") + "/models/m", TargetVersion: ">=1.0", Insecure: true}}
	start := time.Now()
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pass cut by its deadline", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return err
		}
		c := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ReadyCondition)
		if c == nil || c.Reason != "RegistryTimeout" || !strings.Contains(c.Message, "did not answer in time (the tag list of") {
			return fmt.Errorf("Ready %+v", c)
		}
		return nil
	})
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("reported after %s; the pass has 3s", took)
	}
	if n := pages.Load(); n >= 100 {
		t.Errorf("%d pages read: the page limit, not the deadline, ended the pass", n)
	}
}

// TestAllowListOnRestart: a model resolved before the allow-list existed is
// Stalled on the first pass of a controller started with one, not only when
// its interval comes round.
func TestAllowListOnRestart(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	reg := registry.StartForTest(t)
	reg.PushForTest(t, "models/m", "1.0.0", map[string]string{"m.onnx": "weights"})
	ctx := context.Background()
	ns := env.Namespace(t)
	m := &v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m"},
		Spec: v1alpha1.InferenceModelSpec{Artifact: reg.Host() + "/models/m", TargetVersion: "1.0.0", Insecure: true,
			NodeSelector: map[string]string{"barge-test": "no-such-node"}, Interval: &metav1.Duration{Duration: time.Hour}}}
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	stop := startController(t, env)
	waitFor(t, "Ready without an allow-list", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return err
		}
		if !apimeta.IsStatusConditionTrue(m.Status.Conditions, v1alpha1.ReadyCondition) {
			return fmt.Errorf("conditions %+v", m.Status.Conditions)
		}
		return nil
	})
	stop()
	startController(t, env, "--allowed-registries", "registry.example.com")
	waitFor(t, "Stalled on the first pass with the allow-list", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return err
		}
		c := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.StalledCondition)
		if c == nil || c.Reason != "RegistryNotAllowed" {
			return fmt.Errorf("Stalled %+v", c)
		}
		return nil
	})
}
