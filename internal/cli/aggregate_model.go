package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/edgepuller/unpack"
	"github.com/bargeml/barge/fedavg"
	"github.com/bargeml/barge/safetensors"
)

// Annotations on an aggregated model: where it came from.
const (
	AnnotationAggregateBase   = "dev.barge.aggregate.base"
	AnnotationAggregateRound  = "dev.barge.aggregate.round"
	AnnotationAggregateRun    = "dev.barge.aggregate.run"
	AnnotationAggregateMethod = "dev.barge.aggregate.method"
	// AnnotationAggregateUpdates lists the digests of the updates averaged,
	// sorted, comma-separated: the model names its inputs, which a
	// registry's referrers listing cannot be trusted to (without the
	// referrers API, two nodes pushing at once can drop each other from
	// the referrers tag).
	AnnotationAggregateUpdates = "dev.barge.aggregate.updates"
)

// aggregate downloads the base and the updates, averages the base's
// safetensors files, pushes the new model and its metrics, and promotes it.
func (ag *aggregation) aggregate(ctx context.Context) (*aggregateResult, error) {
	baseDir := filepath.Join(ag.work, "base")
	baseArt, weights, err := ag.download(ctx, baseDir, true, func(i int, _ selectedUpdate) string {
		return filepath.Join(ag.work, "updates", strconv.Itoa(i))
	})
	if err != nil {
		return nil, err
	}
	outDir := filepath.Join(ag.work, "out")
	if err := ag.average(ctx, baseDir, outDir, weights); err != nil {
		return nil, err
	}
	return ag.publish(ctx, baseArt, outDir, "fedavg", weightedMetrics(ag.updates))
}

// download pulls the base into baseDir and each selected update into
// updateDir(i, u), through a content store in the work directory, and
// checks each update's files against the base's weight files (the base's
// *.safetensors outside its code directories, which it returns; with
// needWeights, a base without any is refused before an update is fetched).
func (ag *aggregation) download(ctx context.Context, baseDir string, needWeights bool, updateDir func(int, selectedUpdate) string) (*artifact.Artifact, []string, error) {
	st, err := store.Open(filepath.Join(ag.work, "store"), store.Options{NoSync: true})
	if err != nil {
		return nil, nil, fmt.Errorf("aggregate: %w", err)
	}
	baseArt, err := ag.fetch(ctx, st, ag.baseRef, ag.baseRepo, ag.base, baseDir, func(a *artifact.Artifact) error {
		if a.Kind != artifact.KindModel {
			return fmt.Errorf("base %s is a %s, not a model", ag.base.Digest, a.Kind)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("aggregate: base %s: %w", ag.baseRef, err)
	}
	weights := safetensorsFiles(baseArt)
	if needWeights && len(weights) == 0 {
		return nil, nil, fmt.Errorf("aggregate: base %s has no .safetensors file outside its code directories: FedAvg averages safetensors weights", ag.baseRef)
	}
	for i := range ag.updates {
		u := &ag.updates[i]
		u.Dir = updateDir(i, *u)
		fmt.Fprintf(ag.s.err, "Fetching    %s (%d samples)\n", u.name(), u.Samples)
		a, err := ag.fetch(ctx, st, ag.updRef, ag.updRepo, u.Desc, u.Dir, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("aggregate: %s: %w", u.name(), err)
		}
		if err := ag.readUpdateInfo(u, a, weights); err != nil {
			return nil, nil, fmt.Errorf("aggregate: %s: %w", u.name(), err)
		}
	}
	return baseArt, weights, nil
}

// fetch pulls one artifact through the work store into dir: blobs stream
// to disk and are verified, never held in memory.
func (ag *aggregation) fetch(ctx context.Context, st *store.Store, ref registry.Reference, repo *remote.Repository, desc ocispec.Descriptor, dir string, check func(*artifact.Artifact) error) (*artifact.Artifact, error) {
	p := newProgress(ag.s, false)
	var names map[digest.Digest]string
	opts := fetch.Options{PlainHTTP: repo.PlainHTTP, Client: repo.Client}
	opts.Check = func(a *artifact.Artifact) error {
		if check != nil {
			if err := check(a); err != nil {
				return err
			}
		}
		names = fileNames(a)
		return nil
	}
	opts.Progress = fetchProgress(p, func(d digest.Digest) (string, bool) { n, ok := names[d]; return n, ok })
	ref.Reference = string(desc.Digest)
	_, a, _, err := fetch.Pull(ctx, st, ref.String(), opts)
	p.wait()
	if err != nil {
		return nil, explain(err, ref)
	}
	if err := unpack.ReplaceDir(ctx, st, a.FileLayers(), dir, unpack.Options{}); err != nil {
		return nil, err
	}
	return a, nil
}

// safetensorsFiles are the model's weight files that FedAvg averages: its
// *.safetensors outside the code directories.
func safetensorsFiles(a *artifact.Artifact) []string {
	var out []string
	for _, f := range a.Files {
		if f.Role == "" && !f.Unpack && strings.HasSuffix(f.Path, ".safetensors") {
			out = append(out, f.Path)
		}
	}
	return out
}

// readUpdateInfo checks an update's files: the base's safetensors files and
// no others (when the base has some), and an update.json whose samples
// agree with the annotation the round was counted by.
func (ag *aggregation) readUpdateInfo(u *selectedUpdate, a *artifact.Artifact, weights []string) error {
	if err := checkUpdateWeights(a, weights); err != nil {
		return err
	}
	b, err := readLimited(filepath.Join(u.Dir, artifact.UpdateInfoFile), artifact.MaxUpdateInfoBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("it has no %s", artifact.UpdateInfoFile)
	}
	if err != nil {
		return err
	}
	info, err := artifact.ParseUpdateInfo(b)
	if err != nil {
		return err
	}
	if info.Samples != u.Samples {
		return fmt.Errorf("its %s says %d samples, its annotation %s says %d: it was altered after packing", artifact.UpdateInfoFile, info.Samples, artifact.AnnotationUpdateSamples, u.Samples)
	}
	u.Metrics = info.Metrics
	return nil
}

// checkUpdateWeights: an update carries the base's weight files and no
// other safetensors file. A base without any (aggregated by a script)
// leaves the update's files to the script.
func checkUpdateWeights(a *artifact.Artifact, weights []string) error {
	if len(weights) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, w := range weights {
		want[w] = true
	}
	got := map[string]bool{}
	for _, f := range a.Files {
		if strings.HasSuffix(f.Path, ".safetensors") {
			if !want[f.Path] {
				return fmt.Errorf("it has %s, which the base does not: an update carries the base's safetensors files (%s)", f.Path, strings.Join(weights, ", "))
			}
			got[f.Path] = true
		}
	}
	for _, w := range weights {
		if !got[w] {
			return fmt.Errorf("it has no %s: an update carries every safetensors file of the base", w)
		}
	}
	return nil
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}

// average builds the new model's directory: the base's files, each weight
// file replaced by the weighted mean of the updates'.
func (ag *aggregation) average(ctx context.Context, baseDir, outDir string, weights []string) error {
	averaged := map[string]bool{}
	for _, w := range weights {
		averaged[w] = true
	}
	if err := copyTree(baseDir, outDir, func(rel string) bool { return rel == unpack.PullMarker || averaged[rel] }); err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	for _, w := range weights {
		if err := ag.averageFile(ctx, baseDir, outDir, w); err != nil {
			return err
		}
	}
	return nil
}

// averageFile averages one safetensors file over the updates.
func (ag *aggregation) averageFile(ctx context.Context, baseDir, outDir, rel string) error {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	open := func(dir string) (*safetensors.File, error) {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return nil, err
		}
		closers = append(closers, f)
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		return safetensors.Open(f, fi.Size())
	}
	base, err := open(baseDir)
	if err != nil {
		return fmt.Errorf("aggregate: base %s: %w", rel, err)
	}
	updates := make([]fedavg.Update, len(ag.updates))
	for i, u := range ag.updates {
		sf, err := open(u.Dir)
		if err != nil {
			return fmt.Errorf("aggregate: %s: %s: %w", u.name(), rel, err)
		}
		updates[i] = fedavg.Update{Node: u.Node, ID: shortDigest(string(u.Desc.Digest)), Samples: u.Samples, File: sf}
	}
	dst := filepath.Join(outDir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	closers = append(closers, out)
	w := bufio.NewWriterSize(out, 1<<20)
	fmt.Fprintf(ag.s.err, "Averaging   %s over %d updates\n", rel, len(updates))
	if err := fedavg.Average(ctx, w, base, updates, fedavg.Options{ChunkBytes: ag.chunk}); err != nil {
		return fmt.Errorf("aggregate: %s: %w", rel, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("aggregate: write %s: %w", dst, err)
	}
	return out.Close()
}

// copyTree hard-links (or copies) the regular files under src into dst,
// but those skip names.
func copyTree(src, dst string, skip func(rel string) bool) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case !d.Type().IsRegular() || skip(filepath.ToSlash(rel)):
			return nil
		}
		if err := os.Link(p, target); err == nil {
			return nil
		}
		return copyFile(p, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// publish packs the new model in dir with the base's metadata, pushes and
// tags it, attaches metrics and promotes it. method names how it was made
// (dev.barge.aggregate.method).
func (ag *aggregation) publish(ctx context.Context, base *artifact.Artifact, dir, method string, metrics map[string]float64) (*aggregateResult, error) {
	opts := artifact.PackOptions{
		Kind: artifact.KindModel,
		Metadata: artifact.Metadata{
			Name: base.Name, Task: base.Metadata["task"], Framework: base.Metadata["framework"], Labels: base.Labels,
		},
		Annotations: carriedAnnotations(base.Annotations),
	}
	opts.Annotations[AnnotationAggregateMethod] = method
	opts.Annotations[AnnotationAggregateBase] = string(ag.base.Digest)
	opts.Annotations[AnnotationAggregateRound] = strconv.Itoa(ag.f.round)
	if ag.f.run != "" {
		opts.Annotations[AnnotationAggregateRun] = ag.f.run
	}
	inputs := make([]string, len(ag.updates))
	for i, u := range ag.updates {
		inputs[i] = string(u.Desc.Digest)
	}
	slices.Sort(inputs)
	opts.Annotations[AnnotationAggregateUpdates] = strings.Join(inputs, ",")
	p := newProgress(ag.s, false)
	desc, err := artifact.Pack(ctx, progressStorage{Storage: ag.pushRepo, p: p}, dir, opts)
	p.wait()
	if err != nil {
		return nil, fmt.Errorf("aggregate: push %s: %w", ag.pushRef, explain(err, ag.pushRef))
	}
	if err := ag.pushRepo.Tag(ctx, desc, ag.pushRef.Reference); err != nil {
		return nil, explain(fmt.Errorf("aggregate: tag %s: %w", ag.pushRef, err), ag.pushRef)
	}
	fmt.Fprintf(ag.s.err, "Pushed %s (%s)\n", ag.pushRef, desc.Digest)
	res := &aggregateResult{
		Digest: string(desc.Digest), Reference: ag.pushRef.String(), Tag: ag.pushRef.Reference,
		Base: string(ag.base.Digest), Round: ag.f.round, Run: ag.f.run,
		Metrics: metrics,
	}
	for _, u := range ag.updates {
		res.Updates = append(res.Updates, aggregatedUpdate{Node: u.Node, Digest: string(u.Desc.Digest), Samples: u.Samples})
		res.Samples += u.Samples
	}
	if len(res.Metrics) > 0 {
		m, err := artifact.AttachMetrics(ctx, ag.pushRepo, desc, artifact.Metrics{Metrics: res.Metrics})
		if err != nil {
			return nil, fmt.Errorf("aggregate: attach metrics to %s: %w", desc.Digest, explain(err, ag.pushRef))
		}
		res.MetricsDigest = string(m.Digest)
	} else {
		res.Metrics = map[string]float64{}
	}
	if err := ag.promote(ctx, desc, res.Metrics, res); err != nil {
		return nil, err
	}
	return res, nil
}

// carriedAnnotations are the base's manifest annotations the new model
// keeps: its description, source and metadata, but not its creation time,
// version or the provenance of an earlier aggregation.
func carriedAnnotations(base map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		switch {
		case k == ocispec.AnnotationCreated, k == ocispec.AnnotationVersion,
			strings.HasPrefix(k, "dev.barge.aggregate."), strings.HasPrefix(k, "dev.barge.update."):
			continue
		}
		out[k] = v
	}
	return out
}
