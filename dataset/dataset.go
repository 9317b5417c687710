package dataset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Format names a dataset layout.
type Format string

// The formats Analyze understands.
const (
	CSV         Format = "csv"         // RFC 4180 files with a header; a sample is a record
	ImageList   Format = "imagelist"   // text lists of "path label" lines
	ImageFolder Format = "imagefolder" // one folder of images per class
	VOC         Format = "voc"         // Pascal VOC XML annotations
	COCO        Format = "coco"        // COCO instances JSON
	YOLO        Format = "yolo"        // YOLO label .txt files with classes.txt or data.yaml
	JSONL       Format = "jsonl"       // one JSON value per line
)

// Formats lists every Format, in the order they are described to users.
var Formats = []Format{CSV, ImageList, ImageFolder, VOC, COCO, YOLO, JSONL}

// Errors that Analyze wraps, so callers can tell a dataset it cannot read from
// a failure to read it.
var (
	// ErrNoData means the directory holds no files that could be a dataset.
	ErrNoData = errors.New("no dataset files found")
	// ErrUnknownFormat means files are there but match no known format, or
	// Options.Format names no known format.
	ErrUnknownFormat = errors.New("unknown dataset format")
	// ErrMixedFormats means files of more than one format are present, and
	// guessing which is the data would give wrong statistics.
	ErrMixedFormats = errors.New("more than one dataset format found")
)

// Options configures Analyze. The zero value detects the format and the label
// column.
type Options struct {
	// Format is the dataset's layout. If empty, it is detected from the files
	// present; detection refuses to guess when several formats are present.
	Format Format
	// LabelColumn is the CSV column holding the class label. If empty, the
	// first column named "label" or "class" (any case) is used, if there is one.
	LabelColumn string
}

// Stats describes a dataset. It is what a dataset artifact's config records.
type Stats struct {
	Format Format `json:"format"`
	// Counts for the whole dataset, samples in no recognized split included.
	Counts
	// Splits holds the counts of each split the layout names ("train", "val",
	// "test", or another name a layout gives), keyed by split.
	Splits map[string]*Counts `json:"splits,omitempty"`
	// Files and Bytes count the regular files of the dataset: hidden files and
	// a top-level README or LICENSE are not part of it.
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
	// Columns is the CSV header most CSV files share, the schema of a CSV
	// dataset; files with another header are problems.
	Columns []string `json:"columns,omitempty"`
	// LabelColumn is the CSV column the classes were counted from.
	LabelColumn string `json:"labelColumn,omitempty"`
	// Problems are the first MaxProblems problems found, in walk order.
	Problems []Problem `json:"problems"`
	// NumberOfProblems counts all problems, including those not listed.
	NumberOfProblems int64 `json:"numberOfProblems"`
}

// Counts are the numbers of the whole dataset or of one split.
type Counts struct {
	// NumberOfSamples counts samples: records, lines, images or annotated
	// images, depending on the format.
	NumberOfSamples int64 `json:"numberOfSamples"`
	// NumberOfObjects counts the labelled objects of detection formats (VOC
	// objects, COCO annotations, YOLO boxes); Classes counts them by class.
	NumberOfObjects int64 `json:"numberOfObjects,omitempty"`
	// Unlabeled counts samples without a label (an empty label cell, an image
	// outside class folders) in a dataset that has labels.
	Unlabeled int64 `json:"unlabeled,omitempty"`
	// Classes counts samples (classification) or objects (detection) by class
	// name. Classes a format declares but no sample uses appear with 0 in the
	// dataset's counts.
	Classes map[string]int64 `json:"classes"`
	// Difficult counts, by class, the VOC objects marked difficult. They are
	// also counted in Classes.
	Difficult map[string]int64 `json:"difficult,omitempty"`
	// OtherClasses counts samples or objects of classes beyond the first
	// MaxClasses distinct names, which are not listed to keep memory bounded.
	OtherClasses int64 `json:"otherClasses,omitempty"`
}

// Problem is something wrong in the dataset's files. A record, line, object or
// file reported as a problem is not counted, unless the message says it is.
type Problem struct {
	// Path is relative to the dataset directory, with forward slashes; "."
	// for a problem of the dataset as a whole.
	Path string `json:"path"`
	// Line is 1-based, or 0 when the problem is about the whole file.
	Line    int    `json:"line"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.Path, p.Line, p.Message)
	}
	return p.Path + ": " + p.Message
}

const (
	// MaxProblems is how many problems Stats lists; NumberOfProblems counts
	// the rest.
	MaxProblems = 1000
	// MaxClasses is how many distinct class names Stats lists; see
	// Counts.OtherClasses.
	MaxClasses = 65536
)

// Analyze reads the dataset in dir and returns its statistics. Malformed
// content becomes Problems in the result; an error means the dataset could not
// be analyzed at all: dir unreadable, format unknown or ambiguous, or ctx done.
func Analyze(ctx context.Context, dir string, opts Options) (*Stats, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("analyze dataset: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("analyze dataset %s: not a directory", dir)
	}
	format := opts.Format
	if format != "" && !knownFormat(format) {
		return nil, fmt.Errorf("analyze dataset %s: format %q: %w (known: %s)", dir, format, ErrUnknownFormat, formatList())
	}
	inv, err := survey(ctx, dir, format == "")
	if err != nil {
		return nil, fmt.Errorf("analyze dataset %s: %w", dir, err)
	}
	if format == "" {
		if format, err = inv.detect(); err != nil {
			return nil, fmt.Errorf("analyze dataset %s: %w", dir, err)
		}
	}
	acc := newAccumulator(format)
	acc.s.Files, acc.s.Bytes = inv.files, inv.bytes
	var analyze func(context.Context, string, Options, *accumulator) error
	switch format {
	case CSV:
		analyze = analyzeCSV
	case ImageList:
		analyze = analyzeImageList
	case ImageFolder:
		analyze = analyzeImageFolder
	case VOC:
		analyze = analyzeVOC
	case COCO:
		analyze = analyzeCOCO
	case YOLO:
		analyze = analyzeYOLO
	case JSONL:
		analyze = analyzeJSONL
	}
	if err := analyze(ctx, dir, opts, acc); err != nil {
		return nil, fmt.Errorf("analyze %s dataset %s: %w", format, dir, err)
	}
	return acc.finish(), nil
}

func knownFormat(f Format) bool {
	for _, k := range Formats {
		if f == k {
			return true
		}
	}
	return false
}

func formatList() string {
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return strings.Join(names, ", ")
}

// accumulator is what parsers feed. It keeps only counts and the first
// problems, so its size does not depend on the dataset's size.
type accumulator struct {
	s *Stats
	// warnedClasses is set once the MaxClasses problem has been reported.
	warnedClasses bool
	// hasLabels is set once a sample had a label, or the format has a
	// place for labels (a CSV label column).
	hasLabels bool
	// headers are the CSV headers seen.
	headers *csvHeaders
}

func newAccumulator(f Format) *accumulator {
	return &accumulator{s: &Stats{
		Format:   f,
		Counts:   Counts{Classes: map[string]int64{}},
		Problems: []Problem{},
	}}
}

func (a *accumulator) problem(path string, line int, format string, args ...any) {
	a.s.NumberOfProblems++
	if len(a.s.Problems) < MaxProblems {
		a.s.Problems = append(a.s.Problems, Problem{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
	}
}

// split returns the counts of the named split, or nil for "".
func (a *accumulator) split(name string) *Counts {
	if name == "" {
		return nil
	}
	if a.s.Splits == nil {
		a.s.Splits = map[string]*Counts{}
	}
	c := a.s.Splits[name]
	if c == nil {
		c = &Counts{Classes: map[string]int64{}}
		a.s.Splits[name] = c
	}
	return c
}

// counts returns the Counts a sample of split adds to: the dataset's, and the
// split's when it has one.
func (a *accumulator) counts(split string) []*Counts {
	if c := a.split(split); c != nil {
		return []*Counts{&a.s.Counts, c}
	}
	return []*Counts{&a.s.Counts}
}

// sample counts one sample of split, once in each class of labels; with no
// labels it counts as unlabeled (finish drops Unlabeled when no sample at all
// had a label: then the dataset has no labels, not unlabeled samples).
func (a *accumulator) sample(split string, labels ...string) {
	if len(labels) > 0 {
		a.hasLabels = true
	}
	for _, c := range a.counts(split) {
		c.NumberOfSamples++
		if len(labels) == 0 {
			c.Unlabeled++
		}
		for _, l := range labels {
			a.addClass(c, l, 1)
		}
	}
}

// finish completes the statistics once every file has been read.
func (a *accumulator) finish() *Stats {
	a.finishCSV()
	if !a.hasLabels {
		a.s.Unlabeled = 0
		for _, c := range a.s.Splits {
			c.Unlabeled = 0
		}
	}
	return a.s
}

// objects counts n objects of class in split; difficult ones are also
// counted apart.
func (a *accumulator) objects(split, class string, n int64, difficult bool) {
	for _, c := range a.counts(split) {
		c.NumberOfObjects += n
		listed := a.addClass(c, class, n)
		if difficult && listed {
			if c.Difficult == nil {
				c.Difficult = map[string]int64{}
			}
			c.Difficult[class] += n
		}
	}
}

// declareClass lists a class the dataset names, so a class without samples
// shows with 0.
func (a *accumulator) declareClass(class string) {
	if _, ok := a.s.Classes[class]; !ok && len(a.s.Classes) < MaxClasses {
		a.s.Classes[strings.Clone(class)] = 0
	}
}

// addClass adds n to class in c, and reports whether class is listed.
func (a *accumulator) addClass(c *Counts, class string, n int64) bool {
	if _, ok := c.Classes[class]; ok {
		c.Classes[class] += n
		return true
	}
	if len(c.Classes) >= MaxClasses {
		c.OtherClasses += n
		if !a.warnedClasses {
			a.warnedClasses = true
			a.problem(".", 0, "more than %d distinct classes: the rest are counted in otherClasses (is the label column really a class?)", MaxClasses)
		}
		return false
	}
	// Clone: the name may point into a large reused record buffer.
	c.Classes[strings.Clone(class)] = n
	return true
}

// parseFile opens the file at abs and hands it to parse; a file that cannot be
// opened is a problem, not a failure of the whole analysis.
func parseFile(acc *accumulator, abs, rel string, parse func(io.Reader) error) error {
	f, err := os.Open(abs)
	if err != nil {
		acc.problem(rel, 0, "cannot open: %v", err)
		return nil
	}
	defer f.Close()
	return parse(f)
}

// checkEvery is how many lines or records a parser reads between looks at
// its context.
const checkEvery = 4096
