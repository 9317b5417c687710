//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/edgepuller/unpack"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// profile pulls the model once in-process, the way barge pull does (fetch
// into a fresh store with the default options, then unpack), under the CPU
// profiler. barge has no profile flag; this is the same code path minus the
// CLI's progress output and the tag resolution it does before fetching.
// The registry runs in a separate `barge serve` on the same storage, so
// that the profile holds the client alone.
func (b *bench) profile(ctx context.Context, out string) error {
	base := filepath.Join(b.work, "profile")
	host, stop, err := b.serve(ctx)
	if err != nil {
		return err
	}
	defer stop()
	st, err := store.Open(filepath.Join(base, "cache"), store.Options{NoSync: b.cfg.noSync})
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	syscall.Sync()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	began := time.Now()
	_, a, res, err := fetch.Pull(ctx, st, host+"/"+b.model.name, fetch.Options{PlainHTTP: true})
	fetched := time.Since(began)
	if err == nil {
		err = unpack.ReplaceDir(ctx, st, fileLayers(a), filepath.Join(base, "out"), unpack.Options{})
	}
	took := time.Since(began)
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	logf("in-process pull: fetch %.2fs, fetch+unpack %.2fs, %d MiB fetched; profile in %s (go tool pprof -top %s)",
		fetched.Seconds(), took.Seconds(), res.Fetched>>20, out, out)
	fmt.Println(out)
	return nil
}

// fileLayers are the layers to materialize with the annotations unpack
// reads, as internal/cli passes them.
func fileLayers(a *artifact.Artifact) []ocispec.Descriptor {
	layers := make([]ocispec.Descriptor, 0, len(a.Files))
	for _, f := range a.Files {
		d := f.Descriptor()
		d.Annotations = map[string]string{artifact.AnnotationTitle: f.Path}
		if f.Unpack {
			d.Annotations[artifact.AnnotationUnpack] = "true"
		}
		layers = append(layers, d)
	}
	return layers
}

// serve starts `barge serve` on the bench registry's storage and a free
// loopback port, and waits until it answers.
func (b *bench) serve(ctx context.Context) (host string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	host = ln.Addr().String()
	ln.Close()
	p, err := b.start(ctx, []string{b.barge, "serve", "--addr", host, "--root", filepath.Join(b.work, "registry")}, false)
	if err != nil {
		return "", nil, err
	}
	stop = func() { p.kill(); p.wait() }
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + host + "/v2/"); err == nil {
			resp.Body.Close()
			return host, stop, nil
		}
	}
	stop()
	return "", nil, fmt.Errorf("barge serve on %s did not answer within 20s: %s", host, p.stderr)
}
