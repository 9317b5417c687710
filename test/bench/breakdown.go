//go:build linux

package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/edgepuller/unpack"
)

// breakdown explains the cold pull: it times, alternating as the cold
// pull does, the two CLIs, barge's fetch and unpack library in-process,
// and the bare data path every client has (GET, sha256, write a file; four
// layers at a time) with three ways of making the file durable: none (as
// oras), fsync at the end, and writeback started every 4 MiB with
// sync_file_range before that fsync. The in-process variants share the
// bench process with the registry, as the CLIs share the machine with it.
func (b *bench) breakdown(ctx context.Context) ([]stage, error) {
	ref := b.direct(b.model)
	cli := func(t tool) func(string) error {
		return func(base string) error {
			r := b.run(ctx, t.argv(ref, filepath.Join(base, "out"), filepath.Join(base, "cache")))
			if r.err != nil {
				return fmt.Errorf("%w\n%s", r.err, r.stderr)
			}
			return nil
		}
	}
	stages := []stage{
		{name: "barge pull (CLI)", run: cli(b.bargeTool())},
		{name: "oras pull (CLI, 3 layers at a time)", run: cli(b.orasTool())},
		{name: "barge's fetch.Pull + unpack.ReplaceDir, in-process", run: func(base string) error {
			st, err := store.Open(filepath.Join(base, "cache"), store.Options{})
			if err != nil {
				return err
			}
			_, a, _, err := fetch.Pull(ctx, st, ref, fetch.Options{PlainHTTP: true})
			if err == nil {
				err = unpack.ReplaceDir(ctx, st, fileLayers(a), filepath.Join(base, "out"), unpack.Options{})
			}
			return err
		}},
		{name: "GET → sha256 → file, no fsync", run: func(base string) error { return b.dataPath(ctx, base, durNone) }},
		{name: "same + fsync at the end of each file", run: func(base string) error { return b.dataPath(ctx, base, durFsync) }},
		{name: "same + sync_file_range every 4 MiB, fsync at the end", run: func(base string) error { return b.dataPath(ctx, base, durEarly) }},
	}
	for round := 0; round < b.cfg.runs; round++ {
		order := make([]*stage, len(stages))
		for i := range stages {
			order[i] = &stages[i]
		}
		if round%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for _, s := range order {
			base := filepath.Join(b.work, "breakdown")
			if err := os.RemoveAll(base); err != nil {
				return nil, err
			}
			if err := os.MkdirAll(base, 0o755); err != nil {
				return nil, err
			}
			syscall.Sync()
			start := time.Now()
			if err := s.run(base); err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			s.wall = append(s.wall, time.Since(start))
		}
		logf("breakdown round %d of %d done", round+1, b.cfg.runs)
	}
	os.RemoveAll(filepath.Join(b.work, "breakdown"))
	return stages, nil
}

// stage is one way of pulling the model in the breakdown.
type stage struct {
	name string
	run  func(base string) error
	wall []time.Duration
}

type durability int

const (
	durNone durability = iota
	durFsync
	durEarly
)

// dataPath fetches every layer of the model as every client must: one GET
// each, all at once, hashed and written to a file as the bytes arrive.
func (b *bench) dataPath(ctx context.Context, base string, dur durability) error {
	g, ctx := errgroup.WithContext(ctx)
	repo, _, _ := strings.Cut(b.model.name, ":")
	for i, l := range b.model.layers {
		g.Go(func() error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.reg.URL()+"/v2/"+repo+"/blobs/"+l.Digest.String(), nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(base, fmt.Sprint(i)))
			if err != nil {
				return err
			}
			defer f.Close()
			h := sha256.New()
			w := io.Writer(f)
			if dur == durEarly {
				w = &earlyWriteback{f: f}
			}
			if _, err := io.Copy(w, io.TeeReader(resp.Body, h)); err != nil {
				return err
			}
			if dur != durNone {
				if err := f.Sync(); err != nil {
					return err
				}
			}
			if got := digest.NewDigest(digest.SHA256, h); got != l.Digest {
				return fmt.Errorf("layer %d: got %s, want %s", i, got, l.Digest)
			}
			return nil
		})
	}
	return g.Wait()
}

// earlyWriteback asks the kernel to start writing every 4 MiB to disk as
// soon as it is written, without waiting for it, so that the final fsync
// finds little left to do.
type earlyWriteback struct {
	f              *os.File
	off, scheduled int64
}

func (e *earlyWriteback) Write(p []byte) (int, error) {
	n, err := e.f.Write(p)
	e.off += int64(n)
	if e.off-e.scheduled >= 4<<20 {
		unix.SyncFileRange(int(e.f.Fd()), e.scheduled, e.off-e.scheduled, unix.SYNC_FILE_RANGE_WRITE)
		e.scheduled = e.off
	}
	return n, err
}
