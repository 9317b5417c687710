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

// parseCSV counts the records of one CSV file of split and records its header
// (see finishCSV); labelColumn is as in Options.
func parseCSV(ctx context.Context, r io.Reader, rel, split, labelColumn string, acc *accumulator) error {
	src := &csvSource{r: skipBOM(r)}
	cr := csv.NewReader(src)
	cr.FieldsPerRecord = -1 // checked here, to report and go on
	cr.ReuseRecord = true

	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		acc.problem(rel, 0, "empty CSV file: no header")
		return nil
	}
	if err != nil {
		csvProblem(acc, rel, 1, err)
		return nil
	}
	label := labelIndex(header, labelColumn)
	acc.csvHeader(rel, header, label)
	if label >= 0 {
		acc.hasLabels = true
	}
	if label < 0 && labelColumn != "" {
		acc.problem(rel, 1, "no label column %q in the header: samples of this file counted without class", labelColumn)
	}

	next := 2 // the line after the last record read: where the next one starts, but for blank lines
	for n := 0; ; n++ {
		if n%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		src.mark = src.read
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if !csvProblem(acc, rel, next, err) {
				return nil
			}
			continue
		}
		line, _ := cr.FieldPos(0)
		last, _ := cr.FieldPos(len(rec) - 1)
		next = last + strings.Count(rec[len(rec)-1], "\n") + 1
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
// start is the line where the record began, as far as is known.
func csvProblem(acc *accumulator, rel string, start int, err error) bool {
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
		acc.problem(rel, start,
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

// csvSource feeds a csv.Reader. It fails once the reader has
// taken more than maxRecord bytes since mark, set before each record: the
// reader keeps a whole record in memory, and one quote too many makes the
// rest of the file one record.
type csvSource struct {
	r    io.Reader
	read int64
	mark int64
}

func (s *csvSource) Read(p []byte) (int, error) {
	if s.read-s.mark > maxRecord {
		return 0, errRecordTooLong
	}
	n, err := s.r.Read(p)
	s.read += int64(n)
	return n, err
}

// csvHeaders collects the distinct headers of a dataset's CSV files, so the
// schema is the header most files share, not whichever file sorts first.
type csvHeaders struct {
	list     []*csvHeader
	overflow bool
}

type csvHeader struct {
	columns []string
	label   string // the label column found in it, if any
	files   int
	example string
}

// maxHeaders bounds the distinct CSV headers remembered.
const maxHeaders = 100

func (a *accumulator) csvHeader(rel string, header []string, label int) {
	if a.headers == nil {
		a.headers = &csvHeaders{}
	}
	for _, h := range a.headers.list {
		if slices.Equal(h.columns, header) {
			h.files++
			return
		}
	}
	if len(a.headers.list) == maxHeaders {
		if !a.headers.overflow {
			a.headers.overflow = true
			a.problem(rel, 1, "more than %d different CSV headers: the files are not one table", maxHeaders)
		}
		return
	}
	h := &csvHeader{columns: slices.Clone(header), files: 1, example: rel}
	if label >= 0 {
		h.label = header[label]
	}
	a.headers.list = append(a.headers.list, h)
}

// finishCSV sets Columns to the header most files have (the first seen on a
// tie) and reports the files whose header differs.
func (a *accumulator) finishCSV() {
	if a.headers == nil || len(a.headers.list) == 0 {
		return
	}
	top := a.headers.list[0]
	for _, h := range a.headers.list[1:] {
		if h.files > top.files {
			top = h
		}
	}
	a.s.Columns, a.s.LabelColumn = top.columns, top.label
	for _, h := range a.headers.list {
		if h == top {
			continue
		}
		who := "its header"
		if h.files > 1 {
			who = fmt.Sprintf("it and %d more files have header", h.files-1)
		}
		a.problem(h.example, 1, "%s %q, not the %q of %d other files", who, h.columns, top.columns, top.files)
	}
}
