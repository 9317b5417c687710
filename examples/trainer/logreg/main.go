// Command logreg is a trainer for Barge's TrainingModel: a softmax
// logistic-regression classifier trained with mini-batch SGD on one node's
// CSV shard. It is small on purpose, to show the trainer contract:
//
//	in   $BARGE_MODEL_DIR/model.safetensors     the round's global model ("weight" [C,F], "bias" [C], F32)
//	     $BARGE_MODEL_DIR/train/config.json     {"epochs": 2, "learningRate": 0.05, "batchSize": 32, "seed": 1}
//	     $BARGE_DATA_DIR/*.csv                  f0,...,f{F-1},label rows, with a header
//	out  $BARGE_OUTPUT_DIR/model.safetensors    the weights after local training
//	     $BARGE_OUTPUT_DIR/update.json          {"samples": N, "metrics": {"accuracy": ..., "loss": ...}}
//	     $BARGE_OUTPUT_DIR/DONE                 written last: the node's puller uploads the directory then
//
// aggregate is a robust aggregation to the aggregate contract (see
// aggregate.go). The other subcommands make a model to start from, a
// synthetic dataset in shards, and measure a model on held-out data.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

const usage = `Usage:
  logreg init      --features F --classes C --out DIR [--epochs E --learning-rate LR --batch-size B --seed S]
                   [--aggregate median|trimmed-mean [--trim T]]
  logreg gen       --seed S --samples N --nodes K --out DIR [--features F --classes C] [--poison K]
  logreg train     [--model DIR] [--data DIR|FILE.csv] [--out DIR] [--round R] [--report-samples N]
  logreg aggregate [--base DIR] [--updates DIR] [--out DIR] [--method median|trimmed-mean] [--trim T]
  logreg eval      --model DIR --data FILE.csv

init writes DIR/model.safetensors (zero weights) and DIR/train/config.json;
with --aggregate, also DIR/aggregate/aggregate, which runs logreg aggregate
(for a TrainingModel with spec.aggregation: Script).
gen writes DIR/node-1 ... DIR/node-K (one shard each, skewed toward one class),
DIR/all.csv (every shard, for centralized training) and DIR/test.csv (held out);
--poison K shifts every label of node K's shard by one class (an attacker).
train follows the trainer contract; its flags default to $BARGE_MODEL_DIR,
$BARGE_DATA_DIR, $BARGE_OUTPUT_DIR and $BARGE_ROUND. --report-samples claims
N samples in update.json whatever was trained on (a lying node, for tests).
aggregate combines a round's updates coordinate by coordinate with the median
or the trimmed mean, ignoring the sample counts (the aggregate contract: its
flags default to $BARGE_BASE_DIR, $BARGE_UPDATES_DIR and
$BARGE_AGGREGATE_OUTPUT_DIR).
eval prints the accuracy and loss of a model on a CSV file.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func([]string, io.Writer) error{"init": cmdInit, "gen": cmdGen, "train": cmdTrain, "aggregate": cmdAggregate, "eval": cmdEval}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "logreg: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err := cmd(args[1:], stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "logreg %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func newFlags(name string) *flag.FlagSet {
	fl := flag.NewFlagSet("logreg "+name, flag.ContinueOnError)
	fl.Usage = func() { fmt.Fprint(fl.Output(), usage) }
	return fl
}

func cmdInit(args []string, _ io.Writer) error {
	fl := newFlags("init")
	features := fl.Int("features", 0, "features per sample")
	classes := fl.Int("classes", 0, "classes")
	out := fl.String("out", "", "directory of the model")
	cfg := defaultConfig
	fl.IntVar(&cfg.Epochs, "epochs", cfg.Epochs, "passes over the local data per round")
	fl.Float64Var(&cfg.LearningRate, "learning-rate", cfg.LearningRate, "SGD step size")
	fl.IntVar(&cfg.BatchSize, "batch-size", cfg.BatchSize, "samples per SGD step")
	fl.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the shuffles")
	method := fl.String("aggregate", "", "also write aggregate/aggregate, running logreg aggregate with this method (median or trimmed-mean)")
	trim := fl.Float64("trim", 0.2, "with --aggregate trimmed-mean: the share dropped at each end")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *features < 1 || *classes < 2 || *out == "" {
		return errors.New("give --features (at least 1), --classes (at least 2) and --out")
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := saveModelDir(*out, NewModel(*features, *classes), cfg); err != nil {
		return err
	}
	if *method == "" {
		return nil
	}
	if _, err := combiner(*method, *trim); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(*out, "aggregate"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*out, "aggregate", "aggregate"), []byte(aggregateScript(*method, *trim)), 0o755)
}

func cmdAggregate(args []string, stdout io.Writer) error {
	fl := newFlags("aggregate")
	base := fl.String("base", os.Getenv("BARGE_BASE_DIR"), "the round's base model's directory")
	updates := fl.String("updates", os.Getenv("BARGE_UPDATES_DIR"), "the updates: updates.json and <node>/model.safetensors")
	out := fl.String("out", os.Getenv("BARGE_AGGREGATE_OUTPUT_DIR"), "directory for the new model and metrics.json")
	method := fl.String("method", MethodMedian, "median or trimmed-mean")
	trim := fl.Float64("trim", 0.2, "trimmed-mean: the share of values dropped at each end")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *base == "" || *updates == "" || *out == "" {
		return errors.New("give --base, --updates and --out, or set BARGE_BASE_DIR, BARGE_UPDATES_DIR and BARGE_AGGREGATE_OUTPUT_DIR")
	}
	metrics, err := Aggregate(*base, *updates, *out, *method, *trim)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "aggregated by %s; the nodes' accuracy %.4f\n", *method, metrics["accuracy"])
	return nil
}

func cmdGen(args []string, _ io.Writer) error {
	fl := newFlags("gen")
	var g Blobs
	fl.Uint64Var(&g.Seed, "seed", 1, "seed: the same seed gives the same files")
	fl.IntVar(&g.Samples, "samples", 3000, "training samples over all shards")
	fl.IntVar(&g.Nodes, "nodes", 3, "shards")
	fl.IntVar(&g.Features, "features", 4, "features per sample")
	fl.IntVar(&g.Classes, "classes", 3, "classes")
	fl.IntVar(&g.Poison, "poison", 0, "shift every label of this node's shard by one class (from 1; 0: none)")
	out := fl.String("out", "", "directory for the shards, all.csv and test.csv")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("give --out DIR")
	}
	return g.Write(*out)
}

func cmdTrain(args []string, stdout io.Writer) error {
	fl := newFlags("train")
	modelDir := fl.String("model", os.Getenv("BARGE_MODEL_DIR"), "the global model's directory")
	data := fl.String("data", os.Getenv("BARGE_DATA_DIR"), "a directory of CSV files, or one CSV file")
	out := fl.String("out", os.Getenv("BARGE_OUTPUT_DIR"), "directory for the update")
	round := fl.Int("round", envInt("BARGE_ROUND", 1), "the round, which varies the shuffles")
	claim := fl.Int("report-samples", 0, "report this many samples in update.json, whatever was trained on (a lying node, for tests)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *modelDir == "" || *data == "" || *out == "" {
		return errors.New("give --model, --data and --out, or set BARGE_MODEL_DIR, BARGE_DATA_DIR and BARGE_OUTPUT_DIR")
	}
	u, err := Train(*modelDir, *data, *out, *round, *claim)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "round %d: trained on %d samples; validation accuracy %.4f, loss %.4f\n",
		*round, u.Samples, u.Metrics["accuracy"], u.Metrics["loss"])
	return nil
}

func cmdEval(args []string, stdout io.Writer) error {
	fl := newFlags("eval")
	modelDir := fl.String("model", "", "the model's directory")
	data := fl.String("data", "", "a CSV file, or a directory of them")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *modelDir == "" || *data == "" {
		return errors.New("give --model DIR and --data FILE.csv")
	}
	m, err := LoadModel(filepath.Join(*modelDir, modelFile))
	if err != nil {
		return err
	}
	d, err := ReadData(*data, m.Features, m.Classes)
	if err != nil {
		return err
	}
	acc, loss := m.Evaluate(d)
	fmt.Fprintf(stdout, "accuracy %.4f loss %.4f samples %d\n", acc, loss, d.Len())
	return nil
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}
