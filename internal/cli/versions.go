package cli

import (
	"fmt"
	"regexp"
	"sort"
	"text/tabwriter"

	"github.com/Masterminds/semver/v3"
	"github.com/spf13/cobra"

	"github.com/bargeml/barge/artifact"
)

// referrersTag is the tag schema oras-go uses for referrers on registries
// without the referrers API; such tags are not versions.
var referrersTag = regexp.MustCompile(`^sha256-[0-9a-f]{64}$`)

type versionRow struct {
	Tag     string             `json:"tag"`
	Digest  string             `json:"digest"`
	Semver  bool               `json:"semver"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

func newVersionsCommand(s streams) *cobra.Command {
	var (
		rf  remoteFlags
		out output
	)
	cmd := &cobra.Command{
		Use:     "versions REPO",
		Short:   "List a repository's tags, newest semantic version first, with digests and metrics",
		Example: `  barge versions 127.0.0.1:5000/models/resnet`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRef(args[0])
			if err != nil {
				return err
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
			fmt.Fprintln(tw, "TAG\tDIGEST\tMETRICS")
			for _, r := range rows {
				m := formatMetrics(r.Metrics)
				if m == "" {
					m = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Tag, shortDigest(r.Digest), m)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
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
