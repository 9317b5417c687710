package main

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// Dataset is labelled samples: X[i] has Features values, Y[i] is its class.
type Dataset struct {
	X [][]float64
	Y []int
}

func (d Dataset) Len() int { return len(d.Y) }

func (d *Dataset) add(x []float64, y int) {
	d.X = append(d.X, x)
	d.Y = append(d.Y, y)
}

// ReadData reads one CSV file, or every *.csv of a directory.
func ReadData(path string, features, classes int) (Dataset, error) {
	files := []string{path}
	if fi, err := os.Stat(path); err != nil {
		return Dataset{}, err
	} else if fi.IsDir() {
		files, _ = filepath.Glob(filepath.Join(path, "*.csv"))
		if len(files) == 0 {
			return Dataset{}, fmt.Errorf("%s has no *.csv file", path)
		}
	}
	var d Dataset
	for _, f := range files {
		if err := readCSV(f, features, classes, &d); err != nil {
			return Dataset{}, err
		}
	}
	return d, nil
}

// readCSV appends the rows of a file with a header line and rows of
// features values and a class label, 0 to classes-1.
func readCSV(path string, features, classes int, d *Dataset) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	r.FieldsPerRecord = features + 1
	r.ReuseRecord = true
	if _, err := r.Read(); err != nil {
		return fmt.Errorf("%s: header: %w (want %d feature columns and a label)", path, err, features)
	}
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w (want %d feature columns and a label)", path, err, features)
		}
		x := make([]float64, features)
		for i := range x {
			if x[i], err = strconv.ParseFloat(rec[i], 64); err != nil {
				return fmt.Errorf("%s, line %d, column %d: %q is not a number", path, line, i+1, rec[i])
			}
		}
		y, err := strconv.Atoi(rec[features])
		if err != nil || y < 0 || y >= classes {
			return fmt.Errorf("%s, line %d: label %q is not a class from 0 to %d", path, line, rec[features], classes-1)
		}
		d.add(x, y)
	}
}

// WriteCSV writes d with a header f0,...,label.
func WriteCSV(path string, d Dataset) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	features := 0
	if d.Len() > 0 {
		features = len(d.X[0])
	}
	row := make([]string, features+1)
	for i := range features {
		row[i] = "f" + strconv.Itoa(i)
	}
	row[features] = "label"
	w.Write(row)
	for i, x := range d.X {
		for j, v := range x {
			row[j] = strconv.FormatFloat(v, 'f', 4, 64)
		}
		row[features] = strconv.Itoa(d.Y[i])
		w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Blobs is a synthetic classification problem: each class a Gaussian blob
// around its own centre, close enough to its neighbours that no line
// separates them all, so accuracy has room to grow round over round.
type Blobs struct {
	Seed                              uint64
	Samples, Nodes, Features, Classes int
	// Poison, if from 1 to Nodes, is a node whose shard has every label
	// shifted by one class; all.csv keeps the true labels.
	Poison int
}

// Generate makes the node shards and a held-out test set. The shards
// differ in size (node k has k parts of the samples: FedAvg must weigh by
// samples) and in their classes (half of node k's samples are of class
// k mod Classes): each node alone learns a biased model, together they
// learn the whole problem.
func (g Blobs) Generate() (shards []Dataset, test Dataset) {
	rng := rand.New(rand.NewPCG(g.Seed, 0xb10b5))
	centres := make([][]float64, g.Classes)
	for c := range centres {
		centres[c] = make([]float64, g.Features)
		for f := range centres[c] {
			centres[c][f] = 1.5 * rng.NormFloat64()
		}
	}
	sample := func(c int) []float64 {
		x := make([]float64, g.Features)
		for f := range x {
			x[f] = centres[c][f] + rng.NormFloat64()
		}
		return x
	}
	parts := g.Nodes * (g.Nodes + 1) / 2
	for k := range g.Nodes {
		var d Dataset
		for range g.Samples * (k + 1) / parts {
			c := rng.IntN(g.Classes)
			if rng.IntN(2) == 0 {
				c = k % g.Classes
			}
			d.add(sample(c), c)
		}
		shards = append(shards, d)
	}
	for range g.Samples / 4 {
		c := rng.IntN(g.Classes)
		test.add(sample(c), c)
	}
	return shards, test
}

// Write writes DIR/node-<k>/train.csv per shard, DIR/all.csv and DIR/test.csv.
func (g Blobs) Write(dir string) error {
	if g.Samples < g.Nodes*10 || g.Nodes < 1 || g.Features < 1 || g.Classes < 2 {
		return fmt.Errorf("want at least 1 node, 10 samples per node, 1 feature and 2 classes")
	}
	shards, test := g.Generate()
	var all Dataset
	for k, d := range shards {
		all.X, all.Y = append(all.X, d.X...), append(all.Y, d.Y...)
		if k+1 == g.Poison {
			d.Y = slices.Clone(d.Y)
			for i, y := range d.Y {
				d.Y[i] = (y + 1) % g.Classes
			}
		}
		if err := WriteCSV(filepath.Join(dir, fmt.Sprintf("node-%d", k+1), "train.csv"), d); err != nil {
			return err
		}
	}
	if err := WriteCSV(filepath.Join(dir, "all.csv"), all); err != nil {
		return err
	}
	return WriteCSV(filepath.Join(dir, "test.csv"), test)
}
