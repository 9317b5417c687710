package peer

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// helmSecret is a chart template that makes the peer Secret's three files
// the way the chart does: helm's genCA and genSignedCert (sprig), whose
// certificates are RSA with both serverAuth and clientAuth usages.
const helmSecret = `{{- $ca := genCA "barge-peer-ca" 3650 }}
{{- $cert := genSignedCert "barge-peer" nil (list "barge-peer") 3650 $ca }}
ca.crt: {{ $ca.Cert | b64enc }}
tls.crt: {{ $cert.Cert | b64enc }}
tls.key: {{ $cert.Key | b64enc }}
`

// TestHelmGeneratedCertificates: what helm's genCA and genSignedCert make,
// as the chart's peer Secret holds it, loads, and two nodes with it talk
// to each other: the same certificate is client and server.
func TestHelmGeneratedCertificates(t *testing.T) {
	out := renderHelm(t, helmSecret)
	dir := t.TempDir()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, b64, ok := strings.Cut(line, ": ")
		if !ok || strings.HasPrefix(line, "#") || line == "---" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("helm output %q: %v", line, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	server, client, err := LoadTLS(dir)
	if err != nil {
		t.Fatalf("LoadTLS refuses what helm's genSignedCert makes: %v", err)
	}
	n := startNode(t, site{server: server}, Options{})
	resp, err := httpClient(client).Get("https://" + n.addr + "/v2/")
	if err != nil {
		t.Fatalf("a node with the helm-made certificate cannot reach another: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/: %s", resp.Status)
	}
}

// renderHelm renders one template with the helm binary of bin/ (or
// $BARGE_HELM), as test/chart does.
func renderHelm(t *testing.T, template string) string {
	t.Helper()
	bin := os.Getenv("BARGE_HELM")
	if bin == "" {
		_, file, _, _ := runtime.Caller(0)
		bin = filepath.Join(filepath.Dir(file), "..", "..", "bin", "helm")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm is not at %s: run `make tools` (or `make test`)", bin)
	}
	chart := t.TempDir()
	os.MkdirAll(filepath.Join(chart, "templates"), 0o755)
	os.WriteFile(filepath.Join(chart, "Chart.yaml"), []byte("apiVersion: v2\nname: peertls\nversion: 0.1.0\n"), 0o644)
	os.WriteFile(filepath.Join(chart, "templates", "secret.yaml"), []byte(template), 0o644)
	home := t.TempDir()
	cmd := exec.Command(bin, "template", "peer", chart)
	cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG="+filepath.Join(home, "none"),
		"HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	return stdout.String()
}
