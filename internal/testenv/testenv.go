package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	bargev1alpha1 "github.com/bargeml/barge/api/v1alpha1"
)

// Env is a running control plane with Barge's CRDs installed.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// KubeConfig is Config as a kubeconfig file's contents, for processes
	// such as barge-controller that a test starts.
	KubeConfig []byte
	// Scheme knows the built-in kinds, CRDs and Barge's kinds.
	Scheme *runtime.Scheme
	// Client is an uncached client for Scheme's kinds.
	Client client.Client

	env *envtest.Environment
}

// Start starts etcd and kube-apiserver from bin/ (or from $KUBEBUILDER_ASSETS)
// and installs the CRDs in charts/barge/crds. It takes a few seconds; start it
// once per package, in TestMain, and Stop it after m.Run.
//
// Controller-runtime logs errors to stderr; set BARGE_TEST_LOG=1 for every
// log line, and KUBEBUILDER_ATTACH_CONTROL_PLANE_OUTPUT=true for the control
// plane's own output.
func Start() (*Env, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, fmt.Errorf("envtest: %w", err)
	}
	bin := filepath.Join(root, "bin")
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if err := checkBinaries(bin); err != nil {
			return nil, err
		}
	}
	setLogger()

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, bargev1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("envtest: build scheme: %w", err)
		}
	}
	env := &envtest.Environment{
		Scheme:                scheme,
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     []string{filepath.Join(root, "charts", "barge", "crds")},
		ErrorIfCRDPathMissing: true,
		// Two shared cores start kube-apiserver in 5-15 s; envtest's 20 s
		// default fails under load.
		ControlPlaneStartTimeout: startTimeout(),
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("envtest: start kube-apiserver and etcd from %s: %w", bin, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("envtest: client: %w", err)
	}
	return &Env{Config: cfg, KubeConfig: env.KubeConfig, Scheme: scheme, Client: c, env: env}, nil
}

// Stop stops kube-apiserver and etcd and removes their data.
func (e *Env) Stop() error {
	if err := e.env.Stop(); err != nil {
		return fmt.Errorf("envtest: stop: %w", err)
	}
	return nil
}

// Run is a whole TestMain: it starts the control plane, stores it in *env,
// runs the tests and stops it.
//
//	var env *testenv.Env
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }
func Run(m *testing.M, env **Env) int {
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Namespace creates a namespace for one test and returns its name. Nothing
// deletes namespaces' contents in envtest (there is no namespace controller),
// so a fresh namespace per test is what keeps tests apart.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{}
	ns.GenerateName = strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(ns.GenerateName) > 40 {
		ns.GenerateName = ns.GenerateName[:40]
	}
	ns.GenerateName = strings.Trim(ns.GenerateName, "-") + "-"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Client.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace for %s: %v", t.Name(), err)
	}
	return ns.Name
}

// checkBinaries says what to do when the control plane was not built, rather
// than letting envtest fail on a missing file in /usr/local/kubebuilder.
func checkBinaries(bin string) error {
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return fmt.Errorf("envtest: %s is missing: run `make tools` to build the control plane into %s "+
				"(10-15 minutes on 2 cores the first time), or set KUBEBUILDER_ASSETS to a directory holding kube-apiserver and etcd",
				filepath.Join(bin, name), bin)
		}
	}
	return nil
}

// moduleRoot is the directory of Barge's go.mod, found upwards from the
// working directory, which `go test` sets to the package's directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module github.com/bargeml/barge\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("no go.mod of github.com/bargeml/barge above " + dir)
		}
	}
}

func startTimeout() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT")); err == nil {
		return d
	}
	return 2 * time.Minute
}

// setLogger gives controller-runtime a logger before it complains about
// having none; only the first call of logf.SetLogger in a process counts.
func setLogger() {
	opts := []zap.Opts{zap.WriteTo(os.Stderr), zap.UseDevMode(true)}
	if os.Getenv("BARGE_TEST_LOG") == "" {
		opts = append(opts, zap.Level(zapcore.ErrorLevel))
	}
	logf.SetLogger(zap.New(opts...))
}
