package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Version is the barge version, set at build time with -ldflags.
var Version = "dev"

// streams is where a command reads and writes; tests replace them.
type streams struct {
	in       io.Reader
	out, err io.Writer
	// tty says whether out is a terminal, for progress bars.
	tty bool
}

// Main runs barge with the process's arguments and streams and returns the
// exit code.
func Main() int {
	s := streams{in: os.Stdin, out: os.Stdout, err: os.Stderr, tty: term.IsTerminal(int(os.Stdout.Fd()))}
	cmd := NewCommand(s)
	cmd.SetArgs(os.Args[1:])
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintf(s.err, "Error: %v\n", err)
		return 1
	}
	return 0
}

// NewCommand builds the barge command tree writing to s.
func NewCommand(s streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "barge",
		Short: "Ship ML models and datasets to edge nodes as OCI artifacts",
		Long: `barge packs models, code, metrics and datasets as typed OCI artifacts,
pushes them to any OCI registry, and pulls them with resume and dedup.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	root.AddCommand(
		newServeCommand(s),
		newPushCommand(s),
		newPullCommand(s),
		newInspectCommand(s),
		newVerifyCommand(s),
		newMetricsCommand(s),
		newVersionsCommand(s),
		newDatasetCommand(s),
		newLoginCommand(s),
		newLogoutCommand(s),
		newRolloutCommand(s),
		newAggregateCommand(s),
	)
	return root
}

// output is the -o flag: table for people, json for scripts.
type output string

func (o *output) String() string { return string(*o) }
func (o *output) Type() string   { return "json|table" }
func (o *output) Set(v string) error {
	switch v {
	case "json", "table":
		*o = output(v)
		return nil
	}
	return fmt.Errorf("unknown output %q: use json or table", v)
}

func addOutputFlag(cmd *cobra.Command, o *output) {
	*o = "table"
	cmd.Flags().VarP(o, "output", "o", "output format: table or json")
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// humanBytes prints a size the way people read it.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
