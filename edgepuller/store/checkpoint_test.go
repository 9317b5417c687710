package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOtherBootFallsBackToDurable: the progress checkpoint describes bytes
// that were never fsynced, so it is trusted only in the boot that wrote
// it. A progress file from another boot (a power cut or a reboot since:
// crafted here, since a test cannot reboot) must not move the resume past
// the durable checkpoint, and the bytes beyond it are not hashed.
func TestOtherBootFallsBackToDurable(t *testing.T) {
	if bootID() == "" {
		t.Skip("no boot id on this system: progress checkpoints are not written")
	}
	ctx := context.Background()
	const cp = 4 << 10
	for _, tc := range []struct {
		name         string
		progressBoot string // "" removes the boot id
		v1State      bool   // the durable state as an earlier release wrote it
		noState      bool
		want         int64
	}{
		{"this boot", bootID(), false, false, 3 * cp},
		{"another boot", "0b7f3a52-0000-4000-8000-000000000000", false, false, cp},
		{"another boot, v1 durable state", "0b7f3a52-0000-4000-8000-000000000000", true, false, cp},
		{"another boot, no durable state", "0b7f3a52-0000-4000-8000-000000000000", false, true, 0},
		{"no boot id", "", false, false, cp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), Options{CheckpointBytes: cp})
			if err != nil {
				t.Fatal(err)
			}
			data, desc := testBlob(4*cp+17, 11)
			w, err := s.Writer(ctx, desc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data[:3*cp+100]); err != nil {
				t.Fatal(err)
			}
			crash(w)
			dir := s.ingestDir(desc.Digest)

			// The durable checkpoint lagging at cp, as when a power cut
			// comes while later ones were landing.
			durable := ingestState{Digest: desc.Digest, Total: desc.Size, Offset: cp, Hash: sha256State(t, data[:cp]), BootID: bootID()}
			magic := stateMagic
			if tc.v1State {
				durable.BootID, magic = "", stateMagicV1
			}
			b, err := durable.marshal(magic)
			if err != nil {
				t.Fatal(err)
			}
			write(t, dir, stateFile, b)
			if tc.noState {
				rm(t, dir, stateFile)
			}
			progress := readState(t, dir, progressFile)
			if progress.Offset != 3*cp {
				t.Fatalf("progress checkpoint at %d, want %d", progress.Offset, 3*cp)
			}
			progress.BootID = tc.progressBoot
			b, err = progress.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			write(t, dir, progressFile, b)

			if st, err := s.Status(ctx, desc.Digest); err != nil || st.Offset != tc.want {
				t.Errorf("Status = %+v, %v; want offset %d", st, err, tc.want)
			}
			r, stats := newSeekReader(data)
			if err := s.Push(ctx, desc, r); err != nil {
				t.Fatalf("resume: %v", err)
			}
			if want := desc.Size - tc.want; stats.read != want {
				t.Errorf("resume read %d bytes, want %d (from offset %d)", stats.read, want, tc.want)
			}
			assertBlob(t, s, desc, data)
		})
	}
}

// TestSlowDiskDoesNotStopDownload: while a durable checkpoint is landing
// (a disk slower than the link, simulated by holding it), the download
// goes on for durableLagIntervals intervals, writing a progress
// checkpoint at every boundary, and only then waits: a kill loses less
// than one interval, a power cut at most durableLagIntervals+1.
func TestSlowDiskDoesNotStopDownload(t *testing.T) {
	if bootID() == "" {
		t.Skip("no boot id on this system: checkpoints are paced as before")
	}
	ctx := context.Background()
	const cp = 4 << 10
	s, err := Open(t.TempDir(), Options{CheckpointBytes: cp})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}, 100), make(chan struct{})
	s.beforeDurable = func() {
		entered <- struct{}{}
		<-release
	}
	data, desc := testBlob(10*cp, 12)
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan int64, 100)
	done := make(chan error, 1)
	go func() {
		for off := int64(0); off < desc.Size; off += cp / 2 {
			if _, err := w.Write(data[off : off+cp/2]); err != nil {
				done <- err
				return
			}
			wrote <- off + cp/2
		}
		done <- nil
	}()
	<-entered // the first durable checkpoint, at cp, is stuck
	// The Write that reaches the boundary cp+lag writes its progress
	// checkpoint there, then waits for the disk.
	lag := int64(durableLagIntervals) * cp
	stop := cp + lag
	var last int64
	for last < stop-cp/2 {
		select {
		case last = <-wrote:
		case err := <-done:
			t.Fatalf("the download finished while the disk was stuck: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("the download stopped at %d while the durable checkpoint landed; want it to go on to %d", last, stop)
		}
	}
	// Now it must wait: the durable checkpoint on disk is at 0.
	select {
	case off := <-wrote:
		t.Fatalf("the download went on to %d with the durable checkpoint at 0; want it to wait at %d", off, stop)
	case <-time.After(100 * time.Millisecond):
	}
	dir := s.ingestDir(desc.Digest)
	if st := readState(t, dir, progressFile); st.Offset != stop {
		t.Errorf("progress checkpoint at %d, want the boundary %d", st.Offset, stop)
	}
	if st := readState(t, dir, stateFile); st.Offset != 0 {
		t.Errorf("durable checkpoint at %d while the first was held, want 0", st.Offset)
	}
	if st, err := s.Status(ctx, desc.Digest); err != nil || st.Offset != stop {
		t.Errorf("Status = %+v, %v; want the progress checkpoint %d", st, err, stop)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, desc, data)
}

func readState(t *testing.T, dir, name string) ingestState {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	st, err := decodeIngestState(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return st
}

// TestProgressNotARegularFile: a directory or a symlink where the progress
// checkpoint belongs (left by hand, or planted) neither blocks the pull nor
// sends the checkpoint's writes elsewhere; the resume uses the durable one.
func TestProgressNotARegularFile(t *testing.T) {
	if bootID() == "" {
		t.Skip("no boot id on this system: progress checkpoints are not written")
	}
	ctx := context.Background()
	const cp = 4 << 10
	for _, kind := range []string{"directory", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			s, err := Open(t.TempDir(), Options{CheckpointBytes: cp})
			if err != nil {
				t.Fatal(err)
			}
			data, desc := testBlob(3*cp+17, 13)
			w, err := s.Writer(ctx, desc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data[:2*cp+100]); err != nil {
				t.Fatal(err)
			}
			crash(w)
			path := filepath.Join(s.ingestDir(desc.Digest), progressFile)
			rm(t, filepath.Dir(path), progressFile)
			target := filepath.Join(t.TempDir(), "elsewhere")
			write(t, filepath.Dir(target), "elsewhere", []byte("keep"))
			if kind == "directory" {
				err = os.Mkdir(path, 0o755)
			} else {
				err = os.Symlink(target, path)
			}
			if err != nil {
				t.Fatal(err)
			}
			r, stats := newSeekReader(data)
			if err := s.Push(ctx, desc, r); err != nil {
				t.Fatalf("resume with a %s as progress checkpoint: %v", kind, err)
			}
			if want := desc.Size - 2*cp; stats.read != want {
				t.Errorf("resume read %d bytes, want %d (from the durable checkpoint %d)", stats.read, want, 2*cp)
			}
			assertBlob(t, s, desc, data)
			if b, err := os.ReadFile(target); err != nil || string(b) != "keep" {
				t.Errorf("the symlink's target now holds %q, %v; want it untouched", b, err)
			}
		})
	}
}
