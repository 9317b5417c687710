package dataset

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package free of Kubernetes, network and OCI code:
// computing statistics must work offline and anywhere.
func TestImports(t *testing.T) {
	forbidden := []string{"k8s.io/", "sigs.k8s.io/controller-runtime", "net", "oras.land/", "github.com/opencontainers/", "github.com/distribution/", "github.com/bargeml/barge/"}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad || strings.HasPrefix(path, bad) && (strings.HasSuffix(bad, "/") || strings.HasPrefix(path, bad+"/")) {
					t.Errorf("%s imports %s", name, path)
				}
			}
		}
	}
}
