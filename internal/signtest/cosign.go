package signtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// CosignBin is the cosign CLI that `make tools` builds from hack/tools at the
// pinned version; $BARGE_COSIGN overrides it. The test is skipped, saying
// how to get it, when it is missing (`make test` builds it first).
func CosignBin(tb testing.TB) string {
	tb.Helper()
	bin := os.Getenv("BARGE_COSIGN")
	if bin == "" {
		_, file, _, _ := runtime.Caller(0)
		bin = filepath.Join(filepath.Dir(file), "..", "..", "bin", "cosign")
	}
	if _, err := os.Stat(bin); err != nil {
		tb.Skipf("the cosign CLI is not at %s: run `make tools` (make test does) to build the pinned cosign", bin)
	}
	return bin
}

// Cosign runs the cosign CLI with its state kept inside the test, and
// returns stdout, stderr and the error.
func Cosign(tb testing.TB, args ...string) (string, string, error) {
	tb.Helper()
	home := tb.TempDir()
	cmd := exec.Command(CosignBin(tb), args...)
	cmd.Env = append(os.Environ(),
		"HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, "docker"),
		"COSIGN_PASSWORD=test", "COSIGN_YES=true", "SIGSTORE_NO_CACHE=true",
		"TUF_ROOT="+filepath.Join(home, "tuf"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// CosignKeyPair makes a key pair with `cosign generate-key-pair` in a new
// directory and returns the paths of the private and the public key.
func CosignKeyPair(tb testing.TB) (key, pub string) {
	tb.Helper()
	dir := tb.TempDir()
	prefix := filepath.Join(dir, "cosign")
	if _, stderr, err := Cosign(tb, "generate-key-pair", "--output-key-prefix", prefix); err != nil {
		tb.Fatalf("cosign generate-key-pair: %v\n%s", err, stderr)
	}
	return prefix + ".key", prefix + ".pub"
}

// CosignSign signs ref (host/repo@digest) with key, offline: no
// transparency log, no signing config fetched. The bundle lands as a
// referrer of the digest.
func CosignSign(tb testing.TB, key, ref string) {
	tb.Helper()
	if _, stderr, err := Cosign(tb, "sign", "--key", key, "--tlog-upload=false", "--use-signing-config=false",
		"--allow-http-registry", "--yes", ref); err != nil {
		tb.Fatalf("cosign sign %s: %v\n%s", ref, err, stderr)
	}
}

// CosignKeyDir lays out pub as the node's key material for namespace, as the
// chart mounts a ConfigMap named name: DIR/namespace/name/cosign.pub. It
// returns DIR, for trust.FromDir.
func CosignKeyDir(tb testing.TB, pub, namespace, name string) string {
	tb.Helper()
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, namespace, name), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, namespace, name, "cosign.pub"), pubPEM, 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}
