package cli

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bargeml/barge/artifact"
)

func newMetricsCommand(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "Attach evaluation metrics to a model, or read them",
		Long: `Metrics are referrers of a model's manifest: attaching them never changes the
model's digest. They are read with the registry's referrers API, or the
referrers tag (sha256-<hex>) where the registry has none.`,
	}
	cmd.AddCommand(newMetricsAttachCommand(s), newMetricsGetCommand(s))
	return cmd
}

func newMetricsAttachCommand(s streams) *cobra.Command {
	var (
		rf      remoteFlags
		out     output
		dataset string
	)
	cmd := &cobra.Command{
		Use:   "attach REF FILE.json",
		Short: "Attach a metrics JSON ({\"accuracy\": 0.91, …}) to a model",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRef(args[0])
			if err != nil {
				return err
			}
			b, err := os.ReadFile(args[1])
			if err != nil {
				return fmt.Errorf("read metrics: %w", err)
			}
			m, err := artifact.ParseMetrics(b)
			if err != nil {
				return fmt.Errorf("%s: %w", args[1], err)
			}
			if dataset != "" {
				m.Dataset = dataset
			}
			repo, err := rf.repository(ref)
			if err != nil {
				return err
			}
			subject, err := resolve(cmd.Context(), repo, ref)
			if err != nil {
				return err
			}
			desc, err := artifact.AttachMetrics(cmd.Context(), repo, subject, m)
			if err != nil {
				return explain(err, ref)
			}
			if out == "json" {
				return writeJSON(s.out, map[string]any{"subject": subject.Digest, "digest": desc.Digest})
			}
			fmt.Fprintf(s.err, "Attached metrics to %s@%s\n", ref.Registry+"/"+ref.Repository, subject.Digest)
			fmt.Fprintln(s.out, desc.Digest)
			return nil
		},
	}
	cmd.Flags().BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
	cmd.Flags().StringVar(&dataset, "dataset", "", "digest or reference of the dataset the metrics were measured on")
	addOutputFlag(cmd, &out)
	return cmd
}

func newMetricsGetCommand(s streams) *cobra.Command {
	var (
		rf  remoteFlags
		out output
	)
	cmd := &cobra.Command{
		Use:   "get REF",
		Short: "List the metrics attached to a model, oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, repo, err := rf.open(args[0])
			if err != nil {
				return err
			}
			subject, err := resolve(cmd.Context(), repo, ref)
			if err != nil {
				return err
			}
			recs, err := artifact.ListMetrics(cmd.Context(), repo, subject)
			if err != nil {
				return explain(err, ref)
			}
			if out == "json" {
				if recs == nil {
					recs = []artifact.MetricsRecord{}
				}
				return writeJSON(s.out, recs)
			}
			if len(recs) == 0 {
				fmt.Fprintf(s.err, "%s has no metrics: attach some with `barge metrics attach %s FILE.json`\n", ref, ref)
				return nil
			}
			tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tDATASET\tMETRICS\tDIGEST")
			for _, r := range recs {
				ds := r.Dataset
				if ds == "" {
					ds = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), shortDigest(ds), formatMetrics(r.Metrics.Metrics), shortDigest(string(r.Digest)))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
	addOutputFlag(cmd, &out)
	return cmd
}
