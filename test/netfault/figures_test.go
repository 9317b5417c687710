package netfault

import (
	"os"
	"testing"
)

// TestFigures measures for docs/benchmarks.md (make bench, through
// test/bench/netfault): the fan-out on both profiles with peers and then
// without (the controller restarted with --peer-port 0) in the same run,
// and the uplink cut and the seed kill with peers. It runs only when
// BARGE_NETFAULT_FIGURES names the file the figures go to; it is not
// parallel, so it has the sites to itself.
func TestFigures(t *testing.T) {
	requireNet(t)
	if os.Getenv("BARGE_NETFAULT_FIGURES") == "" {
		t.Skip("make bench runs this, with BARGE_NETFAULT_FIGURES set")
	}
	defer startController(true)
	for _, peers := range []bool{true, false} {
		if err := startController(peers); err != nil {
			t.Fatal(err)
		}
		t.Run(map[bool]string{true: "peers", false: "no-peers"}[peers], func(t *testing.T) {
			t.Run(fast.short, func(t *testing.T) {
				t.Parallel()
				s := takeSite(t, fast)
				fanOut(t, s, fast, "fan-out", 64*MiB, peers)
				if peers {
					t.Run("cut", func(t *testing.T) { uplinkCut(t, s, 64*MiB) })
					t.Run("kill", func(t *testing.T) { seedKilled(t, s, 64*MiB) })
				}
			})
			t.Run(lossy.short, func(t *testing.T) {
				t.Parallel()
				fanOut(t, takeSite(t, lossy), lossy, "fan-out", 8*MiB, peers)
			})
		})
	}
}
