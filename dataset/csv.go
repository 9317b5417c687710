package dataset

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// maxRecord bounds a CSV record. A longer one is almost always an unbalanced
// quote swallowing the rest of the file; reading on would hold it all in memory.
const maxRecord = 8 << 20

var errRecordTooLong = errors.New("record too long")

func analyzeCSV(ctx context.Context, dir string, opts Options, acc *accumulator) error {
	return walk(ctx, dir, func(rel, abs string, _ fs.DirEntry) error {
		if !strings.EqualFold(path.Ext(rel), ".csv") {
			return nil
		}
		return parseFile(acc, abs, rel, func(r io.Reader) error {
			return parseCSV(ctx, r, rel, splitOfFile(rel), opts.LabelColumn, acc)
		})
	})
}

// parseCSV counts the records of one CSV file of split. The first file's
// header becomes the dataset's Columns; labelColumn is as in Options.
func parseCSV(ctx context.Context, r io.Reader, rel, split, labelColumn string, acc *accumulator) error {
	src := &csvSource{lines: lineTracker{r: skipBOM(r)}}
	cr := csv.NewReader(src)
	src.consumed = cr.InputOffset
	cr.FieldsPerRecord = -1 // checked here, to report and go on
	cr.ReuseRecord = true

	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		acc.problem(rel, 0, "empty CSV file: no header")
		return nil
	}
	if err != nil {
		csvProblem(acc, rel, src, err)
		return nil
	}
	header = slices.Clone(header)
	if acc.s.Columns == nil {
		acc.s.Columns = header
	} else if !slices.Equal(acc.s.Columns, header) {
		acc.problem(rel, 1, "header %q differs from the first CSV file's %q", header, acc.s.Columns)
	}
	label := labelIndex(header, labelColumn)
	switch {
	case label >= 0 && acc.s.LabelColumn == "":
		acc.s.LabelColumn = header[label]
	case label < 0 && labelColumn != "":
		acc.problem(rel, 1, "no label column %q in the header: samples of this file counted without class", labelColumn)
	}

	for n := 0; ; n++ {
		if n%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		src.lines.lineAt(cr.InputOffset())
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if !csvProblem(acc, rel, src, err) {
				return nil
			}
			continue
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && len(header) > 1 && strings.TrimSpace(rec[0]) == "" {
			continue // a line of spaces: blank, not a record
		}
		if len(rec) != len(header) {
			acc.problem(rel, line, "record has %d fields, the header has %d: not counted", len(rec), len(header))
			continue
		}
		if label < 0 {
			acc.sample(split)
		} else if l := strings.TrimSpace(rec[label]); l == "" {
			acc.sample(split)
		} else {
			acc.sample(split, l)
		}
	}
}

// csvProblem reports a read error and whether reading can go on after it.
func csvProblem(acc *accumulator, rel string, src *csvSource, err error) bool {
	var pe *csv.ParseError
	switch {
	case errors.As(err, &pe):
		msg := pe.Err.Error()
		if pe.StartLine != pe.Line {
			msg = fmt.Sprintf("%s (in the record starting at line %d)", msg, pe.StartLine)
		}
		acc.problem(rel, pe.Line, "%s: not counted", msg)
		return true
	case errors.Is(err, errRecordTooLong):
		acc.problem(rel, src.lines.lineAt(src.consumed()),
			"record longer than %d MiB (an unbalanced quote?): rest of the file not read", maxRecord>>20)
	default:
		acc.problem(rel, 0, "read: %v", err)
	}
	return false
}

// labelIndex is the index of the label column: the named one, else the first
// named "label" or "class" in any case; -1 if there is none.
func labelIndex(header []string, name string) int {
	for i, h := range header {
		h = strings.TrimSpace(h)
		if name != "" {
			if h == name {
				return i
			}
			continue
		}
		if strings.EqualFold(h, "label") || strings.EqualFold(h, "class") {
			return i
		}
	}
	return -1
}

// skipBOM drops a UTF-8 byte order mark at the start of r.
func skipBOM(r io.Reader) io.Reader {
	br := bufio.NewReader(r)
	if b, _ := br.Peek(len(utf8BOM)); bytes.Equal(b, utf8BOM) {
		br.Discard(len(utf8BOM))
	}
	return br
}

// csvSource feeds a csv.Reader, tracking lines, and fails once the reader has
// buffered more than maxRecord bytes past the end of its last record.
type csvSource struct {
	lines    lineTracker
	consumed func() int64
}

func (s *csvSource) Read(p []byte) (int, error) {
	if s.consumed != nil && s.lines.read-s.consumed() > maxRecord {
		return 0, errRecordTooLong
	}
	return s.lines.Read(p)
}
