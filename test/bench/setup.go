//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bargeml/barge/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
)

type bench struct {
	cfg                 config
	barge, oras, crane  string // binaries; crane is "" when not built
	rusage              string // rusage/main.go, built into work
	work                string
	env                 []string
	reg                 *registry.Registry
	proxy               *proxy
	model, modelV2, big artifactInfo
}

// artifactInfo is one pushed artifact.
type artifactInfo struct {
	name   string // repository:tag
	layers []ocispec.Descriptor
	files  map[string]int64 // title → size, to check what a tool wrote
}

func (a artifactInfo) size() int64 {
	var n int64
	for _, l := range a.layers {
		n += l.Size
	}
	return n
}

func (b *bench) direct(a artifactInfo) string  { return b.reg.Host() + "/" + a.name }
func (b *bench) proxied(a artifactInfo) string { return b.proxy.host + "/" + a.name }

// setup pushes the artifacts with barge push, straight to the registry:
// the model (layers × layerSize of random bytes, so nothing compresses),
// its next version with the last file changed, and the big single file.
func (b *bench) setup(ctx context.Context) error {
	cfg := b.cfg
	src := filepath.Join(b.work, "src")
	v1, v2 := filepath.Join(src, "v1"), filepath.Join(src, "v2")
	for _, d := range []string{v1, v2} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	logf("generating %d × %d MiB of random bytes", cfg.layers, cfg.layerSize>>20)
	for i := range cfg.layers {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, cfg.layers)
		if err := writeRandom(filepath.Join(v1, name), cfg.layerSize, uint64(i+1)); err != nil {
			return err
		}
		if i == cfg.layers-1 {
			if err := writeRandom(filepath.Join(v2, name), cfg.layerSize, 1000); err != nil {
				return err
			}
		} else if err := os.Link(filepath.Join(v1, name), filepath.Join(v2, name)); err != nil {
			return err
		}
	}
	var err error
	if b.model, err = b.push(ctx, v1, "bench/model:1.0.0"); err != nil {
		return err
	}
	if b.cfg.only["dedup"] {
		if b.modelV2, err = b.push(ctx, v2, "bench/model:1.1.0"); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(src); err != nil {
		return err
	}
	if (b.cfg.only["resume"] || b.cfg.only["coldbig"]) && b.cfg.cpuprofile == "" {
		big := filepath.Join(b.work, "src-big")
		if err := os.Mkdir(big, 0o755); err != nil {
			return err
		}
		logf("generating %d MiB of random bytes", cfg.bigSize>>20)
		if err := writeRandom(filepath.Join(big, "weights.bin"), cfg.bigSize, 2000); err != nil {
			return err
		}
		if b.big, err = b.push(ctx, big, "bench/big:1.0.0"); err != nil {
			return err
		}
		if err := os.RemoveAll(big); err != nil {
			return err
		}
	}
	return nil
}

// writeRandom writes size bytes from a seeded ChaCha8 stream: as
// incompressible as crypto/rand and several times faster.
func writeRandom(path string, size int64, seed uint64) error {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	r := rand.NewChaCha8(s)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 4<<20)
	for size > 0 {
		n := min(int64(len(buf)), size)
		r.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		size -= n
	}
	return f.Close()
}

func (b *bench) push(ctx context.Context, dir, name string) (artifactInfo, error) {
	logf("barge push %s", name)
	ref := b.reg.Host() + "/" + name
	r := b.run(ctx, []string{b.barge, "push", dir, ref})
	if r.err != nil {
		return artifactInfo{}, fmt.Errorf("barge push: %w\n%s", r.err, r.stderr)
	}
	repo, err := remote.NewRepository(ref)
	if err != nil {
		return artifactInfo{}, err
	}
	repo.PlainHTTP = true
	desc, err := repo.Resolve(ctx, ref)
	if err != nil {
		return artifactInfo{}, err
	}
	rc, err := repo.Fetch(ctx, desc)
	if err != nil {
		return artifactInfo{}, err
	}
	defer rc.Close()
	raw, err := content.ReadAll(rc, desc)
	if err != nil {
		return artifactInfo{}, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return artifactInfo{}, err
	}
	a := artifactInfo{name: name, layers: m.Layers, files: map[string]int64{}}
	for _, l := range m.Layers {
		a.files[l.Annotations[ocispec.AnnotationTitle]] = l.Size
	}
	return a, nil
}

// result is one finished child process.
type result struct {
	wall   time.Duration
	rss    int64         // peak resident set, bytes; measured runs only
	cpu    time.Duration // user + system; measured runs only
	killed bool          // ended by SIGKILL
	stderr string
	err    error
}

// process is a started child.
type process struct {
	cmd    *exec.Cmd
	start  time.Time
	stderr *bytes.Buffer
	report *os.File // the launcher's report, for measured runs
}

// start runs argv in its own process group, so that a kill reaches a tool
// started by rusage too. If measured, argv runs under rusage (see
// rusage/main.go for why), and wait returns its peak RSS and wall time.
func (b *bench) start(ctx context.Context, argv []string, measured bool) (*process, error) {
	var report, reportW *os.File
	if measured {
		var err error
		if report, reportW, err = os.Pipe(); err != nil {
			return nil, err
		}
		argv = append([]string{b.rusage}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = b.env
	cmd.Dir = b.work
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if reportW != nil {
		cmd.ExtraFiles = []*os.File{reportW}
	}
	p := &process{cmd: cmd, stderr: &stderr, report: report}
	p.start = time.Now()
	err := cmd.Start()
	if reportW != nil {
		reportW.Close()
	}
	if err != nil {
		if report != nil {
			report.Close()
		}
		return nil, err
	}
	return p, nil
}

// kill SIGKILLs the process group.
func (p *process) kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

func (p *process) wait() result {
	err := p.cmd.Wait()
	r := result{wall: time.Since(p.start), stderr: strings.TrimSpace(p.stderr.String()), err: err}
	if ps := p.cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			r.killed = true
		}
	}
	if p.report != nil {
		var rss, wall, cpu int64
		if _, serr := fmt.Fscan(p.report, &rss, &wall, &cpu); serr != nil && r.err == nil {
			r.err = fmt.Errorf("read the peak RSS from rusage: %w", serr)
		}
		r.rss, r.wall, r.cpu = rss, time.Duration(wall), time.Duration(cpu)
		p.report.Close()
	}
	if len(r.stderr) > 4000 {
		r.stderr = "…" + r.stderr[len(r.stderr)-4000:]
	}
	return r
}

func (b *bench) run(ctx context.Context, argv []string) result {
	return b.runMeasured(ctx, argv, false)
}

func (b *bench) runMeasured(ctx context.Context, argv []string, measured bool) result {
	p, err := b.start(ctx, argv, measured)
	if err != nil {
		return result{err: err}
	}
	return p.wait()
}

// A tool is one pull client, as a user runs it.
type tool struct {
	name string
	// argv pulls ref into dir; cache is the local store where the tool has
	// one (barge's --cache).
	argv func(ref, dir, cache string) []string
}

func (b *bench) bargeTool() tool {
	return tool{"barge", func(ref, dir, cache string) []string {
		return []string{b.barge, "pull", "--cache", cache, ref, dir}
	}}
}

// bargeOneStream is barge with segments turned off: what a large layer
// costs with one stream, for comparison.
func (b *bench) bargeOneStream() tool {
	return tool{"barge, one stream", func(ref, dir, cache string) []string {
		return []string{b.barge, "pull", "--segments", "1", "--cache", cache, ref, dir}
	}}
}

func (b *bench) orasTool() tool {
	return tool{"oras", func(ref, dir, _ string) []string {
		return []string{b.oras, "pull", "--plain-http", "-o", dir, ref}
	}}
}

// craneTool writes an OCI image layout: crane's closest equivalent of
// fetching every layer into a local store (crane export flattens image
// filesystem layers, which a model does not have).
func (b *bench) craneTool() tool {
	return tool{"crane", func(ref, dir, _ string) []string {
		return []string{b.crane, "pull", "--insecure", "--format=oci", ref, dir}
	}}
}

// checkFiles verifies that a pull wrote every file of a at its size (barge
// and oras write files by title; crane writes blobs by digest).
func checkFiles(t tool, dir string, a artifactInfo) error {
	if t.name == "crane" {
		for _, l := range a.layers {
			fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256", l.Digest.Encoded()))
			if err != nil || fi.Size() != l.Size {
				return fmt.Errorf("crane did not write blob %s whole: %v", l.Digest, err)
			}
		}
		return nil
	}
	for name, size := range a.files {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("%s did not write %s: %w", t.name, name, err)
		}
		if fi.Size() != size {
			return fmt.Errorf("%s wrote %s with %d bytes, want %d", t.name, name, fi.Size(), size)
		}
	}
	return nil
}

// alternate returns the tools in order on even rounds and reversed on odd
// ones, so that neither always runs right after the other's disk writes.
func alternate(tools []tool, round int) []tool {
	out := slices.Clone(tools)
	if round%2 == 1 {
		slices.Reverse(out)
	}
	return out
}
