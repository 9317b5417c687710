package controllers

import (
	"go/build"
	"strings"
	"testing"
)

// TestImports keeps the controller and the edge puller apart: they meet only
// through the NodeArtifact API, and the controller stays free of the CLI.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range append(pkg.Imports, pkg.TestImports...) {
		for _, banned := range []string{"github.com/bargeml/barge/edgepuller", "github.com/bargeml/barge/internal/cli", "github.com/bargeml/barge/cmd"} {
			if imp == banned || strings.HasPrefix(imp, banned+"/") {
				t.Errorf("controllers imports %s", imp)
			}
		}
	}
}
