//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// process is a binary the bench started, its output in a file.
type process struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startProcess(name, logFile, bin string, args ...string) (*process, error) {
	out, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	p := &process{name: name, cmd: exec.Command(bin, args...), log: logFile, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	// Killed with the bench, whatever happens to it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.cmd.Wait(); out.Close(); close(p.exited) }()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after 10 s.
func (p *process) stop() {
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// tail is the end of the process's log.
func (p *process) tail(lines int) string {
	b, _ := os.ReadFile(p.log)
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// procStatus reads a field of /proc/PID/status in KiB (VmHWM, VmRSS).
func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime is the user + system time of a process so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command, which is in parentheses and may hold spaces.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// childByName finds a child of this process by its command name
// (kube-apiserver, etcd: envtest starts them).
func childByName(name string) int {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.TrimSpace(string(comm)) == name {
				return pid
			}
		}
	}
	return 0
}

// freePort is a loopback port nobody listened on a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// sample is one Prometheus sample: labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

var (
	sampleLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)`)
	labelFinder = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// parseMetrics reads the samples of the named metrics from Prometheus text.
func parseMetrics(r io.Reader, names ...string) map[string][]sample {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string][]sample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := sampleLine.FindStringSubmatch(sc.Text())
		if m == nil || !want[m[1]] {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		s := sample{labels: map[string]string{}, value: v}
		for _, l := range labelFinder.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		out[m[1]] = append(out[m[1]], s)
	}
	return out
}

// tally sums samples by a key made of some of their labels.
func tally(samples []sample, keep func(map[string]string) bool, key func(map[string]string) string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range samples {
		if keep == nil || keep(s.labels) {
			out[key(s.labels)] += s.value
		}
	}
	return out
}

func diff(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// scrape GETs a metrics endpoint with client.
func scrape(ctx context.Context, hc *http.Client, url string, names ...string) (map[string][]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body, names...), nil
}

// storageLists are the metrics of the lists of NodeArtifacts the API server
// served from its storage (the watch cache or etcd): lists, and objects
// fetched (then filtered by the label selector) and returned.
var storageLists = []string{"apiserver_storage_list_total", "apiserver_storage_list_fetched_objects_total", "apiserver_storage_list_returned_objects_total",
	"apiserver_terminated_watchers_total"} // the last: watches closed because the watcher fell behind

// apiRequests are the API server's requests so far, by "VERB resource[/subresource]",
// and storageLists of NodeArtifacts by "metric storage".
func apiRequests(ctx context.Context, cfg *rest.Config) (requests, lists map[string]float64, err error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, nil, err
	}
	m, err := scrape(ctx, hc, strings.TrimSuffix(cfg.Host, "/")+"/metrics", append([]string{"apiserver_request_total"}, storageLists...)...)
	if err != nil {
		return nil, nil, err
	}
	lists = map[string]float64{}
	for _, name := range storageLists {
		for k, v := range tally(m[name],
			func(l map[string]string) bool { return l["group"] == "barge.dev" && l["resource"] == "nodeartifacts" },
			func(l map[string]string) string { return strings.TrimSpace(name + " " + l["storage"]) }) {
			lists[k] = v
		}
	}
	return tally(m["apiserver_request_total"],
		func(l map[string]string) bool { return l["group"] == "barge.dev" || l["resource"] == "events" },
		func(l map[string]string) string {
			r := l["resource"]
			if l["subresource"] != "" {
				r += "/" + l["subresource"]
			}
			return l["verb"] + " " + r
		}), lists, nil
}

// controllerMetrics are the controller's reconciles of InferenceModels by
// result, and its API requests by method.
func controllerMetrics(ctx context.Context, addr string) (reconciles, requests map[string]float64, err error) {
	m, err := scrape(ctx, http.DefaultClient, "http://"+addr+"/metrics", "controller_runtime_reconcile_total", "rest_client_requests_total")
	if err != nil {
		return nil, nil, err
	}
	reconciles = tally(m["controller_runtime_reconcile_total"],
		func(l map[string]string) bool { return l["controller"] == "inferencemodel" },
		func(l map[string]string) string { return l["result"] })
	requests = tally(m["rest_client_requests_total"], nil, func(l map[string]string) string { return l["method"] })
	return reconciles, requests, nil
}
