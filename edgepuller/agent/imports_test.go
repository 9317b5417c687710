package agent_test

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps doc.go's promise: the orchestrator knows nothing of
// Kubernetes, so the standalone daemon runs on a node without it, and the
// controllers stay on their side.
func TestImports(t *testing.T) {
	forbidden := []string{"k8s.io/", "sigs.k8s.io/", "github.com/bargeml/barge/api", "github.com/bargeml/barge/controllers", "github.com/bargeml/barge/internal/cli"}
	files, _ := filepath.Glob("*.go")
	if len(files) == 0 {
		t.Fatal("no Go files found")
	}
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

// TestNoKubernetesDependency looks at every package the agent pulls in, not
// only its own imports.
func TestNoKubernetesDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/") || strings.HasPrefix(dep, "sigs.k8s.io/") {
			t.Errorf("the agent depends on %s", dep)
		}
	}
}
