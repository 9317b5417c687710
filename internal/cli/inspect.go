package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

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
	if a.Kind == artifact.KindModel || a.Kind == artifact.KindGeneric || a.Kind == artifact.KindCode {
		recs, err := artifact.ListMetrics(ctx, repo, desc)
		if err != nil {
			return nil, explain(err, ref)
		}
		in.MetricsRecords = recs
		in.Metrics = artifact.Latest(recs)
	}
	return in, nil
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
	row("Size", fmt.Sprintf("%s (%d bytes) in %d files", humanBytes(a.Size), a.Size, len(a.Files)))
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
	if len(a.Files) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FILE\tSIZE\tROLE\tMEDIA TYPE\tDIGEST")
		for _, f := range a.Files {
			role := f.Role
			if role == "" {
				role = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Path, humanBytes(f.Size), role, f.MediaType, shortDigest(string(f.Digest)))
		}
		tw.Flush()
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
