// Package kuberate is the client-side limit of a Barge process's
// Kubernetes API requests, as the --kube-api-qps and --kube-api-burst flags
// of barge-controller and barge-edgepuller set it.
package kuberate

import (
	"fmt"

	"k8s.io/client-go/rest"
)

// Check says what is wrong with a --kube-api-qps and --kube-api-burst pair.
func Check(qps float64, burst int) error {
	switch {
	case qps < 0:
		return fmt.Errorf("--kube-api-qps %g: give requests per second, or 0 for no client-side limit", qps)
	case qps > 0 && burst < 1:
		return fmt.Errorf("--kube-api-burst %d: must be at least 1", burst)
	}
	return nil
}

// Set sets cfg's client-side rate limit; qps 0 turns it off, leaving the
// API server's priority and fairness to pace the client.
func Set(cfg *rest.Config, qps float64, burst int) {
	if qps == 0 {
		cfg.QPS, cfg.Burst = -1, 0
		return
	}
	cfg.QPS, cfg.Burst = float32(qps), burst
}
