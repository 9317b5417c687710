package dataset

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestMemoryDoesNotGrowWithTheDataset analyzes a 50 MB CSV and checks that
// the heap in use never grows by more than a small fraction of it.
func TestMemoryDoesNotGrowWithTheDataset(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and reads 50 MB")
	}
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "train.csv"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprint(w, "id,text,label\r\n")
	var rows, size int64
	for size < 50<<20 {
		n, _ := fmt.Fprintf(w, "%d,\"a text, with a comma and \"\"quotes\"\"\nand a newline\",class%d\r\n", rows, rows%7)
		size += int64(n)
		rows++
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	peak := base
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
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
	t.Logf("%d MB, %d rows in %v; heap in use %d KB at start, %d KB at peak",
		size>>20, rows, time.Since(start).Round(time.Millisecond), base>>10, peak>>10)
	if s.NumberOfSamples != rows || s.NumberOfProblems != 0 || len(s.Classes) != 7 {
		t.Errorf("samples %d (want %d), problems %d, classes %d", s.NumberOfSamples, rows, s.NumberOfProblems, len(s.Classes))
	}
	if grew := int64(peak) - int64(base); grew > 16<<20 {
		t.Errorf("heap in use grew by %d MB while reading a %d MB file", grew>>20, size>>20)
	}
}
