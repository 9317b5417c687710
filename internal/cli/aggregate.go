package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/Masterminds/semver/v3"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/fedavg"
	"github.com/bargeml/barge/selection"
)

func newAggregateCommand(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "aggregate",
		Short: "Aggregate the updates federated training nodes sent back into a new global model",
	}
	cmd.AddCommand(newAggregateFedAvgCommand(s), newAggregateFetchCommand(s), newAggregatePublishCommand(s))
	return cmd
}

// aggregateFlags are `barge aggregate fedavg`'s, and those of its halves
// fetch and publish.
type aggregateFlags struct {
	rf          remoteFlags
	base        string
	round       int
	run         string
	updates     []string
	updatesRepo string
	push        string
	promote     string
	require     []string
	chunk       string
	workDir     string
	// dir is fetch's and publish's shared directory; out, publish's model.
	dir string
	out string
}

func newAggregateFedAvgCommand(s streams) *cobra.Command {
	var f aggregateFlags
	cmd := &cobra.Command{
		Use:   "fedavg --base REF --round N --push REF:TAG",
		Short: "Average a round's updates weighted by their samples (FedAvg) and push the result",
		Long: `Average the updates of one training round into the next global model:
every *.safetensors file of the base becomes the mean of the updates' files of
the same name, weighted by the samples each node trained on. F32, F16, BF16
and F64 tensors are averaged (in float64, rounded once); integer, boolean and
8-bit float tensors are taken from the base unchanged. An update whose tensor
names, shapes or dtypes differ from the base's, or that holds NaN or infinity,
is refused by node and digest. Tensors stream in bounded chunks: memory does
not grow with the model.

The updates are the base's update referrers of --round (and --run) in the
--push repository, or exactly the --update digests. The result keeps the
base's other files (train/ and aggregate/ code) and metadata, is pushed as
--push, and gets the participants' metrics (sample-weighted means) attached
as a metrics referrer. With --promote, it is also tagged VERSION when every
--require expression passes on those metrics (the CEL of an InferenceModel's
spec.selection). Prints a JSON result.`,
		Example: `  barge aggregate fedavg --base 127.0.0.1:5000/models/mnist@sha256:… --round 1 \
      --push 127.0.0.1:5000/models/mnist:train-r1
  barge aggregate fedavg --base registry.example.com/models/mnist@sha256:… --round 3 --run 5f0c… \
      --update sha256:… --update sha256:… --push registry.example.com/models/mnist:train-r3 \
      --promote 1.1.0 --require 'metrics.accuracy >= 0.9'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAggregate(cmd.Context(), s, f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
	fl.StringVar(&f.base, "base", "", "the round's base model, REPO@DIGEST (or a tag)")
	fl.IntVar(&f.round, "round", 0, "the round whose updates to average")
	fl.StringVar(&f.run, "run", "", "the training run (TrainingModel uid) the updates must belong to")
	fl.StringArrayVar(&f.updates, "update", nil, "an update to average, DIGEST in the updates repository or REPO@DIGEST (repeatable; default: all of the round's)")
	fl.StringVar(&f.updatesRepo, "updates-repo", "", "the repository the nodes uploaded their updates to (default: the --push repository)")
	fl.StringVar(&f.push, "push", "", "where to push the new model, REPO:TAG")
	fl.StringVar(&f.promote, "promote", "", "also tag the new model VERSION when every --require passes")
	fl.StringArrayVar(&f.require, "require", nil, "a CEL expression over the aggregated metrics that --promote needs, such as 'metrics.accuracy >= 0.9' (repeatable)")
	fl.StringVar(&f.chunk, "chunk-size", "1M", "how much of a tensor is read from each update at a time; memory is a few times this")
	fl.StringVar(&f.workDir, "work-dir", "", "where the updates and the base are downloaded (default: a new directory under $TMPDIR, removed afterwards)")
	_ = cmd.MarkFlagRequired("base")
	_ = cmd.MarkFlagRequired("round")
	_ = cmd.MarkFlagRequired("push")
	return cmd
}

// aggregateResult is what `barge aggregate fedavg` prints.
type aggregateResult struct {
	Digest    string             `json:"digest"`
	Reference string             `json:"reference"`
	Tag       string             `json:"tag"`
	Base      string             `json:"base"`
	Round     int                `json:"round"`
	Run       string             `json:"run,omitempty"`
	Updates   []aggregatedUpdate `json:"updates"`
	Samples   int64              `json:"samples"`
	Metrics   map[string]float64 `json:"metrics"`
	// MetricsDigest is the metrics referrer's, when there were metrics.
	MetricsDigest string `json:"metricsDigest,omitempty"`
	Promoted      bool   `json:"promoted"`
	Version       string `json:"version,omitempty"`
	// Reason says why the model was or was not promoted.
	Reason string `json:"reason,omitempty"`
}

type aggregatedUpdate struct {
	Node    string `json:"node"`
	Digest  string `json:"digest"`
	Samples int64  `json:"samples"`
}

// aggregation is one run of the command: where things are and what was
// chosen.
type aggregation struct {
	s                  streams
	f                  aggregateFlags
	chunk              int
	policy             *selection.Policy
	baseRef, pushRef   registry.Reference
	updRef             registry.Reference
	baseRepo, pushRepo *remote.Repository
	updRepo            *remote.Repository
	base               ocispec.Descriptor
	work               string
	updates            []selectedUpdate
}

func runAggregate(ctx context.Context, s streams, f aggregateFlags) error {
	ag, err := newAggregation(s, f)
	if err != nil {
		return err
	}
	if ag.work == "" {
		if ag.work, err = os.MkdirTemp("", "barge-aggregate-"); err != nil {
			return fmt.Errorf("aggregate: make a work directory: %w (give one with --work-dir)", err)
		}
		defer os.RemoveAll(ag.work)
	}
	if ag.base, err = resolve(ctx, ag.baseRepo, ag.baseRef); err != nil {
		return fmt.Errorf("aggregate: base %s: %w", ag.baseRef, err)
	}
	if ag.updates, err = ag.selectUpdates(ctx); err != nil {
		return err
	}
	res, err := ag.aggregate(ctx)
	if err != nil {
		return err
	}
	return writeJSON(s.out, res)
}

// newAggregation checks the flags before anything is downloaded.
func newAggregation(s streams, f aggregateFlags) (*aggregation, error) {
	ag := &aggregation{s: s, f: f, work: f.workDir}
	if f.round < 1 {
		return nil, fmt.Errorf("aggregate: --round %d: rounds count from 1", f.round)
	}
	chunk, err := parseRate("--chunk-size", f.chunk)
	if err != nil {
		return nil, err
	}
	if chunk <= 0 || chunk > 1<<30 {
		return nil, fmt.Errorf("aggregate: --chunk-size %s: give a size between 1 and 1G", f.chunk)
	}
	ag.chunk = int(chunk)
	if ag.baseRef, ag.baseRepo, err = f.rf.open(f.base); err != nil {
		return nil, fmt.Errorf("aggregate: --base: %w", err)
	}
	if ag.baseRef.Reference == "" {
		return nil, fmt.Errorf("aggregate: --base %s: name the base by digest, as in %s@sha256:…", f.base, f.base)
	}
	// `aggregate fetch` pushes nothing: it has no --push.
	if f.push != "" {
		if ag.pushRef, ag.pushRepo, err = f.rf.open(f.push); err != nil {
			return nil, fmt.Errorf("aggregate: --push: %w", err)
		}
		if ag.pushRef.Reference == "" || strings.HasPrefix(ag.pushRef.Reference, "sha256:") {
			return nil, fmt.Errorf("aggregate: --push %s: give a tag, as in %s/%s:round-%d", f.push, ag.pushRef.Registry, ag.pushRef.Repository, f.round)
		}
		ag.updRef, ag.updRepo = ag.pushRef, ag.pushRepo
	}
	if f.updatesRepo != "" {
		if ag.updRef, ag.updRepo, err = f.rf.open(f.updatesRepo); err != nil {
			return nil, fmt.Errorf("aggregate: --updates-repo: %w", err)
		}
	}
	ag.updRef.Reference = ""
	if f.promote == "" && len(f.require) > 0 {
		return nil, fmt.Errorf("aggregate: --require without --promote: say which version to tag when it passes")
	}
	if f.promote != "" {
		if _, err := semver.NewVersion(f.promote); err != nil {
			return nil, fmt.Errorf("aggregate: --promote %q is not a semantic version (such as 1.1.0): an InferenceModel following a range could not pick it up", f.promote)
		}
		if ag.policy, err = selection.Compile(f.require, nil); err != nil {
			return nil, fmt.Errorf("aggregate: %w", err)
		}
	}
	return ag, nil
}

// promote tags the new model as --promote when every --require passes on
// its metrics and metadata, and says why it did or did not.
func (ag *aggregation) promote(ctx context.Context, desc ocispec.Descriptor, metrics map[string]float64, res *aggregateResult) error {
	if ag.f.promote == "" {
		return nil
	}
	res.Version = ag.f.promote
	a, err := artifact.Inspect(ctx, ag.pushRepo, desc)
	if err != nil {
		return explain(err, ag.pushRef)
	}
	ch := ag.policy.Choose([]selection.Candidate{{Version: ag.f.promote, Digest: string(desc.Digest), Metrics: metrics, Metadata: a.Described()}})
	if _, ok := ch.Best(); !ok {
		res.Reason = "not promoted: " + ch.Refused[0].String()
		fmt.Fprintf(ag.s.err, "Not promoted to %s: %s\n", ag.f.promote, ch.Refused[0])
		return nil
	}
	if err := ag.pushRepo.Tag(ctx, desc, ag.f.promote); err != nil {
		ref := ag.pushRef
		ref.Reference = ag.f.promote
		return explain(fmt.Errorf("aggregate: promote: tag %s: %w", ref, err), ref)
	}
	res.Promoted = true
	res.Reason = "promoted: " + ag.policy.Summary(ch)
	fmt.Fprintf(ag.s.err, "Promoted to %s/%s:%s (%s)\n", ag.pushRef.Registry, ag.pushRef.Repository, ag.f.promote, ag.policy.Summary(ch))
	return nil
}

// weightedMetrics are the participants' metrics, averaged by samples.
func weightedMetrics(updates []selectedUpdate) map[string]float64 {
	reports := make([]fedavg.Report, len(updates))
	for i, u := range updates {
		reports[i] = fedavg.Report{Samples: u.Samples, Metrics: u.Metrics}
	}
	return fedavg.Metrics(reports)
}
