// Package arch keeps the imports flowing one way: artifact knows nothing of
// Kubernetes, controllers never import the edge puller, and only the
// puller's Kubernetes mode talks to the API server.
package arch

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/bargeml/barge/"

// rules: a package (and those below it) must not depend on these, directly
// or through another package.
var rules = []struct {
	pkg       string
	forbidden []string
	why       string
}{
	{"artifact", []string{"k8s.io/", "sigs.k8s.io/", module + "edgepuller", module + "controllers", module + "api", module + "internal", module + "dataset"},
		"the wire format is used by every tool, on every node, with or without Kubernetes"},
	{"dataset", []string{"k8s.io/", "sigs.k8s.io/", "oras.land/", "github.com/opencontainers/", module},
		"dataset statistics read files; they know nothing of OCI or Kubernetes"},
	{"safetensors", []string{module, "k8s.io/", "sigs.k8s.io/", "oras.land/"},
		"trainers and tools outside Barge read and write safetensors with it"},
	{"fedavg", []string{"k8s.io/", "sigs.k8s.io/", "oras.land/", module + "artifact", module + "internal", module + "controllers", module + "edgepuller"},
		"averaging reads files; the CLI fetches the updates"},
	{"registry", []string{"k8s.io/", "sigs.k8s.io/", module + "edgepuller", module + "controllers", module + "api"},
		"the embedded registry stands alone"},
	{"edgepuller/store", []string{"k8s.io/", "sigs.k8s.io/", module + "controllers", module + "api"}, "the node side runs without Kubernetes"},
	{"edgepuller/fetch", []string{"k8s.io/", "sigs.k8s.io/", module + "controllers", module + "api"}, "the node side runs without Kubernetes"},
	{"edgepuller/unpack", []string{"k8s.io/", "sigs.k8s.io/", "net", module}, "unpacking is local file work"},
	{"edgepuller/trust", []string{"k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go", "sigs.k8s.io/", module + "controllers", module + "api"},
		"the node checks signatures with its own key material, never through the API server"},
	{"edgepuller/upload", []string{"k8s.io/", "sigs.k8s.io/", module + "controllers", module + "api", module + "edgepuller/store", module + "edgepuller/agent"},
		"uploads move files to a registry; the node side runs without Kubernetes"},
	{"edgepuller/peer", []string{"k8s.io/", "sigs.k8s.io/", module + "controllers", module + "api", module + "edgepuller/agent", module + "edgepuller/fetch"},
		"a node serves its peers from its store alone, with no API access"},
	{"edgepuller/gc", []string{"k8s.io/", "sigs.k8s.io/", module + "controllers", module + "api"}, "the node side runs without Kubernetes"},
	{"edgepuller/agent", []string{"k8s.io/", "sigs.k8s.io/", module + "controllers", module + "api", module + "internal"},
		"the orchestrator is independent of where the desired state comes from"},
	{"controllers", []string{module + "edgepuller", module + "internal/cli"}, "controllers never import the edge puller"},
	// klog arrives with sigstore's dependencies; the Kubernetes API does not.
	{"verify", []string{"k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go", "sigs.k8s.io/", module + "edgepuller", module + "controllers", module + "api", module + "internal"},
		"signature checks run in the CLI, the controller and on the node alike"},
	{"selection", []string{"k8s.io/api", "k8s.io/client-go", "sigs.k8s.io/", "oras.land/", module},
		"choosing a version by its metrics is pure: the controller and the CLI feed it what they read"},
	{"api", []string{module, "oras.land/", "k8s.io/client-go", "sigs.k8s.io/controller-runtime/pkg/client"},
		"every binary and client imports the API; it stays light"},
}

type pkgInfo struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	for {
		var p pkgInfo
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, module)
		for _, r := range rules {
			if rel != r.pkg && !strings.HasPrefix(rel, r.pkg+"/") {
				continue
			}
			seen[r.pkg] = true
			for _, dep := range p.Deps {
				for _, bad := range r.forbidden {
					if dep == bad || strings.HasPrefix(dep, bad) && (strings.HasSuffix(bad, "/") || strings.HasPrefix(dep, bad+"/")) {
						if dep == p.ImportPath {
							continue
						}
						t.Errorf("%s depends on %s: %s", p.ImportPath, dep, r.why)
					}
				}
			}
		}
	}
	for _, r := range rules {
		if !seen[r.pkg] && r.pkg != "controllers" {
			t.Errorf("no package %s: a rule names a package that moved", r.pkg)
		}
	}
}
