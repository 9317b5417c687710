package fetch_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package's promise in doc.go: no Kubernetes, and
// none of the puller's other stages.
func TestImports(t *testing.T) {
	forbidden := []string{
		"k8s.io/", "sigs.k8s.io/",
		"github.com/bargeml/barge/controllers", "github.com/bargeml/barge/api",
		"github.com/bargeml/barge/edgepuller/unpack", "github.com/bargeml/barge/edgepuller/status",
	}
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
