package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/Masterminds/semver/v3"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/dataset"
	"github.com/bargeml/barge/edgepuller/store"
)

func newPushCommand(s streams) *cobra.Command {
	var (
		rf          remoteFlags
		out         output
		kind        string
		annotations []string
		meta        artifact.Metadata
		labelsFile  string
		allowOut    bool
		df          datasetFlags
		strict      bool
		shardBytes  string
		joint       []string
		seed        string
	)
	cmd := &cobra.Command{
		Use:   "push DIR REF",
		Short: "Pack a directory as a model (or code) artifact and push it",
		Long: `Pack every file under DIR as one layer titled by its relative path and push
the artifact to REF. Files the registry has already are not uploaded again.
Files under preprocess/, postprocess/, train/ or aggregate/ are code layers
with that role. Prints the manifest digest.

Large files go up in 4 MiB chunks. A push cut off or killed midway, run
again, continues each file where the registry stopped; the unfinished
uploads are remembered in the user's cache directory (barge/uploads).`,
		Example: `  barge push ./resnet 127.0.0.1:5000/models/resnet:1.0.0 --task image-classification --framework onnx
  DIGEST=$(barge push ./scripts registry.example.com/code/prep:2 --kind code)
  barge push --joint edge=./backbone --joint cloud=./head 127.0.0.1:5000/models/detector:1.0.0`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(joint) > 0 {
				return cobra.ExactArgs(1)(cmd, args)
			}
			return cobra.ExactArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var parts map[string]string
			if len(joint) > 0 {
				var err error
				if parts, err = parseJoint(joint); err != nil {
					return err
				}
				args = append([]string{""}, args...)
			}
			dir, refArg := args[0], args[1]
			ref, err := parseRef(refArg)
			if err != nil {
				return err
			}
			if ref.Reference == "" {
				ref.Reference = "latest"
			}
			if strings.HasPrefix(ref.Reference, "sha256:") {
				return fmt.Errorf("push %s: give a tag, not a digest: the digest is computed from the files", refArg)
			}
			k, err := artifact.ParseKind(kind)
			if err != nil {
				return err
			}
			opts := artifact.PackOptions{Kind: k, Metadata: meta, AllowOutsideSymlinks: allowOut}
			if opts.Annotations, err = parseAnnotations(annotations); err != nil {
				return err
			}
			if labelsFile != "" {
				labels, err := readLabels(labelsFile)
				if err != nil {
					return err
				}
				opts.Labels = append(opts.Labels, labels...)
			}
			if opts.Version == "" {
				if _, err := semver.NewVersion(ref.Reference); err == nil {
					opts.Version = ref.Reference
				}
			}
			repo, err := rf.repository(ref)
			if err != nil {
				return err
			}
			p := newProgress(s, out == "json")
			up, ps := resumableStorage(repo, p)
			var dst artifact.Storage = ps
			if seed != "" {
				st, err := store.Open(seed, store.Options{})
				if err != nil {
					return fmt.Errorf("--store: %w", err)
				}
				dst = seedStorage{Storage: ps, st: st}
			}
			var desc ocispec.Descriptor
			switch {
			case parts != nil:
				desc, err = artifact.PackJoint(cmd.Context(), dst, parts[artifact.LayerEdge], parts[artifact.LayerCloud], opts)
			case k == artifact.KindDataset:
				desc, err = pushDataset(cmd.Context(), s, dst, dir, df, strict, shardBytes, opts)
			default:
				desc, err = artifact.Pack(cmd.Context(), dst, dir, opts)
			}
			p.wait()
			if err != nil {
				return explain(err, ref)
			}
			if err := up.Tag(cmd.Context(), desc, ref.Reference); err != nil {
				return explain(fmt.Errorf("tag %s: %w", ref, err), ref)
			}
			if out == "json" {
				return writeJSON(s.out, map[string]any{
					"reference": ref.String(), "digest": desc.Digest, "mediaType": desc.MediaType,
					"artifactType": desc.ArtifactType, "size": desc.Size,
				})
			}
			fmt.Fprintf(s.err, "Pushed %s\n", ref)
			fmt.Fprintln(s.out, desc.Digest)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
	f.StringVar(&kind, "kind", "model", "artifact kind: model, code or dataset")
	f.StringArrayVarP(&annotations, "annotation", "a", nil, "manifest annotation KEY=VALUE (repeatable)")
	f.StringVar(&meta.Name, "name", "", "model name (ModelPack descriptor)")
	f.StringVar(&meta.Version, "artifact-version", "", "model version (default: the tag, when it is a semantic version)")
	f.StringVar(&meta.Task, "task", "", "model task, such as image-classification or object-detection")
	f.StringVar(&meta.Framework, "framework", "", "serving framework or format, such as onnx or tensorrt")
	f.StringArrayVar(&meta.Labels, "label", nil, "a label the model predicts (repeatable)")
	f.StringVar(&labelsFile, "labels-file", "", "file with one label per line")
	f.BoolVar(&allowOut, "allow-outside-symlinks", false, "pack the targets of symlinks that point outside DIR")
	df.add(cmd)
	f.BoolVar(&strict, "strict", false, "with --kind dataset: refuse to push a dataset that has problems")
	f.StringVar(&shardBytes, "shard-size", "64M", "with --kind dataset: bound on a tar shard of small files")
	f.StringArrayVar(&joint, "joint", nil, "push a joint model instead of DIR: edge=DIR and cloud=DIR, one index over both parts (give both)")
	f.StringVar(&seed, "store", "", "also keep the pushed blobs in this edge puller blob store (on an edge node, /var/lib/barge/store), so that the node serves them to its site's peers and the site's uplink carries them once")
	addOutputFlag(cmd, &out)
	return cmd
}

// pushDataset computes a dataset's statistics into its config and packs its
// files into shards.
func pushDataset(ctx context.Context, s streams, dst artifact.Storage, dir string, df datasetFlags, strict bool, shardBytes string, opts artifact.PackOptions) (ocispec.Descriptor, error) {
	shard, err := parseRate("--shard-size", shardBytes)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	boundMemory()
	st, err := dataset.Analyze(ctx, dir, df.options())
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	fmt.Fprintf(s.err, "Dataset: %s, %d samples, %d classes, %d files\n", st.Format, st.NumberOfSamples, len(st.Classes), st.Files)
	printProblems(s.err, st, 5)
	if strict && st.NumberOfProblems > 0 {
		return ocispec.Descriptor{}, fmt.Errorf("push %s: the dataset has %d problem(s) and --strict is set: fix them (barge dataset stats %s lists them) or push without --strict", dir, st.NumberOfProblems, dir)
	}
	config, err := json.Marshal(st)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return artifact.PackDataset(ctx, dst, dir, config, artifact.DatasetOptions{
		ShardBytes: shard, Annotations: opts.Annotations, AllowOutsideSymlinks: opts.AllowOutsideSymlinks,
	})
}

func parseAnnotations(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("annotation %q is not KEY=VALUE", kv)
		}
		m[k] = v
	}
	return m, nil
}

func readLabels(name string) ([]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read labels: %w", err)
	}
	defer f.Close()
	var labels []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			labels = append(labels, l)
		}
	}
	return labels, sc.Err()
}

// parseJoint reads --joint edge=DIR --joint cloud=DIR.
func parseJoint(flags []string) (map[string]string, error) {
	parts := map[string]string{}
	for _, f := range flags {
		layer, dir, ok := strings.Cut(f, "=")
		if !ok || (layer != artifact.LayerEdge && layer != artifact.LayerCloud) || dir == "" {
			return nil, fmt.Errorf("--joint %q: write edge=DIR or cloud=DIR", f)
		}
		if _, dup := parts[layer]; dup {
			return nil, fmt.Errorf("--joint names the %s part twice", layer)
		}
		parts[layer] = dir
	}
	for _, layer := range []string{artifact.LayerEdge, artifact.LayerCloud} {
		if parts[layer] == "" {
			return nil, fmt.Errorf("--joint: no %s part: give both --joint edge=DIR and --joint cloud=DIR", layer)
		}
	}
	return parts, nil
}
