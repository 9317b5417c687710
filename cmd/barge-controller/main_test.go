package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bargeml/barge/controllers"
	"github.com/bargeml/barge/internal/testenv"
)

// TestRun starts the controller's manager against a real API server with
// the flags a Deployment gives it, waits for /readyz, and stops it.
func TestRun(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	probe := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", probe,
			"--barge-image", "example.com/barge:1", "--peer-port", "5050", "--seeds-per-site", "2"}, &logs)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + probe + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before it was ready: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not OK after 60s: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestFlags(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "serving.yaml")
	os.WriteFile(bad, []byte("onnx:\n  port: 9000\n"), 0o644)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--serving-images", bad}, "onnx has no image"},
		{[]string{"--serving-images", filepath.Join(t.TempDir(), "missing.yaml")}, "no such file"},
		{[]string{"extra"}, `unexpected arguments ["extra"]`},
		{[]string{"--allowed-registries", "https://registry.example.com"}, `--allowed-registries: "https://registry.example.com" is not a registry: write host or host:port`},
		{[]string{"--allowed-registries", "registry.example.com/models"}, `"registry.example.com/models" is not a registry`},
		{[]string{"--registry-timeout", "0s"}, "--registry-timeout 0s: must be positive"},
		{[]string{"--deletion-grace-period", "-1m"}, "--deletion-grace-period -1m0s: must be positive"},
		{[]string{"--edge-root", "var/lib/barge"}, `--edge-root "var/lib/barge": must be an absolute path`},
		{[]string{"--local-dataset-roots", "/data,srv"}, `--local-dataset-roots: "srv": give absolute directories other than /`},
		{[]string{"--site-label", "not a label"}, `--site-label "not a label": not a label key`},
		{[]string{"--peer-port", "70000"}, "--peer-port 70000: give a port from 1 to 65535, or 0 to turn peers off"},
		{[]string{"--seeds-per-site", "0"}, "--seeds-per-site 0: must be at least 1"},
		{[]string{"--max-peers", "17"}, "--max-peers 17: must be from 1 to 16"},
		{[]string{"--kube-api-qps", "-1"}, "--kube-api-qps -1: give requests per second, or 0 for no client-side limit"},
		{[]string{"--kube-api-burst", "0"}, "--kube-api-burst 0: must be at least 1"},
		{[]string{"--metrics-refresh", "0s"}, "--metrics-refresh 0s: must be positive"},
		{[]string{"--concurrent-reconciles", "0"}, "--concurrent-reconciles 0: must be at least 1"},
	} {
		err := run(context.Background(), tt.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
	var help bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"-kubeconfig", "-metrics-bind-address", "-health-probe-bind-address", "-leader-elect", "-barge-image", "-serving-images", "-allowed-registries", "-registry-timeout", "-reconcile-timeout", "-deletion-grace-period",
		"-edge-root", `(default "/var/lib/barge")`, "-site-label", `(default "topology.kubernetes.io/zone")`, "-peer-port", "-seeds-per-site", "-max-peers", "-kube-api-qps", "(default 200)", "-kube-api-burst", "(default 400)", "-metrics-refresh", "(default 1h0m0s)", "-profiling", "-concurrent-reconciles", "(default 16)", "onnx: mcr.microsoft.com/onnxruntime/server", "triton: nvcr.io/nvidia/tritonserver", "tensorflow: tensorflow/serving", fmt.Sprintf("(default %q)", ":8080")} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, help.String())
		}
	}
}

func TestDefaultBargeImage(t *testing.T) {
	defer func(v string) { version = v }(version)
	for v, want := range map[string]string{"v0.4.0": "ghcr.io/bargeml/barge:v0.4.0", "dev": "ghcr.io/bargeml/barge:latest", "v0.4.0-3-gabc-dirty": "ghcr.io/bargeml/barge:latest"} {
		version = v
		if got := defaultBargeImage(); got != want {
			t.Errorf("version %s: %s, want %s", v, got, want)
		}
	}
}

// FuzzParseRegistries: --allowed-registries either fails or gives hosts that
// a repository can start with, and reading them back gives the same list.
// It lives here, not in controllers, whose TestMain starts a control plane
// in every fuzz worker.
func FuzzParseRegistries(f *testing.F) {
	for _, s := range []string{"", "registry.example.com", "a.example.com:5000, 10.0.0.5:5000,,", "https://x", "x/y", "[::1]:5000", "a,a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hosts, err := controllers.ParseRegistries(s)
		if err != nil {
			return
		}
		for _, h := range hosts {
			if host, _, _ := strings.Cut(h+"/models/m", "/"); h == "" || host != h {
				t.Fatalf("%q gave host %q, which a repository does not start with", s, h)
			}
		}
		again, err := controllers.ParseRegistries(strings.Join(hosts, ","))
		if err != nil || strings.Join(again, ",") != strings.Join(hosts, ",") {
			t.Fatalf("%q: %v read back as %v, %v", s, hosts, again, err)
		}
	})
}
