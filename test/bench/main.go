//go:build linux

// Command bench measures `barge pull` side by side with the oras CLI (and
// crane, for the cold pull) on the embedded registry over loopback: cold
// pull time and peak memory, bytes the registry sends after a cut
// connection and after a SIGKILL, bytes for a new version that shares
// layers, and the time to resume a large partial. Every figure comes from
// one run, with the tools alternating, so that a loaded machine slows them
// alike; results are medians, printed as ratios.
//
// Run it with `make bench`; it is not part of `make test`. It listens on
// loopback only, stops by itself, and removes its files (several GiB).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bargeml/barge/registry"
)

type config struct {
	bin        string
	workdir    string
	doc        string
	only       map[string]bool
	runs       int
	byteRuns   int
	layerSize  int64
	layers     int
	bigSize    int64
	bigRuns    int
	cpuprofile string
	noSync     bool
	timeline   bool
	keep       bool
	timeout    time.Duration
}

var metrics = []string{"cold", "coldbig", "breakdown", "cut", "kill", "dedup", "resume"}

func main() {
	var cfg config
	var only string
	flag.StringVar(&cfg.bin, "bin", "bin", "directory holding barge, oras and (optionally) crane")
	flag.StringVar(&cfg.workdir, "workdir", os.TempDir(), "where the registry, caches and pulled files go (needs ~14 GiB with the defaults)")
	flag.StringVar(&cfg.doc, "doc", "", "markdown file whose generated edge-puller section is replaced with the results (e.g. docs/benchmarks.md)")
	flag.StringVar(&only, "only", strings.Join(metrics, ","), "comma-separated subset of "+strings.Join(metrics, ","))
	flag.IntVar(&cfg.runs, "runs", 9, "timed rounds (cold pull, breakdown, resume latency); the median is reported")
	flag.IntVar(&cfg.byteRuns, "byte-runs", 3, "runs per tool of the byte-counting scenarios")
	flag.Int64Var(&cfg.layerSize, "layer-mib", 256, "size of each of the model's files, MiB")
	flag.IntVar(&cfg.layers, "layers", 4, "files (layers) in the model")
	flag.Int64Var(&cfg.bigSize, "big-mib", 4096, "size of the single-file artifact for the cold pull of one large layer and the resume latency, MiB")
	flag.IntVar(&cfg.bigRuns, "big-runs", 5, "timed rounds of the cold pull of the single large file")
	flag.StringVar(&cfg.cpuprofile, "cpuprofile", "", "instead of the benchmark, pull the model once in-process (fetch and unpack, as barge pull does) and write a CPU profile here")
	flag.BoolVar(&cfg.noSync, "nosync", false, "with -cpuprofile: open the store with NoSync, to see what fsync costs")
	flag.BoolVar(&cfg.timeline, "timeline", false, "instead of the benchmark, pull the model once with each tool and print its requests against time")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (for debugging)")
	flag.DurationVar(&cfg.timeout, "timeout", 25*time.Minute, "stop everything after this long")
	flag.Parse()
	cfg.layerSize <<= 20
	cfg.bigSize <<= 20
	cfg.only = map[string]bool{}
	for _, m := range strings.Split(only, ",") {
		if m = strings.TrimSpace(m); !slices.Contains(metrics, m) {
			fmt.Fprintf(os.Stderr, "bench: -only %q: want some of %s\n", m, strings.Join(metrics, ","))
			os.Exit(2)
		}
		cfg.only[m] = true
	}
	if cfg.runs < 1 || cfg.byteRuns < 1 || cfg.bigRuns < 1 || cfg.layers < 2 {
		fmt.Fprintln(os.Stderr, "bench: -runs, -big-runs and -byte-runs must be at least 1, -layers at least 2")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) (err error) {
	began := time.Now()
	bin, err := filepath.Abs(cfg.bin)
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, barge: filepath.Join(bin, "barge"), oras: filepath.Join(bin, "oras")}
	for _, p := range []string{b.barge, b.oras} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w: run make build tools (or make bench)", err)
		}
	}
	if c := filepath.Join(bin, "crane"); fileExists(c) {
		b.crane = c
	}
	mach := describeMachine(cfg.workdir)

	if b.work, err = os.MkdirTemp(cfg.workdir, "barge-bench-"); err != nil {
		return err
	}
	defer func() {
		if cfg.keep {
			fmt.Fprintln(os.Stderr, "bench: kept", b.work)
			return
		}
		if rerr := os.RemoveAll(b.work); rerr != nil && err == nil {
			err = fmt.Errorf("clean up: %w", rerr)
		}
	}()
	b.rusage = filepath.Join(b.work, "rusage")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", b.rusage, "github.com/bargeml/barge/test/bench/rusage").CombinedOutput(); err != nil {
		return fmt.Errorf("build rusage (run the bench from the repository): %w\n%s", err, out)
	}
	dockerConfig := filepath.Join(b.work, "docker")
	if err := os.Mkdir(dockerConfig, 0o700); err != nil {
		return err
	}
	// No credentials from the user's Docker config: the registry has no auth.
	b.env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig, "NO_COLOR=1")

	b.reg, err = registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0", Root: filepath.Join(b.work, "registry")})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.reg.Close(sctx)
	}()
	if b.proxy, err = startProxy(b.reg.URL()); err != nil {
		return err
	}
	defer b.proxy.close()

	if err := b.setup(ctx); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	switch {
	case cfg.cpuprofile != "":
		return b.profile(ctx, cfg.cpuprofile)
	case cfg.timeline:
		return b.timeline(ctx)
	}
	mach.loadBefore = loadAverage()

	var (
		rows   []row
		stages []stage
	)
	steps := []struct {
		name string
		fn   func(context.Context) ([]row, error)
	}{
		{"cold", b.cold},
		{"coldbig", b.coldBig},
		{"breakdown", func(ctx context.Context) (_ []row, err error) {
			stages, err = b.breakdown(ctx)
			return nil, err
		}},
		{"cut", b.cut}, {"kill", b.kill}, {"dedup", b.dedup}, {"resume", b.resume},
	}
	for _, s := range steps {
		if !cfg.only[s.name] {
			continue
		}
		logf("== %s", s.name)
		r, err := s.fn(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		rows = append(rows, r...)
	}
	mach.loadAfter = loadAverage()
	mach.took = time.Since(began).Round(time.Second)

	fmt.Println()
	printTable(os.Stdout, rows)
	for _, r := range rows {
		if r.note != "" {
			fmt.Printf("  %s: %s\n", r.metric, r.note)
		}
	}
	if len(stages) > 0 {
		fmt.Println()
		printBreakdown(os.Stdout, stages)
	}
	fmt.Printf("\n%s\n", mach.oneLine())
	if cfg.doc != "" {
		if err := writeDoc(cfg.doc, rows, stages, mach, b); err != nil {
			return err
		}
		logf("wrote %s", cfg.doc)
	}
	return ctx.Err()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
