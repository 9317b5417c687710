package e2e

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

const (
	s3AccessKey = "barge-test"
	s3SecretKey = "barge-test-secret-key"
	s3Bucket    = "models"
)

// versitygwBin is the versitygw binary (`make tools` builds it into bin/).
// Outside CI a missing binary skips the test; in CI, or with
// BARGE_NETFAULT_REQUIRED=1, it fails it, so the test cannot silently stop
// running.
func versitygwBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("BARGE_VERSITYGW")
	if bin == "" {
		_, file, _, _ := runtime.Caller(0)
		bin = filepath.Join(filepath.Dir(file), "..", "..", "bin", "versitygw")
	}
	if _, err := os.Stat(bin); err != nil {
		msg := "the S3 test needs versitygw at " + bin + ": run `make tools` (or `make test`), or set BARGE_VERSITYGW"
		if os.Getenv("CI") != "" || os.Getenv("BARGE_NETFAULT_REQUIRED") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// startS3 runs versitygw as an S3 server over a temporary directory (its
// posix backend: a bucket is a directory, an object a file) and makes the
// bucket through the S3 API. It returns the endpoint URL and the directory.
func startS3(t *testing.T) (endpoint, root string) {
	t.Helper()
	bin := versitygwBin(t)
	root = t.TempDir()
	addr := freePort(t, "127.0.0.1")
	cmd := exec.Command(bin, "--access", s3AccessKey, "--secret", s3SecretKey, "--port", addr, "--quiet", "posix", root)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	endpoint = "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(endpoint + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not answer on %s: %v\n%s", addr, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	sess, err := session.NewSession(aws.NewConfig().
		WithCredentials(credentials.NewStaticCredentials(s3AccessKey, s3SecretKey, "")).
		WithEndpoint(endpoint).WithRegion("us-east-1").WithS3ForcePathStyle(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3.New(sess).CreateBucket(&s3.CreateBucketInput{Bucket: aws.String(s3Bucket)}); err != nil {
		t.Fatalf("create bucket %s on versitygw: %v", s3Bucket, err)
	}
	return endpoint, root
}

// serveOnS3 starts a `barge serve` replica on the bucket, with the keys in
// its environment as the chart passes them, and returns its host:port.
func serveOnS3(t *testing.T, endpoint, secretFile string, extra ...string) string {
	t.Helper()
	host, _ := serveOnS3Line(t, endpoint, append([]string{"--upload-secret-file", secretFile}, extra...)...)
	return host
}

// serveOnS3Line is serveOnS3 with all flags given, and returns the line
// barge serve announced itself with too.
func serveOnS3Line(t *testing.T, endpoint string, extra ...string) (host, line string) {
	t.Helper()
	host = freePort(t, "127.0.0.1")
	args := append([]string{"--addr", host,
		"--storage-driver", "s3", "--storage-opt", "bucket=" + s3Bucket, "--storage-opt", "region=us-east-1",
		"--storage-opt", "regionendpoint=" + endpoint, "--storage-opt", "forcepathstyle=true"}, extra...)
	line = startServe(t, []string{"AWS_ACCESS_KEY_ID=" + s3AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3SecretKey}, "http://", args...)
	return host, line
}

// blobAnswer GETs a blob without following redirects and returns the
// status and the Location.
func blobAnswer(t *testing.T, host, repo, digest string) (int, string) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("http://" + host + "/v2/" + repo + "/blobs/" + digest)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

func uploadSecret(t *testing.T) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "upload-secret")
	if err := os.WriteFile(file, []byte(rand.Text()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// splitProxy is a load balancer at its least lucky: it sends every upload
// start (POST .../blobs/uploads/) to one replica and every other request to
// the other, so each chunked upload crosses replicas. It counts the
// requests each replica got, by method.
type splitProxy struct {
	*httptest.Server
	mu  sync.Mutex
	got map[string]int // "post:POST", "rest:PATCH", ...
}

func newSplitProxy(t *testing.T, post, rest string) *splitProxy {
	p := &splitProxy{got: map[string]int{}}
	target := func(host string) *url.URL { return &url.URL{Scheme: "http", Host: host} }
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		which, to := "rest", rest
		if r.In.Method == http.MethodPost && strings.HasSuffix(r.In.URL.Path, "/blobs/uploads/") {
			which, to = "post", post
		}
		p.mu.Lock()
		p.got[which+":"+r.In.Method]++
		p.mu.Unlock()
		r.SetURL(target(to))
		r.Out.Host = r.In.Host // upload locations name the proxy, as behind a Service
	}}
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

func (p *splitProxy) count(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[key]
}

// TestRegistryReplicasOnS3 runs two `barge serve` replicas on one bucket of
// a real S3 server (versitygw). `barge push` goes through a proxy that
// starts each upload on replica A and sends the chunks and the final PUT to
// replica B, which accepts them because both read the same upload secret;
// the content is in the bucket, and oras and barge read it back through
// either replica, which serve the bytes themselves unless --storage-redirect.
func TestRegistryReplicasOnS3(t *testing.T) {
	endpoint, root := startS3(t)
	secret := uploadSecret(t)
	a, b := serveOnS3(t, endpoint, secret), serveOnS3(t, endpoint, secret)
	proxy := newSplitProxy(t, a, b)

	src := t.TempDir()
	weights, err := os.Create(filepath.Join(src, "weights.bin"))
	if err != nil {
		t.Fatal(err)
	}
	io.CopyN(weights, rand.Reader, 12<<20) // chunked: 3 PATCHes of 4 MiB
	weights.Close()
	os.WriteFile(filepath.Join(src, "config.json"), []byte(`{"layers": 12}`), 0o644)
	env := []string{"XDG_CACHE_HOME=" + t.TempDir()}
	digest := strings.TrimSpace(must(t, command{env: env}.run(t, bargeBin, "push", src, strings.TrimPrefix(proxy.URL, "http://")+"/models/big:1")).stdout)

	if p, patches, puts := proxy.count("post:POST"), proxy.count("rest:PATCH"), proxy.count("rest:PUT"); p == 0 || patches < 3 || puts == 0 {
		t.Errorf("uploads started on A %d times, %d PATCHes and %d PUTs on B: want the chunked upload to cross replicas", p, patches, puts)
	}
	blobs, _ := filepath.Glob(filepath.Join(root, s3Bucket, "docker", "registry", "v2", "blobs", "sha256", "*", "*", "data"))
	if len(blobs) < 3 { // weights, config.json, the artifact config
		t.Errorf("%d blobs in the bucket, want the pushed layers and config there: %v", len(blobs), blobs)
	}

	// The replicas serve blob bytes themselves: nodes need no path to the
	// object store. --storage-redirect sends them there instead.
	var manifest struct{ Layers []struct{ Digest string } }
	json.Unmarshal([]byte(must(t, oras(t, "manifest", "fetch", "--plain-http", a+"/models/big@"+digest)).stdout), &manifest)
	if len(manifest.Layers) == 0 {
		t.Fatal("no layers in the pushed manifest")
	}
	layer := manifest.Layers[0].Digest
	if status, loc := blobAnswer(t, b, "models/big", layer); status != http.StatusOK {
		t.Errorf("blob GET on a replica: %d to %q, want 200 from the replica itself", status, loc)
	}
	redirecting := serveOnS3(t, endpoint, secret, "--storage-redirect")
	if status, loc := blobAnswer(t, redirecting, "models/big", layer); status != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, endpoint+"/") {
		t.Errorf("blob GET with --storage-redirect: %d to %q, want 307 to %s", status, loc, endpoint)
	}

	for name, host := range map[string]string{"A": a, "B": b} {
		out := t.TempDir()
		must(t, command{dir: out}.run(t, orasBin, "pull", "--plain-http", host+"/models/big@"+digest))
		sameTree(t, tree(t, out), tree(t, src))
		out = t.TempDir()
		must(t, command{env: env}.run(t, bargeBin, "pull", host+"/models/big:1", out))
		if got := tree(t, out); got["weights.bin"] != tree(t, src)["weights.bin"] {
			t.Errorf("barge pull through replica %s: weights.bin differs", name)
		}
	}
}

// TestRegistryReplicasNeedTheSameUploadSecret: a chunk of an upload that
// replica A started is accepted by a replica with A's upload secret and
// refused by one with another: the reason for --upload-secret-file, and
// why the chart gives every replica the same one. A push across such
// replicas fails with a message that says so.
func TestRegistryReplicasNeedTheSameUploadSecret(t *testing.T) {
	endpoint, _ := startS3(t)
	secret := uploadSecret(t)
	a, twin := serveOnS3(t, endpoint, secret), serveOnS3(t, endpoint, secret)
	other := serveOnS3(t, endpoint, uploadSecret(t))
	resp, err := http.Post("http://"+a+"/v2/models/split/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if resp.StatusCode != http.StatusAccepted || err != nil {
		t.Fatalf("POST on A: %s, location %v", resp.Status, err)
	}
	patch := func(host string) (int, string) {
		u := *loc
		u.Host = host
		req, _ := http.NewRequest(http.MethodPatch, u.String(), strings.NewReader("chunk"))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Errors []struct{ Code string } `json:"errors"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		code := ""
		if len(body.Errors) > 0 {
			code = body.Errors[0].Code
		}
		return resp.StatusCode, code
	}
	if status, code := patch(other); status < 400 || code != "BLOB_UPLOAD_INVALID" {
		t.Errorf("PATCH on a replica with another secret: %d %s, want it refused as BLOB_UPLOAD_INVALID", status, code)
	}
	if status, code := patch(twin); status != http.StatusAccepted {
		t.Errorf("PATCH on a replica with the same secret: %d %s, want 202", status, code)
	}

	// What a user sees when replicas were started without a shared secret:
	// a note at start, and a push that fails saying what to do.
	if _, line := serveOnS3Line(t, endpoint); !strings.Contains(line, "s3 bucket "+s3Bucket+" at "+endpoint) || !strings.Contains(line, "--upload-secret-file") {
		t.Errorf("barge serve on s3 without --upload-secret-file announced %q: want the bucket, the endpoint and a note about the upload secret", line)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "config.json"), []byte(`{"layers": 12}`), 0o644)
	proxy := newSplitProxy(t, a, other)
	r := command{env: []string{"XDG_CACHE_HOME=" + t.TempDir()}}.run(t, bargeBin, "push", src, strings.TrimPrefix(proxy.URL, "http://")+"/models/split:1")
	if r.err == nil || !strings.Contains(r.stderr, "same `barge serve --upload-secret-file`") {
		t.Errorf("push across replicas with different secrets: %s\nwant a failure that names --upload-secret-file", r)
	}
}

// TestServeRefusesKeysInArguments: an object store key on the command line
// is visible to every user of the machine (ps, /proc): barge serve refuses
// it and says where the key goes instead. A malformed option is named.
func TestServeRefusesKeysInArguments(t *testing.T) {
	for _, tc := range []struct{ opt, want string }{
		{"secretkey=hunter2", "AWS_SECRET_ACCESS_KEY"},
		{"AccessKey=AKIA", "AWS_ACCESS_KEY_ID"},
		{"bucket", `--storage-opt "bucket" is not key=value`},
	} {
		r := barge(t, "serve", "--addr", "127.0.0.1:0", "--storage-driver", "s3", "--storage-opt", "bucket=b", "--storage-opt", tc.opt)
		if r.err == nil || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("--storage-opt %s: %s\nwant a refusal naming %s", tc.opt, r, tc.want)
		}
	}
}
