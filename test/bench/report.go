//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func (r row) cells() []string {
	ratio := "—"
	if r.ratio > 0 {
		ratio = fmt.Sprintf("%.2f", r.ratio)
	}
	target, met := r.target, "no"
	switch {
	case target == "":
		target, met = "—", "—"
	case r.met:
		met = "yes"
	}
	return []string{r.metric, r.barge, r.oras, ratio, target, met, r.crane}
}

var header = []string{"metric", "barge", "oras", "barge/oras", "target", "met?", "crane"}

// The ratio of the cold pull is the median of the ratios within each round
// (see pairedRatio), not the ratio of the medians.

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r.cells(), "\t"))
	}
	tw.Flush()
}

func markdownTable(w io.Writer, rows []row) {
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)))
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r.cells(), " | "))
	}
}

// breakdownRows are the breakdown's stages as table cells: the median, and
// the median ratio to the oras CLI (the second stage) within each round.
func breakdownRows(stages []stage) [][]string {
	var out [][]string
	for _, s := range stages {
		out = append(out, []string{s.name, fmt.Sprintf("%.2f s", median(s.wall).Seconds()), fmt.Sprintf("%.2f", pairedRatio(s.wall, stages[1].wall))})
	}
	return out
}

var breakdownHeader = []string{"cold pull: where the time goes", "median", "÷ oras CLI (paired)"}

func printBreakdown(w io.Writer, stages []stage) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(breakdownHeader, "\t"))
	for _, r := range breakdownRows(stages) {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// machine describes where the figures were taken.
type machine struct {
	cpus                  int
	cpuModel              string
	memory                string
	kernel                string
	fs                    string
	loadBefore, loadAfter string
	took                  time.Duration
	date                  string
}

func describeMachine(workdir string) machine {
	m := machine{cpus: runtime.NumCPU(), date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
	m.cpuModel = procField("/proc/cpuinfo", "model name")
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		var n int64
		fmt.Sscanf(kb, "%d", &n)
		m.memory = fmt.Sprintf("%.1f GiB", float64(n)/(1<<20))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	var st syscall.Statfs_t
	if syscall.Statfs(workdir, &st) == nil {
		m.fs = fsName(int64(st.Type))
	}
	return m
}

func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func fsName(t int64) string {
	switch t {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("fs type %#x", t)
}

func (m machine) oneLine() string {
	return fmt.Sprintf("%d CPUs (%s), %s RAM, Linux %s, %s; load average %s before, %s after; took %s",
		m.cpus, m.cpuModel, m.memory, m.kernel, m.fs, m.loadBefore, m.loadAfter, m.took)
}

const (
	docBegin = "<!-- bench:edgepuller:begin (written by go run ./test/bench -doc; edit outside these markers) -->"
	docEnd   = "<!-- bench:edgepuller:end -->"
)

// writeDoc replaces the generated block of the edge puller's section in
// path with this run's figures; the prose around it is left alone.
func writeDoc(path string, rows []row, stages []stage, m machine, b *bench) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i, j := bytes.Index(old, []byte(docBegin)), bytes.Index(old, []byte(docEnd))
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q … %q block to replace", path, docBegin, docEnd)
	}
	var w bytes.Buffer
	w.Write(old[:i+len(docBegin)])
	fmt.Fprintf(&w, "\n\nMeasured %s on %s.\n\n", m.date, m.oneLine())
	markdownTable(&w, rows)
	fmt.Fprintln(&w)
	for _, r := range rows {
		if r.note != "" {
			fmt.Fprintf(&w, "- %s: %s.\n", r.metric, r.note)
		}
	}
	if len(stages) > 0 {
		fmt.Fprintf(&w, "\n| %s |\n|---|---|---|\n", strings.Join(breakdownHeader, " | "))
		for _, r := range breakdownRows(stages) {
			fmt.Fprintf(&w, "| %s |\n", strings.Join(r, " | "))
		}
	}
	fmt.Fprintf(&w, "\nEvery run (barge / oras%s):\n\n", map[bool]string{true: " / crane", false: ""}[b.crane != ""])
	for _, r := range rows {
		fmt.Fprintf(&w, "- %s, %s: %s\n", r.metric, r.unit, samples(r))
	}
	for _, s := range stages {
		var xs []string
		for _, d := range s.wall {
			xs = append(xs, fmt.Sprintf("%.2f", d.Seconds()))
		}
		fmt.Fprintf(&w, "- breakdown, %s, s: %s\n", s.name, strings.Join(xs, ", "))
	}
	fmt.Fprintln(&w)
	w.Write(old[j:])
	return os.WriteFile(path, w.Bytes(), 0o644)
}

func samples(r row) string {
	var parts []string
	for _, name := range []string{"barge", "oras", "crane"} {
		if s := r.samples[name]; len(s) > 0 {
			parts = append(parts, strings.Join(s, ", "))
		}
	}
	return strings.Join(parts, " / ")
}
