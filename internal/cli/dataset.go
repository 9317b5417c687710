package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/bargeml/barge/dataset"
)

// datasetFlags are how a user describes a dataset's layout.
type datasetFlags struct {
	format      string
	labelColumn string
}

func (f *datasetFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.format, "format", "", "dataset format: csv, imagelist, imagefolder, voc, coco, yolo or jsonl (default: detected)")
	cmd.Flags().StringVar(&f.labelColumn, "label-column", "", "CSV column holding the class (default: a column named label or class)")
}

func (f *datasetFlags) options() dataset.Options {
	return dataset.Options{Format: dataset.Format(f.format), LabelColumn: f.labelColumn}
}

func newDatasetCommand(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dataset",
		Short: "Work with datasets: statistics and checks by format",
	}
	cmd.AddCommand(newDatasetStatsCommand(s))
	return cmd
}

func newDatasetStatsCommand(s streams) *cobra.Command {
	var (
		df  datasetFlags
		out output
	)
	cmd := &cobra.Command{
		Use:   "stats DIR",
		Short: "Count samples and classes and find broken annotations, by format",
		Long: `Read a dataset directory as CSV, image lists, image folders, Pascal VOC,
COCO, YOLO or JSON Lines (detected, or given with --format), streaming, and
print its samples, classes, splits and problems: malformed lines and files
with their path and line, missing referenced files, unknown class ids.`,
		Example: `  barge dataset stats ./VOC2012
  barge dataset stats --format csv --label-column species -o json ./iris`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			boundMemory()
			st, err := dataset.Analyze(cmd.Context(), args[0], df.options())
			if err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(s.out, st)
			}
			return st.WriteTable(s.out)
		},
	}
	df.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}

// datasetMemoryLimit is the Go heap the dataset commands aim to stay under.
// Parsing keeps little alive (counts, the first problems), but an XML or JSON
// decoder per file makes garbage fast, and with the default GC pacing the
// heap of a 100,000-file VOC tree reached 88 MiB; a soft limit makes the
// collector run before that.
const datasetMemoryLimit = 40 << 20

// boundMemory sets the soft memory limit unless GOMEMLIMIT says otherwise.
func boundMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(datasetMemoryLimit)
	}
}

// printProblems shows the first problems of a dataset being pushed.
func printProblems(w io.Writer, st *dataset.Stats, max int) {
	if st.NumberOfProblems == 0 {
		return
	}
	fmt.Fprintf(w, "Warning: the dataset has %d problem(s):\n", st.NumberOfProblems)
	for i, p := range st.Problems {
		if i == max {
			fmt.Fprintf(w, "  … and %d more (barge dataset stats lists them)\n", st.NumberOfProblems-int64(max))
			break
		}
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// datasetStatsOf reads the statistics a dataset artifact carries in its
// config.
func datasetStatsOf(b []byte) (*dataset.Stats, error) {
	var st dataset.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("the dataset config is not Barge's statistics: %v", err)
	}
	return &st, nil
}
