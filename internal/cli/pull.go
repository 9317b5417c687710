package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/fetch"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/edgepuller/unpack"
)

func newPullCommand(s streams) *cobra.Command {
	var (
		rf        remoteFlags
		out       output
		cache     string
		force     bool
		limitRate string
		opts      fetch.Options
		verifyOn  bool
		vf        verifyFlags
	)
	cmd := &cobra.Command{
		Use:   "pull REF DIR",
		Short: "Pull an artifact's files into DIR, verified, through a local content store",
		Long: `Fetch every layer of REF into the local content store (--cache), verify it,
and materialize the files in DIR by their titles: raw files are hard-linked
from the store and read-only, tar layers are extracted. DIR is built beside
itself and swapped in whole, so it never holds half a version.

Downloads resume: a cut connection continues where it stopped, and a pull
that was killed continues from the store's partial download when run again.
Layers the store has already, from any artifact, are not downloaded again.`,
		Example: `  barge pull 127.0.0.1:5000/models/resnet:1.0.0 ./resnet
  barge pull --limit-rate 2M --mirror http://site-cache:5000 registry.example.com/models/resnet@sha256:… /srv/models/resnet`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRef(args[0])
			if err != nil {
				return err
			}
			dir := args[1]
			if err := pullVerify(verifyOn, &vf); err != nil {
				return err
			}
			if opts.LimitRate, err = parseRate("--limit-rate", limitRate); err != nil {
				return err
			}
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
			p := newProgress(s, out == "json")
			opts.PlainHTTP = repo.PlainHTTP
			opts.Client = repo.Client
			var names map[digest.Digest]string
			// Refuse an image or an unsafe manifest before downloading
			// anything big; fetch stores the manifest and config first.
			opts.Check = func(a *artifact.Artifact) error {
				if err := pullable(a, ref.String()); err != nil {
					return err
				}
				for _, w := range a.Warnings {
					fmt.Fprintf(s.err, "Warning: %s\n", w)
				}
				names = fileNames(a)
				return nil
			}
			opts.Progress = fetchProgress(p, func(d digest.Digest) (string, bool) { n, ok := names[d]; return n, ok })
			// The signature is checked as soon as the manifest is in: a
			// digest it refuses costs no layer bytes.
			var refused error
			if verifyOn {
				opts.Verify = func(ctx context.Context, desc ocispec.Descriptor) error {
					refused = vf.check(ctx, repo, ref, desc)
					return refused
				}
			}
			desc, a, res, err := fetch.Pull(ctx, st, ref.String(), opts)
			p.wait()
			if refused != nil {
				return fmt.Errorf("pull %s: %w\nnothing was written to %s", ref, refused, dir)
			}
			if err != nil {
				return explain(err, ref)
			}
			var warnings []string
			before, _ := os.Lstat(dir)
			if err := unpack.ReplaceDir(ctx, st, a.FileLayers(), dir, unpack.Options{Overwrite: force}); err != nil {
				if !swappedIn(dir, before) {
					if errors.Is(err, unpack.ErrNotOwned) {
						return fmt.Errorf("%w: pull into a new or empty directory, or pass --force to replace it", err)
					}
					return err
				}
				// The new version is in place; what failed came after (removing
				// the old tree, syncing the parent). Failing now would tell a
				// script that DIR still holds what it held before.
				w := fmt.Sprintf("the new version is in place, but a step after the swap failed: %v; remove what is left beside %s by hand", err, dir)
				fmt.Fprintf(s.err, "Warning: %s\n", w)
				warnings = append(warnings, w)
			}
			abs, _ := filepath.Abs(dir)
			if out == "json" {
				j := map[string]any{
					"reference": ref.String(), "digest": desc.Digest, "path": abs, "files": a.Files,
					"fetchedBytes": res.Fetched, "reusedBytes": res.Reused, "resumed": res.Resumed, "retries": res.Retries,
				}
				if len(warnings) > 0 {
					j["warnings"] = warnings
				}
				return writeJSON(s.out, j)
			}
			fmt.Fprintf(s.err, "Pulled %s\nDigest: %s\nFetched %s, reused %s from the cache", ref, desc.Digest, humanBytes(res.Fetched), humanBytes(res.Reused))
			if res.Resumed > 0 {
				fmt.Fprintf(s.err, ", resumed %d partial download(s)", res.Resumed)
			}
			fmt.Fprintln(s.err)
			fmt.Fprintln(s.out, abs)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
	f.StringVar(&cache, "cache", "", "local content store (default: the user's cache directory, barge/store, or $BARGE_CACHE)")
	f.BoolVar(&force, "force", false, "replace DIR even if a previous pull did not create it")
	f.IntVar(&opts.Concurrency, "concurrency", 4, "layers downloaded at once")
	f.IntVar(&opts.Segments, "segments", 4, "parallel Range requests for a large layer (128 MiB or more) while fewer than --concurrency layers download; 1 turns it off")
	f.StringVar(&limitRate, "limit-rate", "", "cap the download rate, in bytes per second with an optional K, M or G suffix (e.g. 2M)")
	f.DurationVar(&opts.Timeout, "timeout", fetch.DefaultTimeout, "give up a pull that has not finished after this long; run it again to resume")
	f.DurationVar(&opts.RequestTimeout, "request-timeout", fetch.DefaultRequestTimeout, "give up a manifest, tag lookup or token request to the registry after this long")
	f.StringArrayVar(&opts.Mirrors, "mirror", nil, "registry mirror tried before the origin, host[:port] or http://host[:port] (repeatable, tried in order)")
	f.BoolVar(&verifyOn, "verify", false, "check the signature (flags as for barge verify) before the files are put in place")
	vf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}

// swappedIn reports whether dir now is a tree that a pull put there in place
// of before (nil if dir did not exist): ReplaceDir can fail after its swap.
func swappedIn(dir string, before os.FileInfo) bool {
	after, err := os.Lstat(dir)
	if err != nil || !after.IsDir() || (before != nil && os.SameFile(before, after)) {
		return false
	}
	marker, err := os.Lstat(filepath.Join(dir, unpack.PullMarker))
	return err == nil && marker.Mode().IsRegular()
}

// parseRate reads a byte size or rate flag; empty means none.
func parseRate(flag, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := fetch.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", flag, err)
	}
	return n, nil
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

// fileNames names the file layers by digest, for progress.
func fileNames(a *artifact.Artifact) map[digest.Digest]string {
	names := map[digest.Digest]string{}
	for _, f := range a.Files {
		names[f.Digest] = f.Path
	}
	return names
}

// fetchProgress turns fetch events about file layers into progress;
// nameOf says which digests are files, and what they are called.
func fetchProgress(p progress, nameOf func(digest.Digest) (string, bool)) func(fetch.Event) {
	var mu sync.Mutex
	trackers := map[digest.Digest]tracker{}
	return func(e fetch.Event) {
		mu.Lock()
		defer mu.Unlock()
		name, ok := nameOf(e.Digest)
		if !ok {
			return // manifest and config
		}
		t := trackers[e.Digest]
		switch e.Kind {
		case fetch.Skipped:
			p.note("Cached", name, e.Total)
		case fetch.Resumed:
			p.note("Resuming", fmt.Sprintf("%s at %s", name, humanBytes(e.Offset)), e.Total)
			fallthrough
		case fetch.Started:
			if t == nil {
				t = p.start("Downloaded", name, e.Total)
				trackers[e.Digest] = t
			}
			t.set(e.Offset)
		case fetch.Progress, fetch.Retrying:
			if t != nil {
				t.set(e.Offset)
			}
		case fetch.Done, fetch.Failed:
			if t != nil {
				t.set(e.Offset)
				t.done(e.Err)
				delete(trackers, e.Digest)
			}
		}
	}
}
