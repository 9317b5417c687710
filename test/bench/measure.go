//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// coldRuns pulls a with each tool runs times, alternating, after an
// untimed warm-up round, and returns each tool's measured runs.
func (b *bench) coldRuns(ctx context.Context, tools []tool, a artifactInfo, runs int) (map[string][]result, error) {
	measured := map[string][]result{}
	ref := b.direct(a)
	defer os.RemoveAll(filepath.Join(b.work, "cold"))
	for round := 0; round <= runs; round++ {
		for _, t := range alternate(tools, round) {
			base := filepath.Join(b.work, "cold", t.name)
			if err := os.RemoveAll(base); err != nil {
				return nil, err
			}
			dir, cache := filepath.Join(base, "out"), filepath.Join(base, "cache")
			syscall.Sync()
			r := b.runMeasured(ctx, t.argv(ref, dir, cache), true)
			if r.err != nil {
				return nil, fmt.Errorf("%s pull: %w\n%s", t.name, r.err, r.stderr)
			}
			if err := checkFiles(t, dir, a); err != nil {
				return nil, err
			}
			// Files of GiBs are not left in the page cache for the next
			// tool to evict.
			if err := os.RemoveAll(base); err != nil {
				return nil, err
			}
			if round == 0 {
				logf("%s warm-up %.2fs", t.name, r.wall.Seconds())
				continue
			}
			logf("%s run %d: %.2fs, CPU %.2fs, peak RSS %d MiB", t.name, round, r.wall.Seconds(), r.cpu.Seconds(), r.rss>>20)
			measured[t.name] = append(measured[t.name], r)
		}
	}
	return measured, nil
}

// row is one line of the results table. Values are medians over the runs;
// samples keeps every run for the record.
type row struct {
	metric      string
	barge, oras string
	crane       string
	ratio       float64 // barge / oras; 0 when it does not apply
	target      string
	met         bool // against target; a row without a target has none
	note        string
	unit        string // of the samples
	samples     map[string][]string
}

// cold times full pulls of the model into empty directories (barge with a
// fresh --cache each run, fsync on as by default), alternating the tools,
// after one untimed warm-up round. Before each run every dirty page is
// written back, so that no run pays for the previous one's writes.
func (b *bench) cold(ctx context.Context) ([]row, error) {
	tools := []tool{b.bargeTool(), b.orasTool()}
	if b.crane != "" {
		tools = append(tools, b.craneTool())
	}
	runs, err := b.coldRuns(ctx, tools, b.model, b.cfg.runs)
	if err != nil {
		return nil, err
	}
	size := fmt.Sprintf("%d MiB in %d layers", b.model.size()>>20, len(b.model.layers))
	return coldRows(tools, runs, size, 0.9, "≤ 0.9"), nil
}

// coldBig times full pulls of the single large file, as cold does: barge
// with its defaults (segments where the origin is far enough away), barge
// with one stream, and oras.
func (b *bench) coldBig(ctx context.Context) ([]row, error) {
	tools := []tool{b.bargeTool(), b.orasTool(), b.bargeOneStream()}
	runs, err := b.coldRuns(ctx, tools, b.big, b.cfg.bigRuns)
	if err != nil {
		return nil, err
	}
	rows := coldRows(tools[:2], runs, fmt.Sprintf("%d MiB in 1 layer", b.big.size()>>20), 1.0, "≤ 1.0")
	one := runs["barge, one stream"]
	var wall, oras []time.Duration
	for i, r := range one {
		wall = append(wall, r.wall)
		oras = append(oras, runs["oras"][i].wall)
	}
	rows[0].note = fmt.Sprintf("barge with its defaults, which fetch a large layer in up to 4 Range segments only from an origin whose metadata answers take 10 ms or more (on loopback: one stream); with --segments 1 it took %.2f s, %.2f× oras", median(wall).Seconds(), pairedRatio(wall, oras))
	return rows, nil
}

// coldRows makes the time, CPU and peak RSS rows of cold pulls of an
// artifact of the given size.
func coldRows(tools []tool, runs map[string][]result, size string, limit float64, target string) []row {
	wall, cpu, rss := map[string][]time.Duration{}, map[string][]time.Duration{}, map[string][]int64{}
	for name, rs := range runs {
		for _, r := range rs {
			wall[name] = append(wall[name], r.wall)
			cpu[name] = append(cpu[name], r.cpu)
			rss[name] = append(rss[name], r.rss)
		}
	}
	secs := func(xs []time.Duration) string {
		if len(xs) == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f s", median(xs).Seconds())
	}
	mib := func(xs []int64) string {
		if len(xs) == 0 {
			return "—"
		}
		return fmt.Sprintf("%d MiB", median(xs)>>20)
	}
	timeRatio := pairedRatio(wall["barge"], wall["oras"])
	bargeRSS := median(rss["barge"])
	timeRow := row{
		metric: "cold pull, " + size + " (median wall time)",
		barge:  secs(wall["barge"]), oras: secs(wall["oras"]), crane: secs(wall["crane"]),
		ratio: timeRatio, target: target, met: timeRatio <= limit,
		unit: "s", samples: map[string][]string{},
	}
	cpuRow := row{
		metric: "CPU time (user + system) of that pull (median)",
		barge:  secs(cpu["barge"]), oras: secs(cpu["oras"]), crane: secs(cpu["crane"]),
		ratio: pairedRatio(cpu["barge"], cpu["oras"]),
		unit:  "s", samples: map[string][]string{},
	}
	rssRow := row{
		metric: "peak RSS of that pull (median)",
		barge:  mib(rss["barge"]), oras: mib(rss["oras"]), crane: mib(rss["crane"]),
		ratio:  float64(bargeRSS) / float64(median(rss["oras"])),
		target: "≤ 64 MiB", met: bargeRSS <= 64<<20,
		unit: "MiB", samples: map[string][]string{},
	}
	for _, t := range tools {
		for i := range wall[t.name] {
			timeRow.samples[t.name] = append(timeRow.samples[t.name], fmt.Sprintf("%.2f", wall[t.name][i].Seconds()))
			cpuRow.samples[t.name] = append(cpuRow.samples[t.name], fmt.Sprintf("%.2f", cpu[t.name][i].Seconds()))
			rssRow.samples[t.name] = append(rssRow.samples[t.name], fmt.Sprintf("%d", rss[t.name][i]>>20))
		}
	}
	return []row{timeRow, cpuRow, rssRow}
}

// cut pulls the model through the proxy, which cuts the connection once
// half way into the first layer. Barge resumes within the same pull; a tool
// whose pull fails is run again as a user would, into the same directory.
func (b *bench) cut(ctx context.Context) ([]row, error) {
	first := b.model.layers[0]
	total := b.model.size()
	ratios := map[string][]float64{}
	attempts := map[string][]int{}
	var resumes []string // barge's Range after the cut, per round
	ref := b.proxied(b.model)
	for round := range b.cfg.byteRuns {
		for _, t := range alternate([]tool{b.bargeTool(), b.orasTool()}, round) {
			base := filepath.Join(b.work, "cut", t.name)
			if err := os.RemoveAll(base); err != nil {
				return nil, err
			}
			dir, cache := filepath.Join(base, "out"), filepath.Join(base, "cache")
			b.proxy.reset()
			b.proxy.cutOnce(first.Digest.String(), first.Size/2)
			n := 0
			for {
				n++
				r := b.run(ctx, t.argv(ref, dir, cache))
				if r.err == nil {
					break
				}
				if n == 3 || t.name == "barge" || ctx.Err() != nil {
					return nil, fmt.Errorf("%s pull after a cut, attempt %d: %w\n%s", t.name, n, r.err, r.stderr)
				}
				logf("%s failed after the cut (%s); running it again", t.name, lastLine(r.stderr))
			}
			if err := checkFiles(t, dir, b.model); err != nil {
				return nil, err
			}
			if t.name == "barge" {
				rng, err := resumedWithRange(b.proxy.requests(), first.Digest.String(), first.Size/2)
				if err != nil {
					return nil, err
				}
				resumes = append(resumes, rng)
			}
			sent := b.proxy.sentBytes()
			ratio := float64(sent) / float64(total)
			logf("%s run %d: %d MiB sent for %d MiB (%.3f×) in %d run(s)", t.name, round+1, sent>>20, total>>20, ratio, n)
			ratios[t.name] = append(ratios[t.name], ratio)
			attempts[t.name] = append(attempts[t.name], n)
		}
	}
	os.RemoveAll(filepath.Join(b.work, "cut"))
	r := byteRow("bytes sent, one cut at 50% of a layer (× artifact)", ratios, 1.05, "≤ 1.05×")
	r.note = fmt.Sprintf("cut at byte %d of a %d-byte layer; barge continued in the same run with Range %s; runs needed: barge %v, oras %v (oras stops at a cut; it was run again into the same directory)",
		first.Size/2, first.Size, strings.Join(resumes, ", "), attempts["barge"], attempts["oras"])
	return []row{r}, nil
}

// resumedWithRange checks that the cut blob was continued with a Range
// request, not fetched again from 0, and returns that Range.
func resumedWithRange(reqs []blobRequest, digest string, at int64) (string, error) {
	var seen []string
	for _, r := range reqs {
		if r.Digest == digest {
			seen = append(seen, fmt.Sprintf("%q→%d", r.Range, r.Status))
			if r.Status == 206 && rangeStart(r.Range) >= at-16<<20 {
				return r.Range, nil
			}
		}
	}
	return "", fmt.Errorf("barge did not resume blob %s with a Range request after the cut; its requests: %v", digest, seen)
}

// rangeStart reads N from a Range header "bytes=N-"; -1 if there is none.
func rangeStart(h string) int64 {
	first, _, ok := strings.Cut(strings.TrimPrefix(h, "bytes="), "-")
	n, err := strconv.ParseInt(first, 10, 64)
	if !ok || err != nil {
		return -1
	}
	return n
}

// kill SIGKILLs a pull once the registry has sent half the model (the
// proxy kills the client from its copy loop, so the point is exact however
// fast the tool is), then runs it again: barge with the same cache, oras
// into the same directory.
func (b *bench) kill(ctx context.Context) ([]row, error) {
	total := b.model.size()
	ratios := map[string][]float64{}
	ref := b.proxied(b.model)
	for round := range b.cfg.byteRuns {
		for _, t := range alternate([]tool{b.bargeTool(), b.orasTool()}, round) {
			base := filepath.Join(b.work, "kill", t.name)
			if err := os.RemoveAll(base); err != nil {
				return nil, err
			}
			dir, cache := filepath.Join(base, "out"), filepath.Join(base, "cache")
			b.proxy.reset()
			r, err := b.runKilledAt(ctx, t.argv(ref, dir, cache), total/2)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			killedAt := b.proxy.sentBytes()
			before := len(b.proxy.requests())
			if r = b.run(ctx, t.argv(ref, dir, cache)); r.err != nil {
				return nil, fmt.Errorf("%s rerun after SIGKILL: %w\n%s", t.name, r.err, r.stderr)
			}
			if err := checkFiles(t, dir, b.model); err != nil {
				return nil, err
			}
			sent := b.proxy.sentBytes()
			ratio := float64(sent) / float64(total)
			logf("%s run %d: killed at %d MiB, %d MiB sent in all for %d MiB (%.3f×)", t.name, round+1, killedAt>>20, sent>>20, total>>20, ratio)
			if t.name == "barge" {
				logf("  %s", lostAtKill(b.proxy.requests(), before))
			}
			ratios[t.name] = append(ratios[t.name], ratio)
		}
	}
	os.RemoveAll(filepath.Join(b.work, "kill"))
	return []row{byteRow("bytes sent, SIGKILL at 50% + rerun (× artifact)", ratios, 1.10, "≤ 1.10×")}, nil
}

// lostAtKill says, per blob, how much of what the registry sent before the
// kill (requests[:before]) the rerun asked for again.
func lostAtKill(reqs []blobRequest, before int) string {
	sent := map[string]int64{}
	for _, r := range reqs[:before] {
		if r.Digest != "" {
			sent[r.Digest] += r.Bytes
		}
	}
	var parts []string
	for _, r := range reqs[before:] {
		if r.Digest == "" || sent[r.Digest] < 1<<20 {
			continue
		}
		from := max(rangeStart(r.Range), 0)
		parts = append(parts, fmt.Sprintf("%s…: %.1f MiB sent before the kill, rerun from %.1f MiB", r.Digest[7:15], float64(sent[r.Digest])/(1<<20), float64(from)/(1<<20)))
	}
	return strings.Join(parts, "; ")
}

// runKilledAt runs argv and SIGKILLs it when the proxy has sent n bytes.
func (b *bench) runKilledAt(ctx context.Context, argv []string, n int64) (result, error) {
	var proc atomic.Pointer[os.Process]
	tripped := make(chan struct{})
	b.proxy.tripAt(n, func() {
		if p := proc.Load(); p != nil {
			p.Signal(syscall.SIGKILL)
		}
		close(tripped)
	})
	p, err := b.start(ctx, argv, false)
	if err != nil {
		return result{}, err
	}
	proc.Store(p.cmd.Process)
	select {
	case <-tripped:
		p.kill() // in case it tripped before Store
	default:
	}
	r := p.wait()
	if !r.killed {
		return r, fmt.Errorf("the pull ended before the registry had sent %d MiB (%v)\n%s", n>>20, r.err, r.stderr)
	}
	return r, nil
}

// dedup pulls the model's next version, which changes one file: barge with
// a cache holding the first version (a fresh hard-linked copy each run),
// oras into an empty directory, as it has no cache.
func (b *bench) dedup(ctx context.Context) ([]row, error) {
	var changed []int64
	old := map[string]bool{}
	for _, l := range b.model.layers {
		old[l.Digest.String()] = true
	}
	var changedSize int64
	for _, l := range b.modelV2.layers {
		if !old[l.Digest.String()] {
			changed = append(changed, l.Size)
			changedSize += l.Size
		}
	}
	if len(changed) != 1 {
		return nil, fmt.Errorf("the new version changes %d layers, want 1", len(changed))
	}
	base := filepath.Join(b.work, "dedup")
	warm := filepath.Join(base, "warm")
	if r := b.run(ctx, b.bargeTool().argv(b.direct(b.model), filepath.Join(base, "warm-out"), warm)); r.err != nil {
		return nil, fmt.Errorf("warm the cache: %w\n%s", r.err, r.stderr)
	}
	ratios := map[string][]float64{}
	ref := b.proxied(b.modelV2)
	for round := range b.cfg.byteRuns {
		for _, t := range alternate([]tool{b.bargeTool(), b.orasTool()}, round) {
			run := filepath.Join(base, t.name)
			if err := os.RemoveAll(run); err != nil {
				return nil, err
			}
			dir, cache := filepath.Join(run, "out"), filepath.Join(run, "cache")
			if t.name == "barge" {
				if err := linkTree(warm, cache); err != nil {
					return nil, err
				}
			}
			b.proxy.reset()
			if r := b.run(ctx, t.argv(ref, dir, cache)); r.err != nil {
				return nil, fmt.Errorf("%s pull of the new version: %w\n%s", t.name, r.err, r.stderr)
			}
			if err := checkFiles(t, dir, b.modelV2); err != nil {
				return nil, err
			}
			sent := b.proxy.sentBytes()
			ratio := float64(sent) / float64(changedSize)
			logf("%s run %d: %d MiB sent for a changed layer of %d MiB (%.3f×)", t.name, round+1, sent>>20, changedSize>>20, ratio)
			ratios[t.name] = append(ratios[t.name], ratio)
		}
	}
	os.RemoveAll(base)
	r := byteRow(fmt.Sprintf("bytes sent, new version sharing %d of %d layers (× changed layer)", len(b.modelV2.layers)-1, len(b.modelV2.layers)), ratios, 1.10, "≤ 1.1×")
	r.note = "barge with the cache of the previous version; oras has no cache and pulls into an empty directory"
	return []row{r}, nil
}

// linkTree copies a store by hard links: committed blobs are read-only and
// never changed in place, so the copy is as good as a real one.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		return os.Link(p, target)
	})
}

// resume builds a partial of at least half the big blob (a rate-limited
// pull SIGKILLed once its ingest passes 50%), then times reruns with the
// same cache from process start to the first body byte the registry sends
// for the resumed Range request. Every rerun but the last is SIGKILLed
// right after that byte, leaving the partial for the next; the last one
// completes. For comparison, oras (which cannot resume) is timed to its
// first body byte from 0.
func (b *bench) resume(ctx context.Context) ([]row, error) {
	blob := b.big.layers[0]
	size := blob.Size
	base := filepath.Join(b.work, "resume")
	cache, dir := filepath.Join(base, "cache"), filepath.Join(base, "out")
	ref := b.proxied(b.big)

	b.proxy.reset()
	const rate = "400M"
	// One stream: segments would write ahead of the prefix, and the data
	// file's size would say nothing about how much of it is there.
	p, err := b.start(ctx, []string{b.barge, "pull", "--cache", cache, "--limit-rate", rate, "--segments", "1", ref, dir}, false)
	if err != nil {
		return nil, err
	}
	done := make(chan result, 1)
	go func() { done <- p.wait() }()
	data := filepath.Join(cache, "ingest", blob.Digest.Encoded(), "data")
	var r result
poll:
	for {
		if fi, err := os.Stat(data); err == nil && fi.Size() >= size/2 {
			p.kill()
		}
		select {
		case r = <-done:
			break poll
		case <-time.After(5 * time.Millisecond):
		}
	}
	if !r.killed {
		return nil, fmt.Errorf("the rate-limited pull of %d MiB ended before its ingest reached half: %v\n%s", size>>20, r.err, r.stderr)
	}
	partial := int64(0)
	if fi, err := os.Stat(data); err == nil {
		partial = fi.Size()
	}
	logf("partial: %d MiB of %d MiB in the ingest", partial>>20, size>>20)

	var bargeTTFB, orasTTFB []time.Duration
	var (
		firstRange string
		before     []string // requests of the first rerun before the blob's
	)
	for i := range b.cfg.runs {
		last := i == b.cfg.runs-1
		b.proxy.reset()
		d, req, r, err := b.firstByte(ctx, []string{b.barge, "pull", "--cache", cache, ref, dir}, blob.Digest.String(), !last)
		if err != nil {
			return nil, fmt.Errorf("barge rerun %d: %w", i+1, err)
		}
		if req.Range == "" || req.Status != 206 {
			return nil, fmt.Errorf("barge rerun %d did not resume: its first request for the blob had Range %q and got HTTP %d", i+1, req.Range, req.Status)
		}
		if last {
			if r.err != nil {
				return nil, fmt.Errorf("barge rerun %d: %w\n%s", i+1, r.err, r.stderr)
			}
			if err := checkFiles(b.bargeTool(), dir, b.big); err != nil {
				return nil, err
			}
		}
		if i == 0 {
			firstRange = req.Range
			for _, q := range b.proxy.requests() {
				if q.Start.Before(req.Start) {
					before = append(before, q.Method+" "+shortPath(q.Path))
				}
			}
		}
		logf("barge rerun %d: first new byte after %d ms (Range: %s)", i+1, d.Milliseconds(), req.Range)
		bargeTTFB = append(bargeTTFB, d)

		odir := filepath.Join(base, "oras")
		os.RemoveAll(odir)
		b.proxy.reset()
		d, _, _, err = b.firstByte(ctx, b.orasTool().argv(ref, odir, ""), blob.Digest.String(), true)
		if err != nil {
			return nil, fmt.Errorf("oras: %w", err)
		}
		logf("oras run %d: first byte (from 0) after %d ms", i+1, d.Milliseconds())
		orasTTFB = append(orasTTFB, d)
	}
	os.RemoveAll(base)

	bm, om := median(bargeTTFB), median(orasTTFB)
	rw := row{
		metric: fmt.Sprintf("restart → first new byte, %d MiB partial of %d MiB (median)", partial>>20, size>>20),
		barge:  fmt.Sprintf("%d ms", bm.Milliseconds()),
		oras:   fmt.Sprintf("no resume (%d ms to byte 0)", om.Milliseconds()),
		crane:  "—",
		target: "< 200 ms", met: bm < 200*time.Millisecond,
		note: fmt.Sprintf("the rerun's first request for the blob had Range: %s (blob of %d bytes); before it the rerun sent %d requests, one after the other: %s",
			firstRange, size, len(before), strings.Join(before, ", ")),
		unit: "ms", samples: map[string][]string{},
	}
	for i := range bargeTTFB {
		rw.samples["barge"] = append(rw.samples["barge"], fmt.Sprint(bargeTTFB[i].Milliseconds()))
		rw.samples["oras"] = append(rw.samples["oras"], fmt.Sprint(orasTTFB[i].Milliseconds()))
	}
	return []row{rw}, nil
}

// firstByte starts argv and waits for the first body byte of blob digest
// to leave the registry. It returns the time from the start of the process
// to that byte and the request; if kill, it then SIGKILLs the process,
// else it waits for it to finish.
func (b *bench) firstByte(ctx context.Context, argv []string, digest string, kill bool) (time.Duration, blobRequest, result, error) {
	p, err := b.start(ctx, argv, false)
	if err != nil {
		return 0, blobRequest{}, result{}, err
	}
	var req blobRequest
	for req.FirstByte.IsZero() {
		for _, r := range b.proxy.requests() {
			if r.Digest == digest && !r.FirstByte.IsZero() {
				req = r
				break
			}
		}
		if ctx.Err() != nil {
			p.kill()
			p.wait()
			return 0, req, result{}, ctx.Err()
		}
		time.Sleep(time.Millisecond)
		if req.FirstByte.IsZero() && time.Since(p.start) > 2*time.Minute {
			p.kill()
			r := p.wait()
			return 0, req, r, fmt.Errorf("no byte of the blob after 2 minutes\n%s", r.stderr)
		}
	}
	if kill {
		p.kill()
	}
	r := p.wait()
	return req.FirstByte.Sub(p.start), req, r, nil
}

// byteRow makes a row of bytes-sent ratios, lower is better.
func byteRow(metric string, ratios map[string][]float64, limit float64, target string) row {
	bm, om := median(ratios["barge"]), median(ratios["oras"])
	r := row{
		metric: metric,
		barge:  fmt.Sprintf("%.3f×", bm), oras: fmt.Sprintf("%.3f×", om), crane: "—",
		ratio: bm / om, target: target, met: bm <= limit,
		unit: "×", samples: map[string][]string{},
	}
	for _, name := range []string{"barge", "oras"} {
		for _, v := range ratios[name] {
			r.samples[name] = append(r.samples[name], fmt.Sprintf("%.3f", v))
		}
	}
	return r
}

// pairedRatio is the median over rounds of a[i]/b[i]: runs of one round
// are seconds apart and share the machine's load, which moves a lot more
// between rounds than within one.
func pairedRatio(a, b []time.Duration) float64 {
	var r []float64
	for i := range min(len(a), len(b)) {
		r = append(r, a[i].Seconds()/b[i].Seconds())
	}
	return median(r)
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func lastLine(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}

// shortPath shortens the digest in a registry path.
func shortPath(p string) string {
	if i := strings.Index(p, "sha256:"); i >= 0 && len(p) > i+19 {
		return p[:i+19] + "…"
	}
	return p
}
