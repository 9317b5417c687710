// Command netfault runs test/netfault's figures: a model fanned out to the
// ten nodes of a site over a shaped uplink (20 Mbit/s with 50 ms RTT; 2
// Mbit/s with 2% loss each way), with peers and without in the same run,
// and with peers an uplink cut and a killed seed. It prints the registry's
// egress per site and the time to all Ready, and writes its section of
// docs/benchmarks.md when given -doc. It needs root (network namespaces,
// TUN devices): run it as `sudo make bench` where you are not root.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/bargeml/barge/test/bench/benchdoc"
)

// figure is one measured run, as test/netfault writes it.
type figure struct {
	Scenario  string        `json:"scenario"`
	Profile   string        `json:"profile"`
	Peers     bool          `json:"peers"`
	Nodes     int           `json:"nodes"`
	Model     int64         `json:"model"`
	Egress    int64         `json:"egress"`
	Wire      int64         `json:"wire"`
	APIEgress int64         `json:"apiEgress"`
	ToReady   time.Duration `json:"toReady"`
	Origin    int64         `json:"origin"`
	FromPeers int64         `json:"fromPeers"`
	Lost      int64         `json:"lost,omitempty"`
}

func main() {
	doc := flag.String("doc", "", "markdown file whose netfault section is replaced with the results")
	flag.Parse()
	if err := run(*doc); err != nil {
		fmt.Fprintln(os.Stderr, "bench netfault:", err)
		os.Exit(1)
	}
}

func run(doc string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root for network namespaces and TUN devices: run `sudo make bench` (or go run ./test/bench/netfault as root)")
	}
	tmp, err := os.MkdirTemp("", "barge-bench-netfault-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "figures.json")
	start := time.Now()
	benchdoc.Logf("go test -run TestFigures ./test/netfault (about 12 minutes)")
	cmd := exec.Command("go", "test", "-count=1", "-timeout", "40m", "-run", "^TestFigures$", "-v", "./test/netfault")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), "BARGE_NETFAULT_FIGURES="+out, "BARGE_NETFAULT_REQUIRED=1")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("test/netfault: %w", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	var figs []figure
	if err := json.Unmarshal(b, &figs); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	body := report(figs, time.Since(start))
	fmt.Println(body)
	if doc == "" {
		return nil
	}
	return benchdoc.WriteSection(doc, "netfault", body)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func ratio(f figure) string { return fmt.Sprintf("%.2fx", float64(f.Egress)/float64(f.Model)) }

func report(figs []figure, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %d CPUs; load average %s; took %s. Two sites of %d nodes, each a real barge-edgepuller in its own network namespace.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), benchdoc.LoadAvg(), took.Round(time.Second), nodesOf(figs))
	b.WriteString("Registry egress to the site (TCP payload the registry sent into the site's uplink, each byte of a connection once), as a multiple of the model, the same with TCP's resends (what the uplink carried), and the time from creating the InferenceModel to every node Ready:\n\n")
	b.WriteString("| uplink | model | peers: egress | x model | with resends | all Ready | no peers: egress | x model | with resends | all Ready |\n|---|---|---|---|---|---|---|---|---|---|\n")
	type key struct{ profile string }
	with, without := map[key]figure{}, map[key]figure{}
	var order []key
	for _, f := range figs {
		if f.Scenario != "fan-out" {
			continue
		}
		k := key{f.Profile}
		if _, ok := with[k]; !ok {
			if _, ok := without[k]; !ok {
				order = append(order, k)
			}
		}
		if f.Peers {
			with[k] = f
		} else {
			without[k] = f
		}
	}
	cell := func(f figure, ok bool) string {
		if !ok {
			return "– | – | – | –"
		}
		return fmt.Sprintf("%s | %s | %.2fx | %s", mib(f.Egress), ratio(f), float64(f.Wire)/float64(f.Model), f.ToReady.Round(100*time.Millisecond))
	}
	for _, k := range order {
		w, wok := with[k]
		n, nok := without[k]
		size := w.Model
		if !wok {
			size = n.Model
		}
		fmt.Fprintf(&b, "| %s | %d MiB | %s | %s |\n", k.profile, size>>20, cell(w, wok), cell(n, nok))
	}
	var faults []figure
	for _, f := range figs {
		if f.Scenario != "fan-out" {
			faults = append(faults, f)
		}
	}
	if len(faults) > 0 {
		b.WriteString("\nFaults, with peers:\n\n| fault | uplink | model | registry egress | x model | with resends | all Ready | bytes the nodes count from the origin / from peers |\n|---|---|---|---|---|---|---|---|\n")
		for _, f := range faults {
			name := f.Scenario
			if f.Lost > 0 {
				name += fmt.Sprintf(" (its lost partial: %s)", mib(f.Lost))
			}
			fmt.Fprintf(&b, "| %s | %s | %d MiB | %s | %s | %.2fx | %s | %s / %s |\n", name, f.Profile, f.Model>>20, mib(f.Egress), ratio(f),
				float64(f.Wire)/float64(f.Model), f.ToReady.Round(100*time.Millisecond), mib(f.Origin), mib(f.FromPeers))
		}
	}
	return b.String()
}

func nodesOf(figs []figure) int {
	for _, f := range figs {
		if f.Scenario == "fan-out" {
			return f.Nodes
		}
	}
	return 10
}
