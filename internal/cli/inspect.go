package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/dataset"
)

// inspection is what `barge inspect -o json` prints.
type inspection struct {
	Reference string `json:"reference"`
	*artifact.Artifact
	Dataset        *dataset.Stats           `json:"dataset,omitempty"`
	Metrics        map[string]float64       `json:"metrics,omitempty"`
	MetricsRecords []artifact.MetricsRecord `json:"metricsRecords,omitempty"`
	// Parts are a joint model's edge and cloud models, by layer.
	Parts map[string]*artifact.Artifact `json:"parts,omitempty"`
}

func newInspectCommand(s streams) *cobra.Command {
	var (
		rf  remoteFlags
		out output
	)
	cmd := &cobra.Command{
		Use:   "inspect REF",
		Short: "Show an artifact's kind, digest, files, sizes, metadata and metrics",
		Example: `  barge inspect 127.0.0.1:5000/models/resnet:1.0.0
  barge inspect -o json 127.0.0.1:5000/models/resnet@sha256:…`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, repo, err := rf.open(args[0])
			if err != nil {
				return err
			}
			in, err := inspect(cmd.Context(), repo, ref)
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(s.out, in)
			}
			printInspection(s.out, in)
			return nil
		},
	}
	cmd.Flags().BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
	addOutputFlag(cmd, &out)
	return cmd
}

func inspect(ctx context.Context, repo *remote.Repository, ref registry.Reference) (*inspection, error) {
	desc, err := resolve(ctx, repo, ref)
	if err != nil {
		return nil, err
	}
	a, err := artifact.Inspect(ctx, repo, desc)
	if err != nil {
		return nil, explain(fmt.Errorf("inspect %s: %w", ref, err), ref)
	}
	in := &inspection{Reference: ref.String(), Artifact: a}
	if a.Kind == artifact.KindDataset && a.Config.MediaType == artifact.MediaTypeDatasetConfig {
		b, err := artifact.FetchLimited(ctx, repo, a.Config)
		if err != nil {
			return nil, explain(fmt.Errorf("read dataset config: %w", err), ref)
		}
		if in.Dataset, err = datasetStatsOf(b); err != nil {
			return nil, fmt.Errorf("inspect %s: %w", ref, err)
		}
	}
	if a.Kind == artifact.KindJoint {
		if in.Parts, err = inspectParts(ctx, repo, a); err != nil {
			return nil, explain(fmt.Errorf("inspect %s: %w", ref, err), ref)
		}
	}
	// A joint model's metrics are its index's: one version, one digest.
	if a.Kind == artifact.KindModel || a.Kind == artifact.KindGeneric || a.Kind == artifact.KindCode || a.Kind == artifact.KindJoint {
		recs, err := artifact.ListMetrics(ctx, repo, desc)
		if err != nil {
			return nil, explain(err, ref)
		}
		in.MetricsRecords = recs
		in.Metrics = artifact.Latest(recs)
	}
	return in, nil
}

// inspectParts reads both parts of a joint model.
func inspectParts(ctx context.Context, repo *remote.Repository, a *artifact.Artifact) (map[string]*artifact.Artifact, error) {
	parts, err := artifact.JointPartsOf(a)
	if err != nil {
		return nil, err
	}
	out := map[string]*artifact.Artifact{}
	for layer, d := range map[string]ocispec.Descriptor{artifact.LayerEdge: parts.Edge, artifact.LayerCloud: parts.Cloud} {
		part, err := artifact.Inspect(ctx, repo, d)
		if err != nil {
			return nil, fmt.Errorf("%s part: %w", layer, err)
		}
		out[layer] = part
	}
	return out, nil
}

// size is what `barge inspect` reports as an artifact's size and file
// count: a joint model's counts both parts' files.
func (in *inspection) size() (int64, int) {
	a := in.Artifact
	size, files := a.Size, len(a.Files)
	for _, m := range a.Manifests {
		if part := in.Parts[m.Annotations[artifact.AnnotationLayer]]; part != nil && part.Digest == m.Digest {
			size += part.Size - m.Size
			files += len(part.Files)
		}
	}
	return size, files
}

func printInspection(w io.Writer, in *inspection) {
	a := in.Artifact
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("Reference", in.Reference)
	row("Kind", string(a.Kind))
	row("Digest", string(a.Digest))
	row("Artifact type", a.ArtifactType)
	row("Name", a.Name)
	row("Version", a.Version)
	size, files := in.size()
	row("Size", fmt.Sprintf("%s (%d bytes) in %d files", humanBytes(size), size, files))
	for _, k := range sortedKeys(a.Metadata) {
		if k != "labels" {
			row(strings.ToUpper(k[:1])+k[1:], a.Metadata[k])
		}
	}
	if len(a.Labels) > 0 {
		row("Labels", strings.Join(a.Labels, ", "))
	}
	if len(in.Metrics) > 0 {
		row("Metrics", formatMetrics(in.Metrics))
	}
	tw.Flush()
	if in.Dataset != nil {
		fmt.Fprintln(w)
		in.Dataset.WriteTable(w)
	}
	for _, warn := range a.Warnings {
		fmt.Fprintf(w, "Warning: %s\n", warn)
	}
	printFiles(w, a.Files)
	if len(in.Parts) > 0 {
		for _, layer := range []string{artifact.LayerEdge, artifact.LayerCloud} {
			printPart(w, layer, in.Parts[layer])
		}
		return
	}
	if len(a.Manifests) > 0 {
		fmt.Fprintln(w)
		for _, m := range a.Manifests {
			if layer := m.Annotations[artifact.AnnotationLayer]; layer != "" {
				fmt.Fprintf(w, "%-5s  ", layer) // a joint model's part
			}
			fmt.Fprintf(w, "%s  %s  %s\n", m.Digest, m.MediaType, humanBytes(m.Size))
		}
	}
}

// printPart shows one part of a joint model: where it runs, its digest,
// what it says of itself, and its files.
func printPart(w io.Writer, layer string, part *artifact.Artifact) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s part:\t%s\n", strings.ToUpper(layer[:1])+layer[1:], part.Digest)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "  %s:\t%s\n", k, v)
		}
	}
	row("Kind", string(part.Kind))
	row("Name", part.Name)
	row("Version", part.Version)
	row("Size", fmt.Sprintf("%s (%d bytes) in %d files", humanBytes(part.Size), part.Size, len(part.Files)))
	for _, k := range sortedKeys(part.Metadata) {
		if k != "labels" {
			row(strings.ToUpper(k[:1])+k[1:], part.Metadata[k])
		}
	}
	tw.Flush()
	for _, warn := range part.Warnings {
		fmt.Fprintf(w, "Warning: %s part: %s\n", layer, warn)
	}
	printFiles(w, part.Files)
}

// printFiles is the table of an artifact's files.
func printFiles(w io.Writer, files []artifact.File) {
	if len(files) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tSIZE\tROLE\tMEDIA TYPE\tDIGEST")
	for _, f := range files {
		role := f.Role
		if role == "" {
			role = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Path, humanBytes(f.Size), role, f.MediaType, shortDigest(string(f.Digest)))
	}
	tw.Flush()
}

func formatMetrics(m map[string]float64) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%g", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// shortDigest cuts a digest to what people compare by eye; anything else is
// left whole.
func shortDigest(d string) string {
	if strings.HasPrefix(d, "sha256:") && len(d) > 19 {
		return d[:19]
	}
	return d
}
