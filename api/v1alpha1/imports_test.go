package v1alpha1_test

import (
	"go/build"
	"strings"
	"testing"
)

// TestImports keeps the API package light: every Barge binary and every
// client of the API imports it, so it must not pull in controllers, the edge
// puller, registries or Kubernetes clients.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	allowed := []string{"k8s.io/apimachinery/", "sigs.k8s.io/controller-runtime/pkg/scheme"}
	for _, imp := range pkg.Imports {
		ok := !strings.Contains(imp, ".") // the standard library
		for _, a := range allowed {
			ok = ok || strings.HasPrefix(imp, a)
		}
		if !ok {
			t.Errorf("api/v1alpha1 imports %s; it may import only the standard library, %v", imp, allowed)
		}
	}
}
