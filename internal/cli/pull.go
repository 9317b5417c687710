package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/errdef"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/edgepuller/unpack"
)

func newPullCommand(s streams) *cobra.Command {
	var (
		rf    remoteFlags
		out   output
		cache string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "pull REF DIR",
		Short: "Pull an artifact's files into DIR, verified, through a local content store",
		Long: `Fetch every layer of REF into the local content store (--cache), verify it,
and materialize the files in DIR by their titles: raw files are hard-linked
from the store and read-only, tar layers are extracted. DIR is built beside
itself and swapped in whole, so it never holds half a version. Layers the
store has already (from any artifact) are not downloaded again.`,
		Example: `  barge pull 127.0.0.1:5000/models/resnet:1.0.0 ./resnet
  barge pull --cache /var/cache/barge registry.example.com/models/resnet@sha256:… /srv/models/resnet`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRef(args[0])
			if err != nil {
				return err
			}
			dir := args[1]
			if cache == "" {
				if cache, err = defaultCache(); err != nil {
					return err
				}
			}
			st, err := store.Open(cache, store.Options{})
			if err != nil {
				return fmt.Errorf("open cache %s: %w (choose another with --cache)", cache, err)
			}
			repo, err := rf.repository(ref)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			desc, err := resolve(ctx, repo, ref)
			if err != nil {
				return err
			}
			a, err := artifact.Inspect(ctx, repo, desc)
			if err != nil {
				return explain(fmt.Errorf("pull %s: %w", ref, err), ref)
			}
			if err := pullable(a, ref.String()); err != nil {
				return err
			}
			for _, w := range a.Warnings {
				fmt.Fprintf(s.err, "Warning: %s\n", w)
			}
			p := newProgress(s, out == "json")
			err = oras.CopyGraph(ctx, repo, progressStore{Store: st, p: p}, desc, oras.CopyGraphOptions{Concurrency: 4})
			p.wait()
			if err != nil {
				return explain(fmt.Errorf("pull %s: %w", ref, err), ref)
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Clean(dir)), 0o755); err != nil {
				return fmt.Errorf("pull into %s: %w", dir, err)
			}
			if err := unpack.ReplaceDir(ctx, st, fileLayers(a), dir, unpack.Options{Overwrite: force}); err != nil {
				if errors.Is(err, unpack.ErrNotOwned) {
					return fmt.Errorf("%w: pull into a new or empty directory, or pass --force to replace it", err)
				}
				return err
			}
			abs, _ := filepath.Abs(dir)
			if out == "json" {
				return writeJSON(s.out, map[string]any{"reference": ref.String(), "digest": desc.Digest, "path": abs, "files": a.Files})
			}
			fmt.Fprintf(s.err, "Pulled %s\nDigest: %s\n", ref, desc.Digest)
			fmt.Fprintln(s.out, abs)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (loopback registries always do)")
	f.StringVar(&cache, "cache", "", "local content store (default: the user's cache directory, barge/store)")
	f.BoolVar(&force, "force", false, "replace DIR even if a previous pull did not create it")
	addOutputFlag(cmd, &out)
	return cmd
}

func defaultCache() (string, error) {
	if d := os.Getenv("BARGE_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache directory: %w (give one with --cache)", err)
	}
	return filepath.Join(d, "barge", "store"), nil
}

// pullable refuses what has no files to write.
func pullable(a *artifact.Artifact, ref string) error {
	switch a.Kind {
	case artifact.KindImage:
		return fmt.Errorf("%s is a container image: run it with a container runtime; barge pull fetches model, code and dataset files", ref)
	case artifact.KindJoint:
		return fmt.Errorf("%s is a joint model (an index of an edge and a cloud model): pull one of its members by digest, listed by `barge inspect %s`", ref, ref)
	}
	if len(a.Files) == 0 {
		return fmt.Errorf("%s has no file layers (none has an org.opencontainers.image.title): nothing to pull", ref)
	}
	return nil
}

// fileLayers are the layers to materialize, with the annotations unpack reads.
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

// progressStore shows the layers a pull downloads and those the store has.
type progressStore struct {
	*store.Store
	p progress
}

func (s progressStore) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	ok, err := s.Store.Exists(ctx, desc)
	if name, file := fileName(desc); ok && err == nil && file {
		s.p.note("Cached", name, desc.Size)
	}
	return ok, err
}

func (s progressStore) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	name, file := fileName(desc)
	if !file {
		return s.Store.Push(ctx, desc, r)
	}
	t := s.p.start("Downloaded", name, desc.Size)
	err := s.Store.Push(ctx, desc, &countingReader{r: r, t: t})
	if errors.Is(err, errdef.ErrAlreadyExists) {
		err = nil
	}
	t.done(err)
	return err
}
