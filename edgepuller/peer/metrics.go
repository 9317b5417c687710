package peer

import "github.com/prometheus/client_golang/prometheus"

// metrics are the server's Prometheus series, beside the agent's under
// barge_edgepuller_.
type metrics struct {
	served   prometheus.Counter
	requests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns = "barge_edgepuller"
	m := &metrics{
		served: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "peer_served_bytes_total",
			Help: "Bytes of blobs and manifests served to the site's peers: what they did not fetch over the uplink."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "peer_requests_total",
			Help: "Requests of the site's peers, by HTTP status code."}, []string{"code"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.served, m.requests} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
