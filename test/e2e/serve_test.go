package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bargeml/barge/registry"
)

// lanAddress is an address of this machine that is not loopback, as a
// registry for edge nodes listens on.
func lanAddress(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address to serve on")
	return ""
}

func freePort(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

// serve starts `barge serve` with args and waits for it to announce itself
// on HTTPS.
func serve(t *testing.T, args ...string) {
	t.Helper()
	startServe(t, nil, "https://", args...)
}

// startServe starts `barge serve` with extra environment and args, waits
// for it to announce itself on a URL that starts with scheme, and returns
// that line.
func startServe(t *testing.T, env []string, scheme string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bargeBin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("barge serve exited: %s", strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			if strings.HasPrefix(l, "Serving an OCI registry on "+scheme) {
				go func() {
					for range lines {
					}
				}()
				return l
			}
		case <-ctx.Done():
			t.Fatalf("barge serve did not start: %s", strings.Join(seen, "\n"))
		}
	}
}

// TestServeTLSWithUsers runs `barge serve` on a LAN address with TLS and
// two htpasswd files, and uses it with the real oras CLI and barge: a
// read-only user pulls but cannot push, a read-write user pushes, an
// anonymous client gets nothing, deletes are refused.
func TestServeTLSWithUsers(t *testing.T) {
	host := freePort(t, lanAddress(t))
	ip, _, _ := net.SplitHostPort(host)
	ca, cert, key := registry.TLSFilesForTest(t, ip)
	rw := registry.HtpasswdForTest(t, map[string]string{"ci": "push-pw"})
	ro := registry.HtpasswdForTest(t, map[string]string{"edge": "pull-pw"})
	serve(t, "--addr", host, "--root", t.TempDir(), "--tls-cert", cert, "--tls-key", key, "--htpasswd", rw, "--htpasswd-readonly", ro)

	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "weights.bin"), []byte("good weights"), 0o644)
	os.WriteFile(filepath.Join(src, "evil.bin"), []byte("planted"), 0o644)
	ref := host + "/models/m:1"
	in := func(stdin string) command { return command{dir: src, stdin: stdin} }

	r := in("").run(t, orasBin, "push", "--ca-file", ca, host+"/models/m:anon", "evil.bin")
	if r.err == nil || !strings.Contains(r.stderr, "credential not found") {
		t.Errorf("anonymous oras push: %s", r)
	}
	r = in("pull-pw\n").run(t, orasBin, "push", "--ca-file", ca, "-u", "edge", "--password-stdin", host+"/models/m:evil", "evil.bin")
	if r.err == nil || !strings.Contains(r.stderr, "403") && !strings.Contains(strings.ToLower(r.stderr), "denied") {
		t.Errorf("read-only oras push: %s", r)
	}
	must(t, in("push-pw\n").run(t, orasBin, "push", "--ca-file", ca, "-u", "ci", "--password-stdin", ref, "weights.bin"))
	// Nothing the refused pushes sent is there.
	for _, tag := range []string{"anon", "evil"} {
		if r := in("pull-pw\n").run(t, orasBin, "manifest", "fetch", "--ca-file", ca, "-u", "edge", "--password-stdin", host+"/models/m:"+tag); r.err == nil {
			t.Errorf("tag %s exists after a refused push", tag)
		}
	}

	// oras pulls as the read-only user.
	out := t.TempDir()
	must(t, command{dir: out, stdin: "pull-pw\n"}.run(t, orasBin, "pull", "--ca-file", ca, "-u", "edge", "--password-stdin", ref))
	if b, _ := os.ReadFile(filepath.Join(out, "weights.bin")); string(b) != "good weights" {
		t.Errorf("oras pulled %q", b)
	}

	// barge logs in with the password on stdin and pulls, trusting the CA
	// through SSL_CERT_FILE.
	trust := []string{"SSL_CERT_FILE=" + ca}
	r = command{stdin: "wrong\n", env: trust}.run(t, bargeBin, "login", host, "-u", "edge", "--password-stdin")
	if r.err == nil {
		t.Errorf("barge login with a wrong password: %s", r)
	}
	must(t, command{stdin: "pull-pw\n", env: trust}.run(t, bargeBin, "login", host, "-u", "edge", "--password-stdin"))
	dest := filepath.Join(t.TempDir(), "m")
	must(t, command{env: trust}.run(t, bargeBin, "pull", ref, dest))
	if b, _ := os.ReadFile(filepath.Join(dest, "weights.bin")); string(b) != "good weights" {
		t.Errorf("barge pulled %q", b)
	}
	// barge's push as the read-only user is refused too.
	r = command{env: trust}.run(t, bargeBin, "push", src, host+"/models/m:2")
	if r.err == nil || !strings.Contains(r.stderr, "may only pull") {
		t.Errorf("barge push as the read-only user: %s", r)
	}

	// Deletes are off, even for the read-write user.
	r = in("push-pw\n").run(t, orasBin, "manifest", "delete", "--force", "--ca-file", ca, "-u", "ci", "--password-stdin", ref)
	if r.err == nil {
		t.Errorf("oras manifest delete accepted: %s", r)
	}
	must(t, in("pull-pw\n").run(t, orasBin, "manifest", "fetch", "--ca-file", ca, "-u", "edge", "--password-stdin", ref))
}

// TestServeRefusesOpenListen: beyond loopback without TLS and auth, barge
// serve exits at once and says what to add.
func TestServeRefusesOpenListen(t *testing.T) {
	for _, args := range [][]string{
		{"--addr", "0.0.0.0:0"},
		{"--addr", ":0", "--htpasswd", registry.HtpasswdForTest(t, map[string]string{"ci": "pw"})},
	} {
		r := command{}.run(t, bargeBin, append([]string{"serve"}, args...)...)
		if r.err == nil || !strings.Contains(r.stderr, "add --tls-cert and --tls-key") || !strings.Contains(r.stderr, "--insecure-listen") {
			t.Errorf("barge serve %v: %s", args, r)
		}
	}
}

// TestLoginRefusesPasswordFlag: a password on the command line is refused
// with the way to give it instead, and nothing is stored.
func TestLoginRefusesPasswordFlag(t *testing.T) {
	for _, args := range [][]string{
		{"login", "127.0.0.1:1", "-u", "ci", "-p", "secret"},
		{"login", "127.0.0.1:1", "-u", "ci", "--password=secret"},
	} {
		r := command{}.run(t, bargeBin, args...)
		if r.err == nil || !strings.Contains(r.stderr, "--password-stdin") {
			t.Errorf("barge %v: %s", args, r)
		}
		if strings.Contains(r.stderr, "secret") {
			t.Errorf("the error repeats the password: %s", r.stderr)
		}
	}
	// Not a terminal and no --password-stdin: no silent empty password.
	r := command{stdin: "secret\n"}.run(t, bargeBin, "login", "127.0.0.1:1", "-u", "ci")
	if r.err == nil || !strings.Contains(r.stderr, "give --password-stdin") {
		t.Errorf("login without a terminal: %s", r)
	}
	if b, err := os.ReadFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json")); err == nil && strings.Contains(string(b), "127.0.0.1:1") {
		t.Errorf("a refused login stored credentials: %s", b)
	}
}

// TestLoginPrompts: on a terminal, barge login asks for the user name and
// the password and stores them. util-linux `script` gives it a real
// pseudo-terminal. (Whether the password echoes cannot be told here: script
// writes all input into the terminal before barge turns echo off.)
func TestLoginPrompts(t *testing.T) {
	scriptBin, err := exec.LookPath("script")
	if err != nil {
		t.Skip("util-linux script is not installed: no pseudo-terminal to test the prompt with")
	}
	reg, err := registry.Start(context.Background(), registry.Options{
		Addr:     "127.0.0.1:0",
		Htpasswd: registry.HtpasswdForTest(t, map[string]string{"ci": "typed-secret"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	docker := t.TempDir()
	r := command{stdin: "ci\ntyped-secret\n", env: []string{"DOCKER_CONFIG=" + docker}}.run(t, scriptBin, "-qec", bargeBin+" login "+reg.Host(), "/dev/null")
	if r.err != nil || !strings.Contains(r.stdout, "Username:") || !strings.Contains(r.stdout, "Password:") || !strings.Contains(r.stdout, "Login Succeeded") {
		t.Fatalf("login on a terminal: %s", r)
	}
	b, err := os.ReadFile(filepath.Join(docker, "config.json"))
	if err != nil || !strings.Contains(string(b), reg.Host()) {
		t.Errorf("credentials not stored: %s %v", b, err)
	}
}

// TestServeUploadSecretFile: a short shared upload secret is refused with
// how to make a good one.
func TestServeUploadSecretFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(file, []byte("short\n"), 0o600)
	r := command{}.run(t, bargeBin, "serve", "--addr", "127.0.0.1:0", "--upload-secret-file", file)
	if r.err == nil || !strings.Contains(r.stderr, "shorter than 16 characters") || !strings.Contains(r.stderr, "/dev/urandom") {
		t.Errorf("short upload secret: %s", r)
	}
}

// TestServeTLSOnLoopback: a registry on this machine that speaks TLS (barge
// serve --tls-cert on 127.0.0.1, or a port-forward to the chart's registry)
// is reached over HTTPS, with the certificate checked: barge does not fall
// back to plain HTTP for it, as it does for a loopback registry without TLS.
func TestServeTLSOnLoopback(t *testing.T) {
	host := freePort(t, "127.0.0.1")
	ca, cert, key := registry.TLSFilesForTest(t, "127.0.0.1")
	serve(t, "--addr", host, "--root", t.TempDir(), "--tls-cert", cert, "--tls-key", key)

	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "weights.bin"), []byte("over tls"), 0o644)
	ref := host + "/models/loop:1"
	r := command{}.run(t, bargeBin, "push", src, ref)
	if r.err == nil || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("barge push to a TLS registry whose CA it does not trust: %s; want a certificate error", r)
	}
	trust := []string{"SSL_CERT_FILE=" + ca}
	must(t, command{env: trust}.run(t, bargeBin, "push", src, ref))
	dest := filepath.Join(t.TempDir(), "m")
	must(t, command{env: trust}.run(t, bargeBin, "pull", ref, dest))
	if b, _ := os.ReadFile(filepath.Join(dest, "weights.bin")); string(b) != "over tls" {
		t.Errorf("barge pulled %q", b)
	}
}
