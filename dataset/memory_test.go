package dataset

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// The datasets below are far larger than the heap growth allowed while
// reading them: a parser that held a file, or a record per sample, fails.
const maxHeapGrowth = 16 << 20

// writeFile streams what write produces into dir/rel and returns its size.
func writeFile(t *testing.T, dir, rel string, write func(w io.Writer)) int64 {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cw := &countingWriter{w: f}
	w := bufio.NewWriter(cw)
	write(w)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return cw.n
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// analyzeMeasured runs Analyze on dir and returns the stats and how much the
// heap in use grew at its peak, sampled every 5 ms.
func analyzeMeasured(t *testing.T, dir string) (*Stats, int64) {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapInuse, ms.HeapInuse
	done, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	}()
	start := time.Now()
	s, err := Analyze(context.Background(), dir, Options{})
	close(done)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("analyzed in %v; heap in use %d KB at start, %d KB at peak", time.Since(start).Round(time.Millisecond), base>>10, peak>>10)
	return s, int64(peak) - int64(base)
}

func TestMemoryDoesNotGrowWithCSV(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and reads 50 MB")
	}
	dir := t.TempDir()
	var rows int64
	size := writeFile(t, dir, "train.csv", func(w io.Writer) {
		fmt.Fprint(w, "id,text,label\r\n")
		for size := 0; size < 50<<20; rows++ {
			n, _ := fmt.Fprintf(w, "%d,\"a text, with a comma and \"\"quotes\"\"\nand a newline\",class%d\r\n", rows, rows%7)
			size += n
		}
	})
	s, grew := analyzeMeasured(t, dir)
	if s.NumberOfSamples != rows || s.NumberOfProblems != 0 || len(s.Classes) != 7 {
		t.Errorf("samples %d (want %d), problems %d, classes %d", s.NumberOfSamples, rows, s.NumberOfProblems, len(s.Classes))
	}
	if grew > maxHeapGrowth {
		t.Errorf("heap in use grew by %d MB while reading a %d MB file", grew>>20, size>>20)
	}
}

// A COCO file is one JSON value; it must be streamed, not decoded whole.
func TestMemoryDoesNotGrowWithCOCO(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and reads 24 MB")
	}
	dir := t.TempDir()
	const images, perImage = 10000, 10
	size := writeFile(t, dir, "annotations/instances_train.json", func(w io.Writer) {
		fmt.Fprint(w, "{\n\"info\": {\"description\": \"generated\"},\n\"images\": [\n")
		for i := 1; i <= images; i++ {
			sep := ","
			if i == images {
				sep = ""
			}
			fmt.Fprintf(w, "  {\"id\": %d, \"file_name\": \"%012d.jpg\", \"width\": 640, \"height\": 480}%s\n", i, i, sep)
		}
		fmt.Fprint(w, "],\n\"annotations\": [\n")
		for i := 1; i <= images*perImage; i++ {
			sep := ","
			if i == images*perImage {
				sep = ""
			}
			fmt.Fprintf(w, "  {\"id\": %d, \"image_id\": %d, \"category_id\": %d, \"bbox\": [10.5, 20.25, 100.0, 50.0], \"area\": 5000.0, \"iscrowd\": 0, "+
				"\"segmentation\": [[10.5, 20.25, 110.5, 20.25, 110.5, 70.25, 10.5, 70.25, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0]]}%s\n",
				i, (i-1)/perImage+1, i%3+1, sep)
		}
		fmt.Fprint(w, "],\n\"categories\": [{\"id\": 1, \"name\": \"a\"}, {\"id\": 2, \"name\": \"b\"}, {\"id\": 3, \"name\": \"c\"}]\n}\n")
	})
	s, grew := analyzeMeasured(t, dir)
	if s.NumberOfSamples != images || s.NumberOfObjects != images*perImage || s.NumberOfProblems != 0 {
		t.Errorf("samples %d, objects %d, problems %v", s.NumberOfSamples, s.NumberOfObjects, s.Problems)
	}
	if grew > maxHeapGrowth {
		t.Errorf("heap in use grew by %d MB while reading a %d MB file", grew>>20, size>>20)
	}
	t.Logf("%d MB", size>>20)
}
