//go:build linux

package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/bargeml/barge/edgepuller/kube"
	"github.com/bargeml/barge/test/bench/benchdoc"
)

type machine struct {
	cpus                  int
	cpuModel, memory      string
	kernel, date          string
	loadBefore, loadAfter string
}

func describeMachine() machine {
	m := machine{cpus: runtime.NumCPU(), date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), loadBefore: benchdoc.LoadAvg()}
	m.cpuModel = procField("/proc/cpuinfo", "model name")
	var kb int64
	fmt.Sscanf(procField("/proc/meminfo", "MemTotal"), "%d", &kb)
	m.memory = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
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

func mib(kib int64) string { return fmt.Sprintf("%d MiB", (kib+512)>>10) }

func secs(d time.Duration) string {
	if d >= time.Minute {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%.0f s", d.Seconds())
}

func ratio(n, of int) string {
	if of == 0 {
		return "—"
	}
	return fmt.Sprintf("%.3f", float64(n)/float64(of))
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// perKind lists request kinds with their count per re-resolve.
func perKind(c counts, keep func(reqKey) bool, resolves int) string {
	byKind := map[string]int{}
	for k, v := range c {
		if keep(k) {
			byKind[k.Kind] += v
		}
	}
	var parts []string
	for _, kind := range slices.Sorted(maps.Keys(byKind)) {
		parts = append(parts, fmt.Sprintf("%s %s", kind, ratio(byKind[kind], resolves)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// byKey lists a tally as "KEY n, ...", largest first.
func byKey(m map[string]float64, per float64) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		if per > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, m[k]/per))
		} else {
			parts = append(parts, fmt.Sprintf("%s %s", k, itoa(int(m[k]))))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func (b *bench) report() string {
	r, cfg := &b.res, b.cfg
	m := r.machine
	tagModels := cfg.models - cfg.ranges
	nas := cfg.models * cfg.nodes
	var w strings.Builder
	fmt.Fprintf(&w, "Measured %s on %d CPUs (%s), %s RAM, Linux %s; load average %s before, %s after; took %s.\n\n",
		m.date, m.cpus, m.cpuModel, m.memory, m.kernel, m.loadBefore, m.loadAfter, secs(r.took))
	nodes := fmt.Sprintf("%d real `barge-edgepuller` processes, one per node, materialize", cfg.nodes)
	if cfg.pullers == "simulated" {
		limit := fmt.Sprintf("at most %g API requests a second each, as barge-edgepuller", cfg.nodeQPS)
		if cfg.nodeQPS != kube.DefaultQPS {
			limit = fmt.Sprintf("at most %g API requests a second each (`-node-qps`)", cfg.nodeQPS)
		}
		if cfg.nodeQPS <= 0 {
			limit = "no client-side limit on API requests (`-node-qps 0`)"
		}
		nodes = fmt.Sprintf("%d simulated nodes (`-pullers simulated`: list 500 at a time and watch, GET the manifest, status Ready, and Pulling before it only when the pull lasts over a second; %s) answer", cfg.nodes, limit)
	}
	fmt.Fprintf(&w, "%s InferenceModels in one namespace, each selecting all %d Nodes: %s on a tag (%d repositories × 2 tags), %d on the semver range `%s` (one repository of 3 versions); spec.interval %s. %s the %s NodeArtifacts.\n\n",
		itoa(cfg.models), cfg.nodes, itoa(tagModels), cfg.repos, cfg.ranges, rangeVersion, cfg.interval, nodes, itoa(nas))

	ctrl := func(k reqKey) bool { return k.Client == "controller" }
	tagRepo := func(k reqKey) bool { return k.Repo != "models/ranged" }
	rngRepo := func(k reqKey) bool { return k.Repo == "models/ranged" }
	every := func(f ...func(reqKey) bool) func(reqKey) bool {
		return func(k reqKey) bool {
			for _, g := range f {
				if !g(k) {
					return false
				}
			}
			return true
		}
	}
	// A kind is matched whatever the answer: "HEAD manifest → 404" is a HEAD too.
	kind := func(s string) func(reqKey) bool {
		return func(k reqKey) bool { return k.Kind == s || strings.HasPrefix(k.Kind, s+" → ") }
	}
	notKind := func(s ...string) func(reqKey) bool {
		return func(k reqKey) bool {
			return !slices.ContainsFunc(s, func(s string) bool { return kind(s)(k) })
		}
	}
	win := r.regWindow
	headTag := win.sum(every(ctrl, tagRepo, kind("HEAD manifest")))
	listTag := win.sum(every(ctrl, tagRepo, kind("GET tags list")))
	otherTag := win.sum(every(ctrl, tagRepo, notKind("HEAD manifest", "GET tags list")))
	headRng := win.sum(every(ctrl, rngRepo, kind("HEAD manifest")))
	listRng := win.sum(every(ctrl, rngRepo, kind("GET tags list")))
	otherRng := win.sum(every(ctrl, rngRepo, notKind("HEAD manifest", "GET tags list")))
	near := func(n, of int, want float64) bool {
		// A pass in flight at either edge of the window is counted on one
		// side only: allow one per concurrent reconcile (4) at each edge.
		return of > 0 && abs(float64(n)-want*float64(of)) <= 8
	}

	fmt.Fprintln(&w, "| metric | value | target | met? |")
	fmt.Fprintln(&w, "|---|---|---|---|")
	row := func(metric, value, target, met string) {
		fmt.Fprintf(&w, "| %s | %s | %s | %s |\n", metric, value, target, met)
	}
	target, met := "(for the record)", "—"
	if cfg.target > 0 {
		target, met = "under "+secs(cfg.target), yesNo(r.tAll < cfg.target)
	}
	all := secs(r.tAll)
	if cfg.before > 0 {
		all += fmt.Sprintf(" (%.2fx the %s of %s)", r.tAll.Seconds()/cfg.before.Seconds(), secs(cfg.before), cfg.beforeWhen)
	}
	row(fmt.Sprintf("time from the first create until all %s models are Ready on all %d nodes", itoa(cfg.models), cfg.nodes), all, target, met)
	row("… until every model was resolved to its digest", secs(r.tResolved), "", "")
	row(fmt.Sprintf("… until all %s NodeArtifacts existed", itoa(nas)), secs(r.tCreated), "", "")
	row(fmt.Sprintf("… of which creating the %s models took", itoa(cfg.models)), secs(r.createTook), "", "")
	if cfg.pullers == "simulated" {
		row("… until the last simulated node reported Ready", secs(r.tLastNode), "", "")
	}
	row("controller peak RSS (VmHWM), at all Ready / at the end", mib(r.peakAtReadyKiB)+" / "+mib(r.peakKiB), "(for the record)", "—")
	row("controller CPU time (user + system) during the rollout", fmt.Sprintf("%.1f s", r.cpuRollout.Seconds()), "(for the record)", "—")
	writes := 0.0
	for k, v := range r.apiRollout {
		if verb, _, _ := strings.Cut(k, " "); verb == "POST" || verb == "PATCH" || verb == "PUT" || verb == "DELETE" {
			writes += v
		}
	}
	row("kube-apiserver CPU time during the rollout; per write request (POST, PATCH, PUT, DELETE)",
		fmt.Sprintf("%.1f s (etcd %.1f s); %.1f ms per write, %s writes, %.1f per model", r.apiserverCPU.Seconds(), r.etcdCPU.Seconds(),
			r.apiserverCPU.Seconds()*1000/max(writes, 1), itoa(int(writes)), writes/float64(cfg.models)), "(for the record)", "—")
	row("API objects created during the rollout",
		fmt.Sprintf("%s InferenceModels, %s NodeArtifacts, %s Events", itoa(cfg.models), itoa(r.nodeArtifacts), itoa(r.events)), "(for the record)", "—")
	row(fmt.Sprintf("re-resolves seen in %s (status.resolved.resolvedAt moved)", secs(r.window)),
		fmt.Sprintf("%s of %s tag models (%s), %d of %d range models (%d)", itoa(r.modelsResolvedTag), itoa(tagModels), itoa(r.resolvesTag), r.modelsResolvedRng, cfg.ranges, r.resolvesRng),
		fmt.Sprintf("each model once per %s", cfg.interval), yesNo(r.modelsResolvedTag == tagModels && r.modelsResolvedRng == cfg.ranges))
	row("registry requests per re-resolve, tag model: HEAD manifest", ratio(headTag, r.resolvesTag)+fmt.Sprintf(" (%s)", itoa(headTag)), "1", yesNo(near(headTag, r.resolvesTag, 1)))
	row("… tag lists", ratio(listTag, r.resolvesTag)+fmt.Sprintf(" (%s)", itoa(listTag)), "0", yesNo(listTag == 0))
	row("… every other request", ratio(otherTag, r.resolvesTag)+fmt.Sprintf(" (%s: %s)", itoa(otherTag), perKind(win, every(ctrl, tagRepo, notKind("HEAD manifest", "GET tags list")), r.resolvesTag)), "0", yesNo(otherTag == 0))
	if cfg.ranges > 0 {
		row("registry requests per re-resolve, range model: tag lists", ratio(listRng, r.resolvesRng)+fmt.Sprintf(" (%d)", listRng), "1", yesNo(near(listRng, r.resolvesRng, 1)))
		row("… HEAD manifest", ratio(headRng, r.resolvesRng)+fmt.Sprintf(" (%d)", headRng), "1", yesNo(near(headRng, r.resolvesRng, 1)))
		row("… every other request", ratio(otherRng, r.resolvesRng)+fmt.Sprintf(" (%d: %s)", otherRng, perKind(win, every(ctrl, rngRepo, notKind("HEAD manifest", "GET tags list")), r.resolvesRng)), "0", yesNo(otherRng == 0))
	}
	resolves := r.resolvesTag + r.resolvesRng
	row("controller API requests per re-resolve, by method", byKey(r.ctrlWindow, float64(resolves)), "(for the record)", "—")
	row("controller CPU time per re-resolve", fmt.Sprintf("%.1f ms", r.cpuWindow.Seconds()*1000/float64(max(resolves, 1))), "(for the record)", "—")
	fmt.Fprintln(&w)

	fmt.Fprintf(&w, "During the rollout (first create → all Ready):\n\n")
	fmt.Fprintf(&w, "- API server requests, every client, Barge's kinds and events: %s.\n", byKey(r.apiRollout, 0))
	fmt.Fprintf(&w, "- the same per model: %s.\n", byKey(r.apiRollout, float64(cfg.models)))
	for _, storage := range []string{"watchcache", "etcd"} {
		l := r.listsRollout
		n := l["apiserver_storage_list_total "+storage]
		if n == 0 {
			continue
		}
		fmt.Fprintf(&w, "- lists of NodeArtifacts the API server answered from its %s: %s; per list, on average, %s objects fetched, %.1f returned.\n",
			storage, itoa(int(n)), itoa(int(l["apiserver_storage_list_fetched_objects_total "+storage]/n+0.5)), l["apiserver_storage_list_returned_objects_total "+storage]/n)
	}
	fmt.Fprintf(&w, "- watches of NodeArtifacts the API server closed because the watcher fell behind (`apiserver_terminated_watchers_total`): %s.\n",
		itoa(int(r.listsRollout["apiserver_terminated_watchers_total"])))
	fmt.Fprintf(&w, "- the controller's API requests by method: %s; InferenceModel reconciles by result: %s (%.1f per model).\n",
		byKey(r.ctrlRollout, 0), byKey(r.reconcRollout, 0), sumValues(r.reconcRollout)/float64(cfg.models))
	fmt.Fprintf(&w, "- Warning events by reason: %s.\n", byKey(r.warnings, 0))
	fmt.Fprintf(&w, "- registry requests of the controller: %s; of the pullers: %s.\n",
		kinds(r.regRollout, ctrl), kinds(r.regRollout, func(k reqKey) bool { return k.Client == "puller" }))
	pullers := ""
	if cfg.pullers == "real" {
		pullers = "largest puller " + mib(r.pullerPeakKiB) + ", "
	}
	fmt.Fprintf(&w, "- peak RSS of the other processes: %skube-apiserver %s, etcd %s.\n", pullers, mib(r.apiserverKiB), mib(r.etcdKiB))
	fmt.Fprintf(&w, "- over the %s window: InferenceModel reconciles by result %s; controller RSS at the end %s.\n",
		secs(r.window), byKey(r.reconcWin, 0), mib(r.endRSSKiB))
	return w.String()
}

// kinds lists the requests keep accepts by kind, with their totals.
func kinds(c counts, keep func(reqKey) bool) string {
	m := map[string]float64{}
	for k, v := range c {
		if keep(k) {
			m[k.Kind] += float64(v)
		}
	}
	return byKey(m, 0)
}

func sumValues(m map[string]float64) float64 {
	s := 0.0
	for _, v := range m {
		s += v
	}
	return s
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// writeDoc replaces what is between section's markers in path with report.
func writeDoc(path, section, report string) error {
	docBegin := fmt.Sprintf("<!-- bench:%s:begin (written by go run ./test/bench/controller -doc; edit outside these markers) -->", section)
	docEnd := fmt.Sprintf("<!-- bench:%s:end -->", section)
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, docBegin), strings.Index(s, docEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q … %q block to write into; the report is above", path, docBegin, docEnd)
	}
	out := s[:i+len(docBegin)] + "\n\n" + report + "\n" + s[j:]
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(out), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
