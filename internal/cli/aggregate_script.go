package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/unpack"
	"github.com/bargeml/barge/fedavg"
	"github.com/bargeml/barge/safetensors"
)

// `barge aggregate fetch` and `barge aggregate publish` are the halves of
// `barge aggregate fedavg` around an aggregation of the model's own
// (spec.aggregation Script): fetch lays the round out in a directory with
// the same selection and checks of the updates, the model's aggregate code
// writes the new model, publish pushes it as fedavg would. The layout of
// that directory is the script contract.
const (
	// scriptBaseDir holds the base's files (BARGE_BASE_DIR).
	scriptBaseDir = "base"
	// scriptUpdatesDir holds updates/<node>/, each update's files, and
	// updates/updates.json (BARGE_UPDATES_DIR).
	scriptUpdatesDir = "updates"
	// scriptUpdatesFile, in scriptUpdatesDir, lists the updates:
	// [{node, digest, samples, metrics}].
	scriptUpdatesFile = "updates.json"
	// scriptOutDir is where the script writes the new model
	// (BARGE_AGGREGATE_OUTPUT_DIR), unless publish is given --out.
	scriptOutDir = "out"
	// scriptMetricsFile, in the output directory, is the new model's
	// metrics; it is attached as a metrics referrer, not packed.
	scriptMetricsFile = "metrics.json"
	// scriptEntry is the aggregate code's executable, which fetch marks
	// executable: OCI layers keep no file mode.
	scriptEntry = "aggregate/aggregate"
	// maxScriptUpdatesBytes bounds updates.json, which the script could
	// have rewritten.
	maxScriptUpdatesBytes = 16 << 20
)

// scriptUpdate is one entry of updates.json.
type scriptUpdate struct {
	Node    string             `json:"node"`
	Digest  string             `json:"digest"`
	Samples int64              `json:"samples"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// fetchResult is what `barge aggregate fetch` prints.
type fetchResult struct {
	Base    string         `json:"base"`
	Round   int            `json:"round"`
	Run     string         `json:"run,omitempty"`
	Dir     string         `json:"dir"`
	Updates []scriptUpdate `json:"updates"`
}

// roundFlags are the flags that say which round's updates: fedavg's, for
// fetch and publish.
func roundFlags(cmd *cobra.Command, f *aggregateFlags, updatesRepoHelp string) {
	fl := cmd.Flags()
	fl.BoolVar(&f.rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
	fl.StringVar(&f.base, "base", "", "the round's base model, REPO@DIGEST")
	fl.IntVar(&f.round, "round", 0, "the round whose updates to aggregate")
	fl.StringVar(&f.run, "run", "", "the training run (TrainingModel uid) the updates must belong to")
	fl.StringVar(&f.updatesRepo, "updates-repo", "", updatesRepoHelp)
	fl.StringVar(&f.dir, "dir", "", "the round's directory: base/, updates/<node>/, updates/updates.json, out/")
	f.chunk = "1M"
	_ = cmd.MarkFlagRequired("base")
	_ = cmd.MarkFlagRequired("round")
	_ = cmd.MarkFlagRequired("dir")
}

func newAggregateFetchCommand(s streams) *cobra.Command {
	var f aggregateFlags
	cmd := &cobra.Command{
		Use:   "fetch --base REF --round N --updates-repo REPO --dir DIR",
		Short: "Download a round's base and updates into a directory, for an aggregation script",
		Long: `Download the base model and the round's updates into DIR, choosing and
checking the updates as 'barge aggregate fedavg' does (same base, round and
run; one per node; update.json agrees with the sample count; when the base
has safetensors weights, each update has the same files, tensor names,
shapes and dtypes). DIR must be empty or new. It then holds:

  base/                 the base's files (base/aggregate/aggregate made executable)
  updates/<node>/       each update's files (*.safetensors, update.json)
  updates/updates.json  [{"node", "digest", "samples", "metrics"}], sorted by node
  out/                  empty: the script writes the new model here

Then run the model's aggregate code, and 'barge aggregate publish'.`,
		Example: `  barge aggregate fetch --base registry.example.com/models/mnist@sha256:… --round 3 --run 5f0c… \
      --updates-repo registry.example.com/models/mnist --dir /work`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFetch(cmd.Context(), s, f)
		},
	}
	roundFlags(cmd, &f, "the repository the nodes uploaded their updates to")
	cmd.Flags().StringArrayVar(&f.updates, "update", nil, "an update to fetch, DIGEST in the updates repository or REPO@DIGEST (repeatable; default: all of the round's)")
	_ = cmd.MarkFlagRequired("updates-repo")
	return cmd
}

func runFetch(ctx context.Context, s streams, f aggregateFlags) error {
	ag, err := newAggregation(s, f)
	if err != nil {
		return err
	}
	if err := emptyDir(f.dir); err != nil {
		return err
	}
	ag.work = filepath.Join(f.dir, ".store")
	defer os.RemoveAll(ag.work)
	if ag.base, err = resolve(ctx, ag.baseRepo, ag.baseRef); err != nil {
		return fmt.Errorf("aggregate: base %s: %w", ag.baseRef, err)
	}
	if ag.updates, err = ag.selectUpdates(ctx); err != nil {
		return err
	}
	for _, u := range ag.updates {
		if err := checkNodeName(u.Node); err != nil {
			return fmt.Errorf("aggregate: %s: %w", u.name(), err)
		}
	}
	baseDir := filepath.Join(f.dir, scriptBaseDir)
	_, weights, err := ag.download(ctx, baseDir, false, func(_ int, u selectedUpdate) string {
		return filepath.Join(f.dir, scriptUpdatesDir, u.Node)
	})
	if err != nil {
		return err
	}
	for _, u := range ag.updates {
		for _, w := range weights {
			if err := checkTensors(baseDir, u, w); err != nil {
				return fmt.Errorf("aggregate: %w", err)
			}
		}
	}
	if err := makeExecutable(filepath.Join(baseDir, filepath.FromSlash(scriptEntry))); err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(f.dir, scriptOutDir), 0o755); err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	res := fetchResult{Base: string(ag.base.Digest), Round: f.round, Run: f.run, Dir: f.dir, Updates: []scriptUpdate{}}
	for _, u := range ag.updates {
		res.Updates = append(res.Updates, scriptUpdate{Node: u.Node, Digest: string(u.Desc.Digest), Samples: u.Samples, Metrics: u.Metrics})
	}
	b, err := json.MarshalIndent(res.Updates, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(f.dir, scriptUpdatesDir, scriptUpdatesFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	fmt.Fprintf(s.err, "Fetched the base and %d updates into %s\n", len(ag.updates), f.dir)
	return writeJSON(s.out, res)
}

// emptyDir makes dir, or checks that it is empty: a file left from another
// round would reach the script as if it were this round's.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return os.MkdirAll(dir, 0o755)
	case err != nil:
		return fmt.Errorf("aggregate: --dir: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("aggregate: --dir %s is not empty: give a new or empty directory (fetch writes base/, updates/ and out/ there)", dir)
	}
	return nil
}

// checkNodeName refuses a node name (an update's annotation, set by the
// node) that is not a plain directory name: it names updates/<node>/,
// beside updates/updates.json.
func checkNodeName(node string) error {
	ok := node != "" && len(node) <= 253 && isAlnum(node[0]) && node != scriptUpdatesFile
	for i := 0; ok && i < len(node); i++ {
		c := node[i]
		ok = isAlnum(c) || c == '-' || c == '.' || c == '_'
	}
	if !ok {
		return fmt.Errorf("its node name %q is not a Kubernetes node name: it cannot name a directory", node)
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// checkTensors refuses an update whose weight file rel differs from the
// base's in tensor names, shapes or dtypes, as FedAvg would: the script
// gets updates it can line up with the base.
func checkTensors(baseDir string, u selectedUpdate, rel string) error {
	open := func(dir string) (*safetensors.File, io.Closer, error) {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return nil, nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		sf, err := safetensors.Open(f, fi.Size())
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		return sf, f, nil
	}
	base, bc, err := open(baseDir)
	if err != nil {
		return fmt.Errorf("base %s: %w", rel, err)
	}
	defer bc.Close()
	uf, uc, err := open(u.Dir)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", u.name(), rel, err)
	}
	defer uc.Close()
	return fedavg.Check(base, fedavg.Update{Node: u.Node, ID: shortDigest(string(u.Desc.Digest)), Samples: u.Samples, File: uf})
}

func makeExecutable(name string) error {
	fi, err := os.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return os.Chmod(name, fi.Mode().Perm()|0o555)
}

func newAggregatePublishCommand(s streams) *cobra.Command {
	var f aggregateFlags
	cmd := &cobra.Command{
		Use:   "publish --dir DIR --base REF --round N --push REF:TAG",
		Short: "Push the model an aggregation script wrote, as 'barge aggregate fedavg' pushes its own",
		Long: `Push DIR/out (the model an aggregation script wrote after 'barge aggregate
fetch') as the new global model, with the base's metadata and the
provenance annotations fedavg writes (method "script"). Code directories
(train/, aggregate/, ...) the script did not write are carried over from the
base, checked against the base's digests. The updates named in
DIR/updates/updates.json are read again from the registry: each must still be an
update of this base, round and run, of the node and sample count listed.
Metrics: DIR/out/metrics.json when the script wrote one (not packed into
the model), else the participants' sample-weighted means. --promote and
--require as for fedavg. Prints the same JSON result.`,
		Example: `  barge aggregate publish --dir /work --base registry.example.com/models/mnist@sha256:… --round 3 \
      --run 5f0c… --push registry.example.com/models/mnist:train-r3 --promote 1.1.0 --require 'metrics.accuracy >= 0.9'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPublish(cmd.Context(), s, f)
		},
	}
	roundFlags(cmd, &f, "the repository the nodes uploaded their updates to (default: the --push repository)")
	fl := cmd.Flags()
	fl.StringVar(&f.out, "out", "", "the new model's files (default: DIR/out)")
	fl.StringVar(&f.push, "push", "", "where to push the new model, REPO:TAG")
	fl.StringVar(&f.promote, "promote", "", "also tag the new model VERSION when every --require passes")
	fl.StringArrayVar(&f.require, "require", nil, "a CEL expression over the new model's metrics that --promote needs, such as 'metrics.accuracy >= 0.9' (repeatable)")
	_ = cmd.MarkFlagRequired("push")
	return cmd
}

func runPublish(ctx context.Context, s streams, f aggregateFlags) error {
	if f.out == "" {
		f.out = filepath.Join(f.dir, scriptOutDir)
	}
	entries, err := readScriptUpdates(filepath.Join(f.dir, scriptUpdatesDir, scriptUpdatesFile))
	if err != nil {
		return err
	}
	for _, e := range entries {
		f.updates = append(f.updates, e.Digest)
	}
	ag, err := newAggregation(s, f)
	if err != nil {
		return err
	}
	ag.work = f.dir
	if ag.base, err = resolve(ctx, ag.baseRepo, ag.baseRef); err != nil {
		return fmt.Errorf("aggregate: base %s: %w", ag.baseRef, err)
	}
	base, err := artifact.Inspect(ctx, ag.baseRepo, ag.base)
	if err != nil {
		return fmt.Errorf("aggregate: base %s: %w", ag.baseRef, explain(err, ag.baseRef))
	}
	if base.Kind != artifact.KindModel {
		return fmt.Errorf("aggregate: base %s is a %s, not a model", ag.baseRef, base.Kind)
	}
	if ag.updates, err = ag.selectUpdates(ctx); err != nil {
		return err
	}
	if err := matchScriptUpdates(ag.updates, entries); err != nil {
		return err
	}
	metrics, err := scriptMetrics(f.out, ag.updates)
	if err != nil {
		return err
	}
	stage := filepath.Join(f.dir, ".publish")
	if err := os.RemoveAll(stage); err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := stageModel(f.out, stage, f.dir); err != nil {
		return err
	}
	if err := carryCode(base, filepath.Join(f.dir, scriptBaseDir), f.out, stage); err != nil {
		return err
	}
	res, err := ag.publish(ctx, base, stage, "script", metrics)
	if err != nil {
		return err
	}
	return writeJSON(s.out, res)
}

// readScriptUpdates reads updates.json strictly: the script runs with it
// writable.
func readScriptUpdates(name string) ([]scriptUpdate, error) {
	b, err := readLimited(name, maxScriptUpdatesBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("aggregate: %s does not exist: run `barge aggregate fetch` into --dir first", name)
	}
	if err != nil {
		return nil, fmt.Errorf("aggregate: %w", err)
	}
	entries, err := parseScriptUpdates(b)
	if err != nil {
		return nil, fmt.Errorf("aggregate: %s: %w", name, err)
	}
	return entries, nil
}

// parseScriptUpdates parses updates.json: a non-empty list of updates,
// each named by digest.
func parseScriptUpdates(b []byte) ([]scriptUpdate, error) {
	if len(b) > maxScriptUpdatesBytes {
		return nil, fmt.Errorf("%d bytes, more than the %d MiB limit", len(b), maxScriptUpdatesBytes>>20)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var entries []scriptUpdate
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("not a list of updates [{\"node\", \"digest\", \"samples\", \"metrics\"}]: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("lists no updates")
	}
	for i, e := range entries {
		if _, err := digest.Parse(e.Digest); err != nil {
			return nil, fmt.Errorf("update %d: digest %q: %v", i+1, e.Digest, err)
		}
	}
	return entries, nil
}

// matchScriptUpdates checks updates.json against the updates as the
// registry has them, and takes each one's metrics from it.
func matchScriptUpdates(updates []selectedUpdate, entries []scriptUpdate) error {
	byDigest := map[string]scriptUpdate{}
	for _, e := range entries {
		byDigest[e.Digest] = e
	}
	for i := range updates {
		u := &updates[i]
		e := byDigest[string(u.Desc.Digest)]
		if e.Node != u.Node || e.Samples != u.Samples {
			return fmt.Errorf("aggregate: %s: %s says node %s, %d samples; the update's annotations say node %s, %d: the file was altered, run fetch again",
				u.name(), scriptUpdatesFile, e.Node, e.Samples, u.Node, u.Samples)
		}
		u.Metrics = e.Metrics
	}
	return nil
}

// scriptMetrics are the new model's metrics: the script's metrics.json, or
// the participants' sample-weighted means.
func scriptMetrics(out string, updates []selectedUpdate) (map[string]float64, error) {
	name := filepath.Join(out, scriptMetricsFile)
	b, err := readLimited(name, artifact.MaxMetricsBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return weightedMetrics(updates), nil
	}
	if err != nil {
		return nil, fmt.Errorf("aggregate: %w", err)
	}
	m, err := artifact.ParseMetrics(b)
	if err != nil {
		return nil, fmt.Errorf("aggregate: the aggregation's %s: %w", name, err)
	}
	return m.Metrics, nil
}

// stageModel links (or copies) the files the script wrote into stage, but
// metrics.json. A symlink is followed only to a file inside root (the
// round's directory, e.g. a weight file of the base the script kept): the
// publishing container must not pack a file of its own, such as its push
// credential, because the script pointed at it.
func stageModel(out, stage, root string) error {
	rootReal, err := filepath.EvalSymlinks(root)
	if err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	files := 0
	err = filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(out, p)
		if err != nil {
			return err
		}
		slash := filepath.ToSlash(rel)
		target := filepath.Join(stage, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case slash == scriptMetricsFile || slash == unpack.PullMarker:
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				return fmt.Errorf("symlink %s is broken: %w", slash, err)
			}
			if !strings.HasPrefix(real, rootReal+string(filepath.Separator)) {
				return fmt.Errorf("symlink %s points outside %s (to %s): write the file itself", slash, root, real)
			}
			fi, err := os.Stat(real)
			if err != nil || !fi.Mode().IsRegular() {
				return fmt.Errorf("symlink %s does not point to a regular file", slash)
			}
			p = real
		case !d.Type().IsRegular():
			return fmt.Errorf("%s is a %s, not a regular file", slash, d.Type())
		}
		files++
		return linkOrCopy(p, target)
	})
	if err != nil {
		return fmt.Errorf("aggregate: the new model in %s: %w", out, err)
	}
	if files == 0 {
		return fmt.Errorf("aggregate: %s holds no file: the aggregation wrote no model (BARGE_AGGREGATE_OUTPUT_DIR)", out)
	}
	return nil
}

func linkOrCopy(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

// carryCode puts into stage the base's code directories (train/,
// aggregate/, ...) that the script did not write, so that the next round
// trains and aggregates with the same code. Each file must still match
// the base's layer digest: the script could have rewritten base/.
func carryCode(base *artifact.Artifact, baseDir, out, stage string) error {
	for _, f := range base.Files {
		if f.Role == "" {
			continue
		}
		if _, err := os.Lstat(filepath.Join(out, f.Role)); err == nil {
			continue // the script wrote its own
		}
		src := filepath.Join(baseDir, filepath.FromSlash(f.Path))
		dst := filepath.Join(stage, filepath.FromSlash(f.Path))
		if f.Unpack {
			return fmt.Errorf("aggregate: base %s: its %s code is a tar layer (%s), which publish does not carry over: write %s/ into the output", base.Digest, f.Role, f.Path, f.Role)
		}
		if err := verifyFile(src, f.Digest); err != nil {
			return fmt.Errorf("aggregate: carry %s over from the base: %w; run fetch again", f.Path, err)
		}
		if err := linkOrCopy(src, dst); err != nil {
			return fmt.Errorf("aggregate: carry %s over from the base: %w", f.Path, err)
		}
	}
	return nil
}

func verifyFile(name string, want digest.Digest) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	v := want.Verifier()
	if _, err := io.Copy(v, f); err != nil {
		return err
	}
	if !v.Verified() {
		return fmt.Errorf("%s does not match the base's digest %s", name, want)
	}
	return nil
}
