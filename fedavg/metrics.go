package fedavg

// Report is what one participant measured, and on how many samples it
// trained.
type Report struct {
	Samples int64
	Metrics map[string]float64
}

// Metrics averages each metric over the participants that report it,
// weighted by their samples: a node that trained on ten times the data
// counts ten times as much, as its weights did. A metric only some report
// is averaged over those.
func Metrics(reports []Report) map[string]float64 {
	sum := map[string]float64{}
	weight := map[string]float64{}
	for _, r := range reports {
		if r.Samples <= 0 {
			continue
		}
		for name, v := range r.Metrics {
			sum[name] += float64(r.Samples) * v
			weight[name] += float64(r.Samples)
		}
	}
	if len(sum) == 0 {
		return nil
	}
	out := make(map[string]float64, len(sum))
	for name, s := range sum {
		out[name] = s / weight[name]
	}
	return out
}
