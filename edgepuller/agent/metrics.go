package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bargeml/barge/edgepuller/fetch"
)

// metrics are the agent's Prometheus series, all under barge_edgepuller_.
type metrics struct {
	fetched   prometheus.Counter
	reused    prometheus.Counter
	resumes   prometheus.Counter
	retries   prometheus.Counter
	duration  prometheus.Histogram
	artifacts *prometheus.GaugeVec
	gcFreed   prometheus.Counter
	usage     prometheus.Gauge
	// received splits fetched by source, so that an operator sees what
	// the site's peers save the uplink.
	received *prometheus.CounterVec
	dropped  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns = "barge_edgepuller"
	m := &metrics{
		fetched: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "bytes_fetched_total",
			Help: "Bytes received from registries and mirrors: manifests, configs and layers."}),
		reused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "bytes_reused_total",
			Help: "Bytes of blobs a pull found in the store already, and did not download."}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "resumes_total",
			Help: "Blobs whose download continued from a partial left by an earlier pull."}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "fetch_retries_total",
			Help: "Blob download attempts after the first."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "pull_duration_seconds",
			Help:    "Time from the start of a pull to the new version being current, for pulls that succeeded.",
			Buckets: prometheus.ExponentialBuckets(0.1, 4, 9)}), // 0.1 s to about 2 h
		artifacts: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "artifacts",
			Help: "Desired artifacts by phase."}, []string{"phase"}),
		gcFreed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "gc_bytes_freed_total",
			Help: "Bytes freed on disk by garbage collection."}),
		usage: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "disk_usage_bytes",
			Help: "Bytes on disk of the store and artifact directories, each file once, as of the last garbage collection."}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "received_bytes_total",
			Help: "Bytes received by source: origin (the registry), peer (other nodes of the site) or mirror."}, []string{"source"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "peers_dropped_total",
			Help: "Site peers a pull stopped using, by reason: Corrupt, Stalled, Unreachable or Refused."}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.fetched, m.reused, m.resumes, m.retries, m.duration, m.artifacts, m.gcFreed, m.usage, m.received, m.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, p := range Phases {
		m.artifacts.WithLabelValues(string(p)).Set(0)
	}
	for _, s := range []string{"origin", "peer", "mirror"} {
		m.received.WithLabelValues(s)
	}
	for _, r := range []string{fetch.PeerCorrupt, fetch.PeerStalled, fetch.PeerUnreachable, fetch.PeerRefused} {
		m.dropped.WithLabelValues(r)
	}
	return m, nil
}

func (m *metrics) pulled(res fetch.Result) {
	m.fetched.Add(float64(res.Fetched))
	m.reused.Add(float64(res.Reused))
	m.resumes.Add(float64(res.Resumed))
	m.retries.Add(float64(res.Retries))
	m.received.WithLabelValues("origin").Add(float64(res.FromOrigin))
	m.received.WithLabelValues("peer").Add(float64(res.FromPeers))
	m.received.WithLabelValues("mirror").Add(float64(res.FromMirrors))
	for _, d := range res.Dropped {
		m.dropped.WithLabelValues(d.Reason).Inc()
	}
}
