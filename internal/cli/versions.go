package cli

import (
	"fmt"
	"regexp"
	"sort"
	"text/tabwriter"

	"github.com/Masterminds/semver/v3"
	"github.com/spf13/cobra"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/selection"
)

// referrersTag is the tag schema oras-go uses for referrers on registries
// without the referrers API; such tags are not versions.
var referrersTag = regexp.MustCompile(`^sha256-[0-9a-f]{64}$`)

type versionRow struct {
	Tag      string             `json:"tag"`
	Digest   string             `json:"digest"`
	Semver   bool               `json:"semver"`
	Metrics  map[string]float64 `json:"metrics,omitempty"`
	Metadata map[string]string  `json:"-"`
	// With --require or --order: whether this version is the one chosen,
	// or why it was refused.
	Chosen  bool   `json:"chosen,omitempty"`
	Refused string `json:"refused,omitempty"`
}

func newVersionsCommand(s streams) *cobra.Command {
	var (
		rf             remoteFlags
		out            output
		require, order []string
	)
	cmd := &cobra.Command{
		Use:   "versions REPO",
		Short: "List a repository's tags, newest semantic version first, with digests and metrics",
		Long: `List a repository's tags, newest semantic version first, with digests and
the latest value of each metric. With --require and --order, choose a version
as an InferenceModel's spec.selection does: every --require expression must be
true, --order ranks the versions that pass (the larger first; append " asc"
for the smaller first), then the newest semantic version. Expressions are CEL
over metrics (metrics.accuracy), metadata (metadata.task) and version.`,
		Example: `  barge versions 127.0.0.1:5000/models/resnet
  barge versions 127.0.0.1:5000/models/resnet --require 'metrics.accuracy >= 0.9' --order metrics.accuracy`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRef(args[0])
			if err != nil {
				return err
			}
			var policy *selection.Policy
			if len(require) > 0 || len(order) > 0 {
				if policy, err = selection.Compile(require, order); err != nil {
					return fmt.Errorf("versions: %w", err)
				}
			}
			if ref.Reference != "" {
				return fmt.Errorf("versions takes a repository without tag or digest, e.g. %s/%s", ref.Registry, ref.Repository)
			}
			repo, err := rf.repository(ref)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var tags []string
			if err := repo.Tags(ctx, "", func(page []string) error {
				for _, t := range page {
					if !referrersTag.MatchString(t) {
						tags = append(tags, t)
					}
				}
				return nil
			}); err != nil {
				return explain(err, ref)
			}
			rows := sortVersions(tags)
			for i := range rows {
				r := &rows[i]
				tagRef := ref
				tagRef.Reference = r.Tag
				desc, err := resolve(ctx, repo, tagRef)
				if err != nil {
					return err
				}
				r.Digest = string(desc.Digest)
				recs, err := artifact.ListMetrics(ctx, repo, desc)
				if err != nil {
					return explain(err, tagRef)
				}
				r.Metrics = artifact.Latest(recs)
				if policy != nil {
					a, err := artifact.Inspect(ctx, repo, desc)
					if err != nil {
						return explain(err, tagRef)
					}
					r.Metadata = a.Described()
				}
			}
			summary := ""
			if policy != nil {
				rows, summary = choose(policy, rows)
			}
			if out == "json" {
				if rows == nil {
					rows = []versionRow{}
				}
				return writeJSON(s.out, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintf(s.err, "%s has no tags\n", ref)
				return nil
			}
			tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
			if policy == nil {
				fmt.Fprintln(tw, "TAG\tDIGEST\tMETRICS")
			} else {
				fmt.Fprintln(tw, "TAG\tDIGEST\tMETRICS\tCHOICE")
			}
			for _, r := range rows {
				m := formatMetrics(r.Metrics)
				if m == "" {
					m = "-"
				}
				if policy == nil {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Tag, shortDigest(r.Digest), m)
					continue
				}
				choice := "passes"
				switch {
				case r.Chosen:
					choice = "chosen"
				case r.Refused != "":
					choice = r.Refused
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Tag, shortDigest(r.Digest), m, choice)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if summary != "" {
				_, err = fmt.Fprintln(s.out, "\n"+summary)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
	cmd.Flags().StringArrayVar(&require, "require", nil, "a CEL expression every chosen version must pass, such as 'metrics.accuracy >= 0.9' (repeatable)")
	cmd.Flags().StringArrayVar(&order, "order", nil, "a CEL expression to rank passing versions by, larger first ('EXPR asc' for smaller first; repeatable)")
	addOutputFlag(cmd, &out)
	return cmd
}

// sortVersions orders tags newest semantic version first; tags that are not
// versions (latest, main) follow in name order.
func sortVersions(tags []string) []versionRow {
	type tv struct {
		tag string
		v   *semver.Version
	}
	list := make([]tv, 0, len(tags))
	for _, t := range tags {
		v, err := semver.NewVersion(t)
		if err != nil {
			v = nil
		}
		list = append(list, tv{t, v})
	}
	sort.SliceStable(list, func(i, j int) bool {
		a, b := list[i], list[j]
		switch {
		case a.v != nil && b.v != nil:
			if c := a.v.Compare(b.v); c != 0 {
				return c > 0
			}
			return a.tag < b.tag
		case a.v != nil:
			return true
		case b.v != nil:
			return false
		}
		return a.tag < b.tag
	})
	rows := make([]versionRow, len(list))
	for i, x := range list {
		rows[i] = versionRow{Tag: x.tag, Semver: x.v != nil}
	}
	return rows
}

// choose orders rows as policy ranks them, the chosen first, then the
// refused ones with the reason, and says why in the words an
// InferenceModel's status.resolved.reason uses.
func choose(policy *selection.Policy, rows []versionRow) ([]versionRow, string) {
	byTag := map[string]versionRow{}
	cands := make([]selection.Candidate, 0, len(rows))
	for _, r := range rows {
		byTag[r.Tag] = r
		cands = append(cands, selection.Candidate{Version: r.Tag, Digest: r.Digest, Metrics: r.Metrics, Metadata: r.Metadata})
	}
	ch := policy.Choose(cands)
	out := make([]versionRow, 0, len(rows))
	for i, c := range ch.Ranked {
		r := byTag[c.Version]
		r.Chosen = i == 0
		out = append(out, r)
	}
	for _, ref := range ch.Refused {
		r := byTag[ref.Candidate.Version]
		r.Refused = "fails " + ref.Require
		if ref.Err != nil {
			r.Refused = fmt.Sprintf("%s: %v", ref.Require, ref.Err)
		}
		out = append(out, r)
	}
	summary := policy.Summary(ch)
	if best, ok := ch.Best(); ok {
		summary = "chosen: " + best.Version + " (" + summary + ")"
	}
	return out, summary
}
