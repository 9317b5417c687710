package kube_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps doc.go's promise of plain list, watch, get and patch
// requests: no informers, caches or controller-runtime clients, which need
// discovery or other resources that KubeEdge's MetaServer may not serve;
// and nothing of the controllers or the CLI.
func TestImports(t *testing.T) {
	forbidden := []string{"k8s.io/client-go/informers", "k8s.io/client-go/tools/cache", "k8s.io/client-go/discovery",
		"k8s.io/client-go/dynamic", "sigs.k8s.io/controller-runtime", "github.com/bargeml/barge/controllers", "github.com/bargeml/barge/internal/cli"}
	files, _ := filepath.Glob("*.go")
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if strings.HasPrefix(path, bad) {
					t.Errorf("%s imports %s", name, path)
				}
			}
		}
	}
}
