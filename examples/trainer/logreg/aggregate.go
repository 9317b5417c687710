package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The aggregate contract (a TrainingModel with spec.aggregation Script):
//
//	in   $BARGE_BASE_DIR/model.safetensors              the round's base model
//	     $BARGE_UPDATES_DIR/updates.json                [{"node", "digest", "samples", "metrics"}]
//	     $BARGE_UPDATES_DIR/<node>/model.safetensors    each node's update
//	out  $BARGE_AGGREGATE_OUTPUT_DIR/model.safetensors  the next global model
//	     $BARGE_AGGREGATE_OUTPUT_DIR/metrics.json       its metrics
//
// Robust aggregation: FedAvg weighs each update by the samples its node
// says it trained on and lets every update pull the mean, so one node
// that lies about its count, or trains on wrong labels, can move the
// global model wherever it likes. The coordinate-wise median (and the
// trimmed mean) ignore the counts and the extremes: while most nodes are
// honest, each weight stays within the range of the honest nodes' values.

// Aggregation methods.
const (
	MethodMedian      = "median"
	MethodTrimmedMean = "trimmed-mean"
)

// aggregateScript is the model's aggregate/aggregate, which the
// aggregation Job runs: it runs logreg, which the trainer image has on
// its PATH.
func aggregateScript(method string, trim float64) string {
	return fmt.Sprintf("#!/bin/sh\n# Barge runs this for spec.aggregation: Script (see examples/trainer/logreg).\nexec logreg aggregate --method %s --trim %g \"$@\"\n", method, trim)
}

// listedUpdate is one entry of updates.json.
type listedUpdate struct {
	Node    string             `json:"node"`
	Digest  string             `json:"digest"`
	Samples int64              `json:"samples"`
	Metrics map[string]float64 `json:"metrics"`
}

// Aggregate combines the updates in updatesDir into out by method; trim is
// the share of values the trimmed mean drops at each end.
func Aggregate(baseDir, updatesDir, out, method string, trim float64) (map[string]float64, error) {
	combine, err := combiner(method, trim)
	if err != nil {
		return nil, err
	}
	base, err := LoadModel(filepath.Join(baseDir, modelFile))
	if err != nil {
		return nil, err
	}
	listed, err := readUpdates(filepath.Join(updatesDir, "updates.json"))
	if err != nil {
		return nil, err
	}
	models := make([]*Model, len(listed))
	for i, u := range listed {
		if u.Node == "" || filepath.Base(u.Node) != u.Node || strings.HasPrefix(u.Node, ".") {
			return nil, fmt.Errorf("updates.json: node %q is not a directory name", u.Node)
		}
		m, err := LoadModel(filepath.Join(updatesDir, u.Node, modelFile))
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", u.Node, err)
		}
		if m.Features != base.Features || m.Classes != base.Classes {
			return nil, fmt.Errorf("node %s: a model of %d features and %d classes, the base has %d and %d", u.Node, m.Features, m.Classes, base.Features, base.Classes)
		}
		models[i] = m
	}
	next := NewModel(base.Features, base.Classes)
	vals := make([]float64, len(models))
	for k := range next.Weight {
		for i, m := range models {
			vals[i] = m.Weight[k]
		}
		next.Weight[k] = combine(vals)
	}
	for k := range next.Bias {
		for i, m := range models {
			vals[i] = m.Bias[k]
		}
		next.Bias[k] = combine(vals)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	if err := next.Save(filepath.Join(out, modelFile)); err != nil {
		return nil, err
	}
	metrics := combineMetrics(listed, combine)
	b, _ := json.Marshal(metrics)
	return metrics, writeFile(filepath.Join(out, "metrics.json"), b)
}

// combiner is the robust statistic of one coordinate over the updates.
func combiner(method string, trim float64) (func([]float64) float64, error) {
	switch method {
	case MethodMedian:
		return median, nil
	case MethodTrimmedMean:
		if trim < 0 || trim >= 0.5 || math.IsNaN(trim) {
			return nil, fmt.Errorf("--trim %g: give the share dropped at each end, from 0 up to (not including) 0.5", trim)
		}
		return func(v []float64) float64 { return trimmedMean(v, trim) }, nil
	}
	return nil, fmt.Errorf("--method %q: use %s or %s", method, MethodMedian, MethodTrimmedMean)
}

// median of v (v is reordered): the middle value, or the mean of the two
// middle ones.
func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// trimmedMean of v (v is reordered): the mean without the floor(trim·n)
// lowest and highest values.
func trimmedMean(v []float64, trim float64) float64 {
	slices.Sort(v)
	cut := int(trim * float64(len(v)))
	kept := v[cut : len(v)-cut]
	var sum float64
	for _, x := range kept {
		sum += x
	}
	return sum / float64(len(kept))
}

// combineMetrics: each metric the same robust way over the nodes that
// report it. They are the nodes' own validation figures: a lying node
// cannot carry them either.
func combineMetrics(listed []listedUpdate, combine func([]float64) float64) map[string]float64 {
	by := map[string][]float64{}
	for _, u := range listed {
		for k, v := range u.Metrics {
			by[k] = append(by[k], v)
		}
	}
	out := map[string]float64{}
	for k, v := range by {
		out[k] = combine(v)
	}
	return out
}

func readUpdates(path string) ([]listedUpdate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var listed []listedUpdate
	if err := json.Unmarshal(b, &listed); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(listed) == 0 {
		return nil, errors.New(path + " lists no updates")
	}
	return listed, nil
}
