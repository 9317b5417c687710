package main

import (
	"context"
	"fmt"
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
func (b *bench) profile(ctx context.Context, out string) error {
	base := filepath.Join(b.work, "profile")
	st, err := store.Open(filepath.Join(base, "cache"), store.Options{})
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
	_, a, res, err := fetch.Pull(ctx, st, b.direct(b.model), fetch.Options{PlainHTTP: true})
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
