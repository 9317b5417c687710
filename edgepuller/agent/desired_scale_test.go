package agent

import (
	"fmt"
	"testing"
	"time"
)

// A node may hold thousands of NodeArtifacts, and the list is checked on
// every change: checking 10,000 names must take milliseconds, not the
// minutes a pairwise check takes.
func TestValidateScales(t *testing.T) {
	list := make([]Desired, 10_000)
	for i := range list {
		list[i] = Desired{Name: fmt.Sprintf("ns-%d/model-%d", i%50, i), Reference: "registry.example.com/models/m@sha256:" + fmt.Sprintf("%064x", i)}
	}
	start := time.Now()
	if err := Validate(list); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Validate of 10,000 names took %s", took)
	}
	list = append(list, Desired{Name: "ns-3", Reference: list[0].Reference})
	if err := Validate(list); err == nil {
		t.Error("a name that is another's namespace was accepted")
	}
}
