package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/bargeml/barge/registry"
)

func TestMetricsAndVersions(t *testing.T) {
	reg := registry.StartForTest(t)
	repo := reg.Host() + "/models/ranked"
	src := t.TempDir()
	digests := map[string]string{}
	for i, tag := range []string{"1.2.0", "1.10.0", "latest", "2.0.0-rc.1", "v0.9"} {
		writeTree(t, src, map[string]string{"w.bin": strings.Repeat("w", i+1)})
		digests[tag] = strings.TrimSpace(must(t, barge(t, "push", src, repo+":"+tag)).stdout)
	}
	metrics := filepath.Join(t.TempDir(), "m.json")
	os.WriteFile(metrics, []byte(`{"accuracy": 0.93, "f1": 0.9}`), 0o644)
	must(t, barge(t, "metrics", "attach", repo+":1.10.0", metrics, "--dataset", "sha256:"+strings.Repeat("d", 64)))

	// The model's digest is unchanged and its metrics read back.
	var recs []struct {
		Metrics map[string]float64 `json:"metrics"`
		Dataset string             `json:"dataset"`
	}
	if err := json.Unmarshal([]byte(must(t, barge(t, "metrics", "get", "-o", "json", repo+"@"+digests["1.10.0"])).stdout), &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Metrics["accuracy"] != 0.93 || !strings.HasPrefix(recs[0].Dataset, "sha256:ddd") {
		t.Errorf("metrics %+v", recs)
	}

	var rows []struct {
		Tag     string             `json:"tag"`
		Digest  string             `json:"digest"`
		Metrics map[string]float64 `json:"metrics"`
	}
	if err := json.Unmarshal([]byte(must(t, barge(t, "versions", "-o", "json", repo)).stdout), &rows); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range rows {
		order = append(order, r.Tag)
		if r.Digest != digests[r.Tag] {
			t.Errorf("%s: digest %s, pushed %s", r.Tag, r.Digest, digests[r.Tag])
		}
	}
	// Newest semantic version first (1.10 after 1.2 numerically), then
	// the tags that are not versions; the referrers tag is not listed.
	if got, want := strings.Join(order, " "), "2.0.0-rc.1 1.10.0 1.2.0 v0.9 latest"; got != want {
		t.Errorf("order %q, want %q", got, want)
	}
	if rows[1].Metrics["f1"] != 0.9 {
		t.Errorf("1.10.0 metrics %v", rows[1].Metrics)
	}

	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"accuracy": "great"}`), 0o644)
	if r := barge(t, "metrics", "attach", repo+":1.2.0", bad); r.err == nil || !strings.Contains(r.stderr, "not a number") {
		t.Errorf("bad metrics: %s", r)
	}
}

func TestLoginUsesDockerConfig(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(htpasswd, []byte("robot:"+string(hash)+"\n"), 0o600)
	reg, err := registry.Start(context.Background(), registry.Options{Addr: "127.0.0.1:0", Htpasswd: htpasswd})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	t.Setenv("DOCKER_CONFIG", t.TempDir())

	src := t.TempDir()
	writeTree(t, src, map[string]string{"w.bin": "w"})
	ref := reg.Host() + "/private/model:1"
	if r := barge(t, "push", src, ref); r.err == nil || !strings.Contains(r.stderr, "barge login "+reg.Host()) {
		t.Fatalf("push without login: %s", r)
	}
	if r := runCmd(t, "wrong\n", bargeBin, "login", reg.Host(), "-u", "robot", "--password-stdin"); r.err == nil {
		t.Fatalf("login with a wrong password: %s", r)
	}
	must(t, runCmd(t, "s3cret\n", bargeBin, "login", reg.Host(), "-u", "robot", "--password-stdin"))
	cfg, err := os.ReadFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"))
	if err != nil || !strings.Contains(string(cfg), reg.Host()) {
		t.Fatalf("docker config after login: %s %v", cfg, err)
	}
	must(t, barge(t, "push", src, ref))
	// oras reads the same credentials.
	must(t, oras(t, "manifest", "fetch", "--plain-http", ref))
	must(t, barge(t, "logout", reg.Host()))
	if r := barge(t, "inspect", ref); r.err == nil {
		t.Errorf("inspect after logout: %s", r)
	}
}

// A second referrer on a registry that refuses deletes (barge serve's and
// the chart's default) is pushed, and both are read back: on a registry
// without a referrers API the old referrers index is left behind rather
// than deleted.
func TestMetricsTwiceWithoutDeletes(t *testing.T) {
	reg, err := registry.Start(context.Background(), registry.Options{Addr: "127.0.0.1:0", Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close(context.Background()) })
	repo := reg.Host() + "/models/twice"
	src := t.TempDir()
	writeTree(t, src, map[string]string{"w.bin": "weights"})
	must(t, barge(t, "push", src, repo+":1.0.0"))
	for _, m := range []string{`{"accuracy": 0.9}`, `{"latency_ms": 12}`} {
		f := filepath.Join(t.TempDir(), "m.json")
		os.WriteFile(f, []byte(m), 0o644)
		must(t, barge(t, "metrics", "attach", repo+":1.0.0", f))
	}
	var recs []struct {
		Metrics map[string]float64 `json:"metrics"`
	}
	if err := json.Unmarshal([]byte(must(t, barge(t, "metrics", "get", "-o", "json", repo+":1.0.0")).stdout), &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Errorf("%d metrics referrers read back, want 2: %+v", len(recs), recs)
	}
}

// barge push --joint packs an edge and a cloud model as one index; barge
// inspect shows both parts by layer, and the real oras CLI reads the index
// with its artifact type.
func TestPushJoint(t *testing.T) {
	reg := registry.StartForTest(t)
	ref := reg.Host() + "/models/detector:1.0.0"
	edge, cloud := t.TempDir(), t.TempDir()
	writeTree(t, edge, map[string]string{"backbone.onnx": "edge half"})
	writeTree(t, cloud, map[string]string{"head.onnx": "cloud half"})
	digest := strings.TrimSpace(must(t, barge(t, "push", "--joint", "edge="+edge, "--joint", "cloud="+cloud, ref)).stdout)

	out := must(t, barge(t, "inspect", ref)).stdout
	for _, want := range []string{"joint", digest, "in 2 files", "Edge part:", "backbone.onnx", "Cloud part:", "head.onnx"} {
		if !strings.Contains(out, want) {
			t.Errorf("barge inspect of a joint model does not show %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "backbone.onnx") > strings.Index(out, "Cloud part:") || strings.Index(out, "head.onnx") < strings.Index(out, "Cloud part:") {
		t.Errorf("barge inspect shows the files under the wrong part:\n%s", out)
	}
	var shown struct {
		Parts map[string]struct {
			Kind  string `json:"kind"`
			Files []struct {
				Path string `json:"path"`
			} `json:"files"`
		} `json:"parts"`
	}
	if err := json.Unmarshal([]byte(must(t, barge(t, "inspect", "-o", "json", ref)).stdout), &shown); err != nil {
		t.Fatal(err)
	}
	if e, c := shown.Parts["edge"], shown.Parts["cloud"]; e.Kind != "model" || len(e.Files) != 1 || e.Files[0].Path != "backbone.onnx" ||
		c.Kind != "model" || len(c.Files) != 1 || c.Files[0].Path != "head.onnx" {
		t.Errorf("barge inspect -o json shows the parts as %+v; want an edge model with backbone.onnx and a cloud model with head.onnx", shown.Parts)
	}
	var index struct {
		ArtifactType string `json:"artifactType"`
		Manifests    []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal([]byte(must(t, oras(t, "manifest", "fetch", "--plain-http", ref)).stdout), &index); err != nil {
		t.Fatal(err)
	}
	if index.ArtifactType != "application/vnd.barge.joint.v1+json" || len(index.Manifests) != 2 ||
		index.Manifests[0].Annotations["dev.barge.layer"] != "edge" || index.Manifests[1].Annotations["dev.barge.layer"] != "cloud" {
		t.Errorf("oras reads the index as %+v; want the joint artifact type with an edge and a cloud member", index)
	}
	for _, bad := range [][]string{
		{"push", "--joint", "edge=" + edge, ref},
		{"push", "--joint", "edge=" + edge, "--joint", "fog=" + cloud, ref},
	} {
		if r := barge(t, bad...); r.err == nil || !strings.Contains(r.stderr, "--joint") {
			t.Errorf("barge %s: %s; want an error about --joint", strings.Join(bad, " "), r)
		}
	}
}

// barge versions --require --order makes the choice an InferenceModel's
// spec.selection makes: the best passing version is chosen, the others say
// why not; attaching better metrics to another version changes the choice.
func TestVersionsChoose(t *testing.T) {
	reg := registry.StartForTest(t)
	repo := reg.Host() + "/models/chosen"
	src := t.TempDir()
	for i, v := range []struct{ tag, metrics string }{
		{"1.0.0", `{"accuracy": 0.95, "latency_ms": 40}`},
		{"1.1.0", `{"accuracy": 0.92, "latency_ms": 12}`},
		{"1.2.0", `{"accuracy": 0.85, "latency_ms": 9}`},
		{"1.3.0", ""},
	} {
		writeTree(t, src, map[string]string{"w.bin": strings.Repeat("w", i+1)})
		must(t, barge(t, "push", src, repo+":"+v.tag, "--task", "image-classification"))
		if v.metrics != "" {
			f := filepath.Join(t.TempDir(), "m.json")
			os.WriteFile(f, []byte(v.metrics), 0o644)
			must(t, barge(t, "metrics", "attach", repo+":"+v.tag, f))
		}
	}
	choose := func() (string, map[string]string) {
		t.Helper()
		var rows []struct {
			Tag     string `json:"tag"`
			Chosen  bool   `json:"chosen"`
			Refused string `json:"refused"`
		}
		out := must(t, barge(t, "versions", repo, "-o", "json",
			"--require", "metrics.accuracy >= 0.9", "--require", `metadata.task == "image-classification"`,
			"--require", "metrics.latency_ms <= 20", "--order", "metrics.accuracy")).stdout
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatal(err)
		}
		chosen, refused := "", map[string]string{}
		for _, r := range rows {
			if r.Chosen {
				chosen = r.Tag
			}
			if r.Refused != "" {
				refused[r.Tag] = r.Refused
			}
		}
		return chosen, refused
	}
	chosen, refused := choose()
	if chosen != "1.1.0" || !strings.Contains(refused["1.0.0"], "latency_ms <= 20") || !strings.Contains(refused["1.2.0"], "accuracy >= 0.9") || refused["1.3.0"] == "" {
		t.Errorf("chose %q, refused %v; want 1.1.0, with 1.0.0 too slow, 1.2.0 not accurate enough, 1.3.0 without metrics", chosen, refused)
	}
	f := filepath.Join(t.TempDir(), "m.json")
	os.WriteFile(f, []byte(`{"accuracy": 0.97, "latency_ms": 10}`), 0o644)
	must(t, barge(t, "metrics", "attach", repo+":1.3.0", f))
	if chosen, _ := choose(); chosen != "1.3.0" {
		t.Errorf("after 1.3.0 got better metrics the choice is %q, want 1.3.0", chosen)
	}
	// The table ends with the reason an InferenceModel's status.resolved shows.
	table := must(t, barge(t, "versions", repo, "--require", "metrics.accuracy >= 0.9", "--order", "metrics.accuracy")).stdout
	if want := "chosen: 1.3.0 (accuracy 0.97, best of 4; 1 fails metrics.accuracy >= 0.9)"; !strings.Contains(table, want) {
		t.Errorf("versions table:\n%s\nwant a last line %q", table, want)
	}
	if r := barge(t, "versions", repo, "--require", "metrics.accuracy >="); r.err == nil || !strings.Contains(r.stderr, `require "metrics.accuracy >="`) {
		t.Errorf("a malformed --require: %s; want an error naming it", r)
	}
}
