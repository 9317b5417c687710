package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"oras.land/oras-go/v2/errdef"
)

// The tests below re-execute the test binary as a second puller process;
// TestHelperProcess is its body and does nothing in a normal run.
const helperEnv = "BARGE_STORE_HELPER"

const (
	helperCheckpoint = 64 << 10
	helperSize       = 1 << 20
	helperSeed       = 77
)

func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	if err := runHelper(mode, os.Getenv("BARGE_STORE_ROOT")); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

func runHelper(mode, root string) error {
	ctx := context.Background()
	s, err := Open(root, Options{CheckpointBytes: helperCheckpoint})
	if err != nil {
		return err
	}
	data, desc := testBlob(helperSize, helperSeed)
	if mode == "push" {
		return s.Push(ctx, desc, bytes.NewReader(data))
	}
	w, err := s.Writer(ctx, desc)
	if err != nil {
		return err
	}
	switch mode {
	case "write-slowly":
		// Report progress after every write, then stop one byte short
		// and wait for the SIGKILL.
		const chunk = 16 << 10
		for off := int64(0); off < helperSize-1; {
			n := min(chunk, helperSize-1-off)
			if _, err := w.Write(data[off : off+n]); err != nil {
				return err
			}
			off += n
			fmt.Printf("wrote %d\n", off)
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(time.Minute)
		return errors.New("not killed")
	case "hold":
		// Hold the ingest until told to finish on stdin.
		if _, err := w.Write(data[:3*helperCheckpoint+10]); err != nil {
			return err
		}
		fmt.Println("holding")
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if line != "commit\n" {
			return fmt.Errorf("unexpected command %q", line)
		}
		if _, err := w.Write(data[w.Offset():]); err != nil {
			return err
		}
		return w.Commit(ctx)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

type helper struct {
	cmd   *exec.Cmd
	out   *bufio.Scanner
	stdin io.WriteCloser
}

func startHelper(t *testing.T, mode, root string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "BARGE_STORE_ROOT="+root)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &helper{cmd: cmd, out: bufio.NewScanner(stdout), stdin: stdin}
}

// await returns the first output line with prefix, or fails.
func (h *helper) await(t *testing.T, prefix string) string {
	t.Helper()
	for h.out.Scan() {
		if line, ok := strings.CutPrefix(h.out.Text(), prefix); ok {
			return line
		}
	}
	t.Fatalf("helper exited before printing %q: %v", prefix, h.cmd.Wait())
	return ""
}

func (h *helper) kill(t *testing.T) {
	t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := h.cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die by SIGKILL: %v", err)
	}
}

// TestSIGKILLResume kills a puller mid-write and resumes in this process:
// the blob must come out right, and the resume must read from the source
// only the suffix from its checkpoint, which is the last boundary the
// helper reported or later: the progress checkpoint is written before a
// Write that reaches a boundary returns, and a SIGKILL keeps the page
// cache, so the resume trusts it whatever the durable checkpoint (landing
// in the background) had reached. So it reads at most the unreported
// suffix plus less than one interval. (Without a boot id, as on other
// systems, the durable checkpoint alone may be one interval older.)
func TestSIGKILLResume(t *testing.T) {
	root := t.TempDir()
	h := startHelper(t, "write-slowly", root)
	var reported int64
	for reported < 600<<10 {
		n, err := strconv.ParseInt(h.await(t, "wrote "), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		reported = n
	}
	h.kill(t)

	ctx := context.Background()
	s, err := Open(root, Options{CheckpointBytes: helperCheckpoint})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(helperSize, helperSeed)
	st, err := s.Status(ctx, desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	// The helper may have written more than it reported when it died, so
	// the checkpoint may also be later, but never past the end.
	lastBoundary := reported / helperCheckpoint * helperCheckpoint
	oldest := lastBoundary
	if bootID() == "" {
		oldest -= helperCheckpoint
	}
	if st.Offset%helperCheckpoint != 0 || st.Offset < oldest || st.Offset >= helperSize {
		t.Fatalf("after SIGKILL at >= %d bytes the ingest resumes at %d; want a checkpoint at or after %d",
			reported, st.Offset, oldest)
	}
	r, stats := newSeekReader(data)
	if err := s.Push(ctx, desc, r); err != nil {
		t.Fatalf("resume after SIGKILL: %v", err)
	}
	// Only the suffix from the resume point is read, and so never more
	// than the suffix from the last reported boundary.
	if want := helperSize - st.Offset; stats.read != want || stats.read > helperSize-oldest {
		t.Errorf("resume read %d bytes; want %d, the suffix from the checkpoint at %d (at most %d, the suffix from %d)",
			stats.read, want, st.Offset, helperSize-oldest, oldest)
	}
	assertBlob(t, s, desc, data)
}

// TestCrossProcessLock: a second process holding the ingest blocks this
// one; if it commits, this one gets ErrAlreadyExists without reading; if it
// is killed, the kernel frees its lock and this one resumes its partial.
func TestCrossProcessLock(t *testing.T) {
	ctx := context.Background()
	data, desc := testBlob(helperSize, helperSeed)

	t.Run("holder commits", func(t *testing.T) {
		root := t.TempDir()
		h := startHelper(t, "hold", root)
		h.await(t, "holding")
		s, err := Open(root, Options{CheckpointBytes: helperCheckpoint})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		r, stats := newPlainReader(data)
		go func() { done <- s.Push(ctx, desc, r) }()
		select {
		case err := <-done:
			t.Fatalf("Push did not wait for the other process: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := io.WriteString(h.stdin, "commit\n"); err != nil {
			t.Fatal(err)
		}
		if err := h.cmd.Wait(); err != nil {
			t.Fatalf("helper failed to commit: %v", err)
		}
		if err := <-done; !errors.Is(err, errdef.ErrAlreadyExists) {
			t.Fatalf("waiting Push: err = %v, want ErrAlreadyExists", err)
		}
		if stats.read != 0 {
			t.Errorf("waiting Push read %d bytes; the other process already downloaded them", stats.read)
		}
		assertBlob(t, s, desc, data)
	})

	t.Run("holder killed", func(t *testing.T) {
		root := t.TempDir()
		h := startHelper(t, "hold", root)
		h.await(t, "holding")
		s, err := Open(root, Options{CheckpointBytes: helperCheckpoint})
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := s.Writer(short, desc); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Writer while another process holds the ingest: err = %v, want it to wait until the deadline", err)
		}
		h.kill(t)
		w, err := s.Writer(ctx, desc)
		if err != nil {
			t.Fatalf("Writer after the holder died: %v", err)
		}
		if w.Offset() != 3*helperCheckpoint {
			t.Errorf("resumed at %d, want the dead holder's last checkpoint %d", w.Offset(), 3*helperCheckpoint)
		}
		if _, err := w.Write(data[w.Offset():]); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		assertBlob(t, s, desc, data)
	})
}

// TestRetryAfterCrashInCommit: a crash between Commit's Chmod(0444) and its
// rename leaves the whole blob read-only in ingest/. The next pull of that
// blob, by a puller without CAP_DAC_OVERRIDE as the chart runs it (or the
// CLI as a user), must succeed instead of failing until garbage collection.
func TestRetryAfterCrashInCommit(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(worldDir(t), "store")
	s, err := Open(root, Options{CheckpointBytes: helperCheckpoint})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(helperSize, helperSeed)
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	// Commit's steps up to the crash: verified, synced, made read-only.
	if err := w.data.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := w.data.Chmod(0o444); err != nil {
		t.Fatal(err)
	}
	crash(w)
	ingestData := filepath.Join(s.ingestDir(desc.Digest), "data")
	if fi, err := os.Lstat(ingestData); err != nil || fi.Mode() != 0o444 {
		t.Fatalf("the crash should leave a read-only ingest file: %v, %v", fi, err)
	}

	if os.Geteuid() == 0 {
		// Root could open the file whatever its mode: retry as a user.
		pushAsNobody(t, root)
	} else if err := s.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatalf("retry after a crash in Commit: %v", err)
	}
	assertBlob(t, s, desc, data)
	if _, err := os.Lstat(s.ingestDir(desc.Digest)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ingest is still there after the retry committed: %v", err)
	}
}

// worldDir is a temporary directory that another user may enter (the
// test's own temporary directories may not be).
func worldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "barge-store-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pushAsNobody pushes the helper blob into the store at root from a process
// running as uid and gid 65534, without any capability, as the store's
// owner: the store's files are handed to that user first, as they would
// belong to it in a deployment.
func pushAsNobody(t *testing.T, root string) {
	t.Helper()
	const nobody = 65534
	err := filepath.WalkDir(root, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, nobody, nobody)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The test binary lives in a directory only root may enter.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(root), "store.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"=push", "BARGE_STORE_ROOT="+root, "HOME=/", "GOCOVERDIR=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("retry as uid %d after a crash in Commit: %v\n%s", nobody, err, out)
	}
}
