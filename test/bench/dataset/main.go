// Command dataset benchmarks `barge dataset stats`: throughput over a 1 GiB
// CSV (with `wc -l` on the same file as the floor no parser can beat) and
// over 100,000-file image-list and Pascal VOC trees, with the peak RSS of
// each run. Run it with `make bench`; it writes its section of
// docs/benchmarks.md when given -doc.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/bargeml/barge/test/bench/benchdoc"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding barge")
	doc := flag.String("doc", "", "markdown file whose dataset section is replaced with the results")
	csvMiB := flag.Int("csv-mib", 1024, "size of the CSV, MiB")
	files := flag.Int("files", 100_000, "files in the image-list and VOC trees")
	runs := flag.Int("runs", 3, "runs of each measurement; the median is reported")
	workdir := flag.String("workdir", os.TempDir(), "where the datasets are generated")
	flag.Parse()
	if err := run(*bin, *doc, *csvMiB, *files, *runs, *workdir); err != nil {
		fmt.Fprintln(os.Stderr, "bench dataset:", err)
		os.Exit(1)
	}
}

type measure struct {
	wall time.Duration
	rss  int64
}

func run(bin, doc string, csvMiB, files, runs int, workdir string) error {
	work, err := os.MkdirTemp(workdir, "barge-bench-dataset-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	barge, err := filepath.Abs(filepath.Join(bin, "barge"))
	if err != nil {
		return err
	}
	launcher := filepath.Join(work, "rusage")
	if out, err := exec.Command("go", "build", "-o", launcher, "./test/bench/rusage").CombinedOutput(); err != nil {
		return fmt.Errorf("build the rusage launcher: %v\n%s", err, out)
	}

	benchdoc.Logf("generating a %d MiB CSV, %d-file image-list and VOC trees in %s", csvMiB, files, work)
	csvDir := filepath.Join(work, "csv")
	csvRows, err := writeCSV(csvDir, int64(csvMiB)<<20)
	if err != nil {
		return err
	}
	listDir := filepath.Join(work, "imagelist")
	if err := writeImageList(listDir, files); err != nil {
		return err
	}
	vocDir := filepath.Join(work, "voc")
	if err := writeVOC(vocDir, files); err != nil {
		return err
	}

	var stats, wc []measure
	for i := range runs {
		dropCaches()
		m, out, err := timed(launcher, barge, "dataset", "stats", "-o", "json", csvDir)
		if err != nil {
			return err
		}
		if err := checkSamples(out, csvRows); err != nil {
			return fmt.Errorf("csv: %w", err)
		}
		stats = append(stats, m)
		dropCaches()
		w, _, err := timed(launcher, "wc", "-l", filepath.Join(csvDir, "train.csv"))
		if err != nil {
			return err
		}
		wc = append(wc, w)
		benchdoc.Logf("csv run %d: barge %s (%d MiB RSS), wc -l %s", i+1, m.wall.Round(time.Millisecond), m.rss>>20, w.wall.Round(time.Millisecond))
	}
	trees := map[string][]measure{}
	for _, tree := range []struct{ name, dir string }{{"imagelist", listDir}, {"voc", vocDir}} {
		for i := range runs {
			m, out, err := timed(launcher, barge, "dataset", "stats", "-o", "json", tree.dir)
			if err != nil {
				return err
			}
			if err := checkSamples(out, int64(files)); err != nil {
				return fmt.Errorf("%s: %w", tree.name, err)
			}
			trees[tree.name] = append(trees[tree.name], m)
			benchdoc.Logf("%s run %d: %s (%d MiB RSS)", tree.name, i+1, m.wall.Round(time.Millisecond), m.rss>>20)
		}
	}

	size := float64(int64(csvMiB) << 20)
	s, w := median(stats), median(wc)
	li, vo := median(trees["imagelist"]), median(trees["voc"])
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %d CPUs; load average %s; %d runs each, medians.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), benchdoc.LoadAvg(), runs)
	fmt.Fprintln(&b, "| input | barge dataset stats | throughput | peak RSS | floor | barge ÷ floor | RSS target |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|")
	fmt.Fprintf(&b, "| CSV, %d MiB, %d records | %s | %.0f MiB/s | %d MiB | `wc -l`: %s (%.0f MiB/s) | %.1f× | ≤ 64 MiB: %s |\n",
		csvMiB, csvRows, s.wall.Round(time.Millisecond), size/(1<<20)/s.wall.Seconds(), s.rss>>20,
		w.wall.Round(time.Millisecond), size/(1<<20)/w.wall.Seconds(), s.wall.Seconds()/w.wall.Seconds(), met(s.rss))
	fmt.Fprintf(&b, "| image list, %d images (every referenced file checked) | %s | %.0f files/s | %d MiB | — | — | ≤ 64 MiB: %s |\n",
		files, li.wall.Round(time.Millisecond), float64(files)/li.wall.Seconds(), li.rss>>20, met(li.rss))
	fmt.Fprintf(&b, "| Pascal VOC, %d annotation files | %s | %.0f files/s | %d MiB | — | — | ≤ 64 MiB: %s |\n",
		files, vo.wall.Round(time.Millisecond), float64(files)/vo.wall.Seconds(), vo.rss>>20, met(vo.rss))
	fmt.Print("\n" + b.String())
	if doc != "" {
		return benchdoc.WriteSection(doc, "dataset", b.String())
	}
	return nil
}

func met(rss int64) string {
	if rss <= 64<<20 {
		return "yes"
	}
	return "no"
}

func median(ms []measure) measure {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b measure) int { return int(a.wall - b.wall) })
	return s[len(s)/2]
}

// timed runs a command through the rusage launcher and returns its wall
// time and peak RSS, and its standard output.
func timed(launcher string, args ...string) (measure, []byte, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return measure{}, nil, err
	}
	defer r.Close()
	var out, errb bytes.Buffer
	cmd := exec.Command(launcher, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Run()
	w.Close()
	if err != nil {
		return measure{}, nil, fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	var rss, wall, cpu int64
	if _, err := fmt.Fscan(r, &rss, &wall, &cpu); err != nil {
		return measure{}, nil, fmt.Errorf("read the launcher's report: %w", err)
	}
	return measure{wall: time.Duration(wall), rss: rss}, out.Bytes(), nil
}

func checkSamples(out []byte, want int64) error {
	var st struct {
		NumberOfSamples int64 `json:"numberOfSamples"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return err
	}
	if st.NumberOfSamples != want {
		return fmt.Errorf("counted %d samples, generated %d", st.NumberOfSamples, want)
	}
	return nil
}

var labels = []string{"normal", "imbalance", "bearing-wear", "misalignment", "looseness"}

// writeCSV writes train.csv of about size bytes, with quoted fields that
// hold commas, and returns its number of records.
func writeCSV(dir string, size int64) (int64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	f, err := os.Create(filepath.Join(dir, "train.csv"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	fmt.Fprint(w, "sensor_id,rms_g,peak_g,kurtosis,dominant_hz,note,label\n")
	var rows, written int64
	for written < size {
		n, _ := fmt.Fprintf(w, "pump-%02d,%.4f,%.4f,%.3f,%d,\"site %d, line %d\",%s\n",
			r.IntN(64), r.Float64(), 3*r.Float64(), 3+4*r.Float64(), 25+r.IntN(200), r.IntN(9), r.IntN(30), labels[r.IntN(len(labels))])
		written += int64(n)
		rows++
	}
	return rows, w.Flush()
}

// writeImageList writes n one-byte images and a train list naming them.
func writeImageList(dir string, n int) error {
	img := filepath.Join(dir, "images")
	if err := os.MkdirAll(img, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "train.txt"))
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	for i := range n {
		name := fmt.Sprintf("%06d.jpg", i)
		if err := os.WriteFile(filepath.Join(img, name), []byte{0xff}, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(w, "images/%s %s\n", name, labels[i%len(labels)])
	}
	return w.Flush()
}

// writeVOC writes n Pascal VOC annotation files of two objects each.
func writeVOC(dir string, n int) error {
	ann := filepath.Join(dir, "Annotations")
	if err := os.MkdirAll(ann, 0o755); err != nil {
		return err
	}
	for i := range n {
		x := fmt.Sprintf(`<annotation><folder>VOC</folder><filename>%06d.jpg</filename><size><width>640</width><height>480</height><depth>3</depth></size>`+
			`<object><name>%s</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>200</xmax><ymax>300</ymax></bndbox></object>`+
			`<object><name>person</name><difficult>%d</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>`,
			i, []string{"cat", "dog", "car"}[i%3], i%2)
		if err := os.WriteFile(filepath.Join(ann, fmt.Sprintf("%06d.xml", i)), []byte(x), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// dropCaches evicts the page cache where the bench may (root), so that
// barge and wc both read the CSV from disk; elsewhere both read it warm.
func dropCaches() {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0o200)
}
