// Package chart renders charts/barge with the real helm binary (bin/helm, built
// by `make tools`) and checks what an operator gets: the objects, their security
// contexts, least-privilege RBAC, and what each value turns on or off.
package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/yaml"

	"github.com/bargeml/barge/internal/testenv"
)

const (
	release   = "rel"
	namespace = "barge-system"
)

var (
	chartDir string
	// kubeVersion is what helm renders for: the control plane's version.
	kubeVersion string
	// env is a real kube-apiserver with Barge's CRDs, to which tests apply
	// what the chart renders.
	env *testenv.Env
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	chartDir = filepath.Join(filepath.Dir(file), "..", "..", "charts", "barge")
	var err error
	if kubeVersion, err = testenv.KubeVersion(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := helm("version"); err != nil {
		fmt.Fprintf(os.Stderr, "the chart tests need the helm binary: %v\n", err)
		os.Exit(1)
	}
	os.Exit(testenv.Run(m, &env))
}

// helm runs bin/helm (testenv.Helm) and returns its stdout, or stdout and
// stderr in the error.
func helm(args ...string) (string, error) { return testenv.Helm(args...) }

// object is one rendered document: parsed loosely for lookups, and kept raw
// for strict decoding into its typed struct.
type object struct {
	*unstructured.Unstructured
	raw []byte
}

type objects []object

// render runs helm template on the chart with the given extra arguments
// (--set, --api-versions, --include-crds) and parses every document.
func render(t *testing.T, args ...string) objects {
	t.Helper()
	out, err := renderErr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func renderErr(args ...string) (objects, error) {
	base := []string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}
	out, err := helm(append(base, args...)...)
	if err != nil {
		return nil, err
	}
	var objs objects
	for _, doc := range strings.Split(out, "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, fmt.Errorf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if len(m) == 0 {
			continue // a document of comments only
		}
		objs = append(objs, object{&unstructured.Unstructured{Object: m}, []byte(doc)})
	}
	return objs, nil
}

// find returns the objects of a kind, and of a component when component is not empty.
func (objs objects) find(kind, component string) objects {
	var out objects
	for _, o := range objs {
		if o.GetKind() == kind && (component == "" || o.GetLabels()["app.kubernetes.io/component"] == component) {
			out = append(out, o)
		}
	}
	return out
}

// one returns the single object of a kind and component, or fails.
func (objs objects) one(t *testing.T, kind, component string) object {
	t.Helper()
	found := objs.find(kind, component)
	if len(found) != 1 {
		t.Fatalf("want one %s of component %q, got %d", kind, component, len(found))
	}
	return found[0]
}

// strict decodes YAML into the typed API structs, case-sensitively and
// rejecting unknown and duplicate fields, as the API server's field validation
// does: a misspelled field in a template (readOnlyRootFileSystem) fails the test
// instead of being dropped.
var strict = func() *kjson.Serializer {
	s := kruntime.NewScheme()
	for _, add := range []func(*kruntime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s, kjson.SerializerOptions{Yaml: true, Strict: true})
}()

// decode decodes an object strictly into its typed struct.
func decode[T any, PT interface {
	*T
	kruntime.Object
}](t *testing.T, o object) *T {
	t.Helper()
	v := PT(new(T))
	got, _, err := strict.Decode(o.raw, nil, v)
	if err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	if got != kruntime.Object(v) {
		t.Fatalf("%s %s decoded as %T, not %T", o.GetKind(), o.GetName(), got, v)
	}
	return v
}
