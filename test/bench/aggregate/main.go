//go:build unix

// Command aggregate benchmarks `barge aggregate fedavg`: a round of 3
// updates of a 1 GiB float32 model, pushed to the embedded registry on
// loopback, averaged by the real barge binary (download, average, pack,
// push), with its wall time, throughput in MB/s of updates read and peak
// RSS through the test/bench/rusage launcher; and the averaging alone
// (fedavg.Average in-process over the same files on disk). Run it with
// `make bench`; it writes its section of docs/benchmarks.md when given -doc.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/fedavg"
	"github.com/bargeml/barge/registry"
	"github.com/bargeml/barge/safetensors"
	"github.com/bargeml/barge/test/bench/benchdoc"
)

type config struct {
	bin, doc, workdir string
	modelMiB          int
	updates, runs     int
	keep              bool
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin", "directory holding barge")
	flag.StringVar(&c.doc, "doc", "", "markdown file whose aggregation section is replaced with the results")
	flag.StringVar(&c.workdir, "workdir", os.TempDir(), "where the registry, the models and barge's work directory go (needs ~15 GiB with the defaults)")
	flag.IntVar(&c.modelMiB, "model-mib", 1024, "size of the float32 model, MiB (a multiple of 128)")
	flag.IntVar(&c.updates, "updates", 3, "updates in the round")
	flag.IntVar(&c.runs, "runs", 1, "runs of barge aggregate; the median is reported")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory")
	flag.Parse()
	if c.modelMiB < 128 || c.modelMiB%128 != 0 || c.updates < 1 || c.runs < 1 {
		fmt.Fprintln(os.Stderr, "bench aggregate: -model-mib must be a multiple of 128, -updates and -runs at least 1")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "bench aggregate:", err)
		os.Exit(1)
	}
}

type measure struct {
	wall     time.Duration
	rss, cpu int64
	// download is the time to the "Averaging" line (listing, fetching the
	// base and the updates); average to the "Pushed" line (averaging,
	// packing, uploading); the rest is metrics and promotion.
	download, average time.Duration
}

// layer is one 128 MiB weight matrix of the model.
var layerShape = []int64{4096, 8192}

func modelTensors(mib int) []safetensors.Tensor {
	var ts []safetensors.Tensor
	for i := range mib / 128 {
		ts = append(ts,
			safetensors.Tensor{Name: fmt.Sprintf("layers.%d.weight", i), DType: safetensors.F32, Shape: layerShape},
			safetensors.Tensor{Name: fmt.Sprintf("layers.%d.bias", i), DType: safetensors.F32, Shape: layerShape[1:]})
	}
	return ts
}

func run(ctx context.Context, c config) error {
	work, err := os.MkdirTemp(c.workdir, "barge-bench-aggregate-")
	if err != nil {
		return err
	}
	if !c.keep {
		defer os.RemoveAll(work)
	}
	barge, err := filepath.Abs(filepath.Join(c.bin, "barge"))
	if err != nil {
		return err
	}
	launcher := filepath.Join(work, "rusage")
	if out, err := exec.Command("go", "build", "-o", launcher, "./test/bench/rusage").CombinedOutput(); err != nil {
		return fmt.Errorf("build the rusage launcher: %v\n%s", err, out)
	}
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0", Root: filepath.Join(work, "registry")})
	if err != nil {
		return err
	}
	defer reg.Close(context.Background())
	repo, err := remote.NewRepository(reg.Addr() + "/models/bench")
	if err != nil {
		return err
	}
	repo.PlainHTTP = true
	// As barge does: the registry refuses deletes, and a stale referrers
	// index is a few hundred bytes.
	repo.SkipReferrersGC = true

	tensors := modelTensors(c.modelMiB)
	benchdoc.Logf("writing and pushing a %d MiB float32 model and %d updates of it", c.modelMiB, c.updates)
	baseDir := filepath.Join(work, "base")
	if err := writeModel(filepath.Join(baseDir, "model.safetensors"), tensors, 0); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(baseDir, "train"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(baseDir, "train", "train.py"), []byte("print('train')\n"), 0o644); err != nil {
		return err
	}
	base, err := artifact.Pack(ctx, repo, baseDir, artifact.PackOptions{Metadata: artifact.Metadata{Name: "bench", Framework: "safetensors"}})
	if err != nil {
		return err
	}
	var updateDirs []string
	var samples []int64
	var updateBytes int64
	for i := range c.updates {
		dir := filepath.Join(work, fmt.Sprintf("update-%d", i))
		updateDirs = append(updateDirs, dir)
		samples = append(samples, int64(1000*(i+1)))
		if err := writeUpdate(dir, tensors, uint64(i+1), samples[i]); err != nil {
			return err
		}
		fi, err := os.Stat(filepath.Join(dir, "model.safetensors"))
		if err != nil {
			return err
		}
		updateBytes += fi.Size()
		if _, err := artifact.PackUpdate(ctx, repo, dir, artifact.Update{Node: fmt.Sprintf("edge-%d", i+1), Round: 1, Run: "bench", Base: base}); err != nil {
			return err
		}
	}

	var ms []measure
	var digests []string
	tmp := filepath.Join(work, "tmp")
	for i := range c.runs {
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return err
		}
		m, out, err := timed(launcher, []string{"TMPDIR=" + tmp}, barge, "aggregate", "fedavg",
			"--base", reg.Addr()+"/models/bench@"+string(base.Digest), "--round", "1", "--run", "bench",
			"--push", fmt.Sprintf("%s/models/bench:r1-%d", reg.Addr(), i))
		if err != nil {
			return err
		}
		d, err := checkResult(out, c.updates)
		if err != nil {
			return err
		}
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			return fmt.Errorf("barge aggregate left %d entries in its TMPDIR", len(left))
		}
		ms = append(ms, m)
		digests = append(digests, d)
		benchdoc.Logf("run %d: %s (download %s, average and push %s), %.0f MB/s of updates, peak RSS %d MiB, CPU %s", i+1, m.wall.Round(time.Millisecond),
			m.download.Round(time.Millisecond), m.average.Round(time.Millisecond),
			float64(updateBytes)/1e6/m.wall.Seconds(), m.rss>>20, time.Duration(m.cpu).Round(time.Millisecond))
	}
	for _, d := range digests[1:] {
		if d != digests[0] {
			return fmt.Errorf("runs gave different digests: %v", digests)
		}
	}

	avg, avgCPU, err := averageInProcess(ctx, work, baseDir, updateDirs, samples)
	if err != nil {
		return err
	}
	benchdoc.Logf("averaging alone: %s, %.0f MB/s of updates, CPU %s", avg.Round(time.Millisecond), float64(updateBytes)/1e6/avg.Seconds(), avgCPU.Round(time.Millisecond))

	m := median(ms)
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %d CPUs; load average %s; %d run(s) of barge aggregate, median.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), benchdoc.LoadAvg(), c.runs)
	fmt.Fprintln(&b, "| round | step | wall | updates read (per wall second) | CPU | updates read per CPU second | peak RSS |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|")
	cpu := time.Duration(m.cpu)
	fmt.Fprintf(&b, "| %d updates of a %d MiB F32 model (%d tensors) | `barge aggregate fedavg`: download, average, pack, push, metrics | %s | %.0f MB/s | %s | %.0f MB/s | %d MiB |\n",
		c.updates, c.modelMiB, len(tensors), m.wall.Round(time.Millisecond), float64(updateBytes)/1e6/m.wall.Seconds(),
		cpu.Round(time.Millisecond), float64(updateBytes)/1e6/cpu.Seconds(), m.rss>>20)
	fmt.Fprintf(&b, "| same files on disk | averaging alone (`fedavg.Average`, 1 MiB chunks, in-process) | %s | %.0f MB/s | %s | %.0f MB/s | — |\n",
		avg.Round(time.Millisecond), float64(updateBytes)/1e6/avg.Seconds(), avgCPU.Round(time.Millisecond), float64(updateBytes)/1e6/avgCPU.Seconds())
	fmt.Fprintf(&b, "\nWithin the command's %s (from its stderr lines, as they arrive): listing and downloading the base and the updates %s; averaging, packing and pushing the new model %s; attaching the metrics, removing the work directory and exiting %s.\n",
		m.wall.Round(time.Millisecond), m.download.Round(time.Millisecond), m.average.Round(time.Millisecond), (m.wall - m.download - m.average).Round(time.Millisecond))
	fmt.Print("\n" + b.String())
	if c.doc != "" {
		return benchdoc.WriteSection(c.doc, "aggregate", b.String())
	}
	return nil
}

// writeModel streams a safetensors file of finite pseudo-random float32
// values in [-1, 1) through the package's Writer.
func writeModel(name string, tensors []safetensors.Tensor, seed uint64) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := safetensors.NewWriter(bw, map[string]string{"format": "pt"}, tensors)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(seed, 7))
	buf := make([]byte, 1<<20)
	for _, t := range w.Tensors() {
		for left := t.Size(); left > 0; {
			n := min(left, int64(len(buf)))
			for i := int64(0); i < n; i += 4 {
				binary.LittleEndian.PutUint32(buf[i:], math.Float32bits(float32(int32(r.Uint32()>>8)-1<<23)/(1<<23)))
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			left -= n
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func writeUpdate(dir string, tensors []safetensors.Tensor, seed uint64, samples int64) error {
	if err := writeModel(filepath.Join(dir, "model.safetensors"), tensors, seed); err != nil {
		return err
	}
	info, err := json.Marshal(artifact.UpdateInfo{Samples: samples, Metrics: map[string]float64{"accuracy": 0.5 + float64(seed)/10}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, artifact.UpdateInfoFile), info, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, artifact.UpdateDoneFile), nil, 0o644)
}

// averageInProcess times fedavg.Average over the files on disk: wall time,
// and the process's CPU time (the registry in it is idle meanwhile).
func averageInProcess(ctx context.Context, work, baseDir string, updateDirs []string, samples []int64) (wall, cpu time.Duration, err error) {
	open := func(dir string) (*safetensors.File, *os.File, error) {
		f, err := os.Open(filepath.Join(dir, "model.safetensors"))
		if err != nil {
			return nil, nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			return nil, nil, err
		}
		sf, err := safetensors.Open(f, fi.Size())
		return sf, f, err
	}
	base, bf, err := open(baseDir)
	if err != nil {
		return 0, 0, err
	}
	defer bf.Close()
	var updates []fedavg.Update
	for i, d := range updateDirs {
		sf, f, err := open(d)
		if err != nil {
			return 0, 0, err
		}
		defer f.Close()
		updates = append(updates, fedavg.Update{Node: fmt.Sprintf("edge-%d", i+1), Samples: samples[i], File: sf})
	}
	out, err := os.Create(filepath.Join(work, "averaged.safetensors"))
	if err != nil {
		return 0, 0, err
	}
	defer out.Close()
	w := bufio.NewWriterSize(out, 1<<20)
	start, cpu0 := time.Now(), processCPU()
	if err := fedavg.Average(ctx, w, base, updates, fedavg.Options{}); err != nil {
		return 0, 0, err
	}
	if err := w.Flush(); err != nil {
		return 0, 0, err
	}
	return time.Since(start), processCPU() - cpu0, out.Close()
}

// processCPU is this process's user and system time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func checkResult(out []byte, updates int) (string, error) {
	var res struct {
		Digest  string
		Updates []json.RawMessage
		Metrics map[string]float64
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return "", fmt.Errorf("barge aggregate printed no JSON result: %v\n%s", err, out)
	}
	if len(res.Updates) != updates || res.Digest == "" || len(res.Metrics) == 0 {
		return "", fmt.Errorf("barge aggregate averaged %d updates (want %d), digest %q, metrics %v", len(res.Updates), updates, res.Digest, res.Metrics)
	}
	return res.Digest, nil
}

func median(ms []measure) measure {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b measure) int { return int(a.wall - b.wall) })
	return s[len(s)/2]
}

// timed runs a command through the rusage launcher and returns its wall
// time, peak RSS and CPU time, and its standard output.
func timed(launcher string, env []string, args ...string) (measure, []byte, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return measure{}, nil, err
	}
	defer r.Close()
	var out bytes.Buffer
	errb := &phaseWriter{start: time.Now()}
	cmd := exec.Command(launcher, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, errb
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Run()
	w.Close()
	if err != nil {
		return measure{}, nil, fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, errb.buf.String())
	}
	var m measure
	var wall int64
	if _, err := fmt.Fscan(r, &m.rss, &wall, &m.cpu); err != nil {
		return measure{}, nil, fmt.Errorf("read the launcher's report: %w", err)
	}
	m.wall = time.Duration(wall)
	m.download = errb.at["Averaging"]
	m.average = errb.at["Pushed"] - m.download
	return m, out.Bytes(), nil
}

// phaseWriter keeps a command's stderr and notes when the first line
// starting with each word arrived.
type phaseWriter struct {
	// buf is a field, not embedded: an embedded Buffer's ReadFrom would let
	// io.Copy bypass Write.
	buf     bytes.Buffer
	start   time.Time
	at      map[string]time.Duration
	partial []byte
}

func (p *phaseWriter) Write(b []byte) (int, error) {
	now := time.Since(p.start)
	if p.at == nil {
		p.at = map[string]time.Duration{}
	}
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		if f := strings.Fields(string(p.partial[:i])); len(f) > 0 {
			if _, ok := p.at[f[0]]; !ok {
				p.at[f[0]] = now
			}
		}
		p.partial = p.partial[i+1:]
	}
	return p.buf.Write(b)
}
