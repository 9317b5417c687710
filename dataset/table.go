package dataset

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

const (
	// tableClasses and tableProblems are how many rows WriteTable shows; the
	// JSON of Stats has them all.
	tableClasses  = 50
	tableProblems = 10
)

// WriteTable writes s for a person to read: the format and sizes, the samples
// of each split, the classes by count (most frequent first, with a column per
// split), and the first problems.
func (s *Stats) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Format:\t%s\n", s.Format)
	fmt.Fprintf(tw, "Samples:\t%d\n", s.NumberOfSamples)
	if s.NumberOfObjects > 0 {
		fmt.Fprintf(tw, "Objects:\t%d\n", s.NumberOfObjects)
	}
	if s.Unlabeled > 0 {
		fmt.Fprintf(tw, "Unlabeled:\t%d\n", s.Unlabeled)
	}
	fmt.Fprintf(tw, "Files:\t%d (%s)\n", s.Files, humanBytes(s.Bytes))
	if len(s.Columns) > 0 {
		fmt.Fprintf(tw, "Columns:\t%s\n", strings.Join(s.Columns, ", "))
	}
	if s.LabelColumn != "" {
		fmt.Fprintf(tw, "Label column:\t%s\n", s.LabelColumn)
	}
	splits := s.splitNames()
	if len(splits) > 0 {
		objects := s.NumberOfObjects > 0
		if objects {
			fmt.Fprintln(tw, "\nSPLIT\tSAMPLES\tOBJECTS\tCLASSES")
		} else {
			fmt.Fprintln(tw, "\nSPLIT\tSAMPLES\tCLASSES")
		}
		for _, name := range splits {
			c := s.Splits[name]
			if objects {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", name, c.NumberOfSamples, c.NumberOfObjects, len(c.Classes))
			} else {
				fmt.Fprintf(tw, "%s\t%d\t%d\n", name, c.NumberOfSamples, len(c.Classes))
			}
		}
	}
	if len(s.Classes) > 0 {
		s.writeClasses(tw, splits)
	}
	if s.NumberOfProblems > 0 {
		fmt.Fprintf(tw, "\nProblems: %d\n", s.NumberOfProblems)
		for _, p := range s.Problems[:min(len(s.Problems), tableProblems)] {
			fmt.Fprintf(tw, "  %s\n", p)
		}
		if more := s.NumberOfProblems - int64(min(len(s.Problems), tableProblems)); more > 0 {
			fmt.Fprintf(tw, "  … and %d more\n", more)
		}
	}
	return tw.Flush()
}

func (s *Stats) writeClasses(tw io.Writer, splits []string) {
	type row struct {
		name  string
		count int64
	}
	rows := make([]row, 0, len(s.Classes))
	for name, n := range s.Classes {
		rows = append(rows, row{name, n})
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].count != rows[j].count {
			return rows[i].count > rows[j].count
		}
		return rows[i].name < rows[j].name
	})
	header := "\nCLASS\tCOUNT"
	for _, sp := range splits {
		header += "\t" + strings.ToUpper(sp)
	}
	if len(s.Difficult) > 0 {
		header += "\tDIFFICULT"
	}
	fmt.Fprintln(tw, header)
	for _, r := range rows[:min(len(rows), tableClasses)] {
		line := fmt.Sprintf("%s\t%d", r.name, r.count)
		for _, sp := range splits {
			line += fmt.Sprintf("\t%d", s.Splits[sp].Classes[r.name])
		}
		if len(s.Difficult) > 0 {
			line += fmt.Sprintf("\t%d", s.Difficult[r.name])
		}
		fmt.Fprintln(tw, line)
	}
	if more := len(rows) - tableClasses; more > 0 {
		fmt.Fprintf(tw, "… and %d more classes\n", more)
	}
	if s.OtherClasses > 0 {
		fmt.Fprintf(tw, "(other classes)\t%d\n", s.OtherClasses)
	}
}

// splitNames orders splits train, val, test, then the others by name.
func (s *Stats) splitNames() []string {
	rank := map[string]int{"train": 0, "val": 1, "test": 2}
	names := make([]string, 0, len(s.Splits))
	for name := range s.Splits {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		ri, oki := rank[names[i]]
		rj, okj := rank[names[j]]
		switch {
		case oki && okj:
			return ri < rj
		case oki != okj:
			return oki
		}
		return names[i] < names[j]
	})
	return names
}

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
