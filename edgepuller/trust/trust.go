package trust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/verify"
)

// FileIdentities in a key directory lists the keyless signers trusted, as
// JSON [{"issuer": "…", "subject": "…"}] (anchored regular expressions).
const FileIdentities = "identities.json"

// FromDir is an agent.Options.Verify that takes the key material from the
// node's own directory, never from the desired entry: dir/<namespace>/<keys>/
// holds what verify.FromFiles reads (*.pub, trusted_root.json with
// identities.json, trustpolicy.json with TYPE.NAME.crt), typically a
// ConfigMap the cluster admin mounts. An entry whose namespace has a
// directory there must ask for verification, so stripping spec.verify from
// a NodeArtifact does not switch the check off. An entry that asks for
// verification when the node has no key material for it fails: the node
// fails closed. client reaches the registry (credentials); nil is
// anonymous.
func FromDir(dir string, client remote.Client) func(context.Context, agent.Desired, ocispec.Descriptor) error {
	if client == nil {
		client = auth.DefaultClient
	}
	return func(ctx context.Context, d agent.Desired, desc ocispec.Descriptor) error {
		ns := ""
		if i := strings.IndexByte(d.Name, '/'); i >= 0 {
			ns = d.Name[:i]
		}
		if d.Verify.Keys == "" {
			if ns != "" && dir != "" && isDir(filepath.Join(dir, ns)) {
				return fmt.Errorf("verify %s: %w: this node trusts only signed artifacts in namespace %s (it has key material for it) and the entry asks for no verification", desc.Digest, verify.ErrNotVerified, ns)
			}
			return nil
		}
		if dir == "" {
			return fmt.Errorf("verify %s: %w: the entry asks for a signature verified with %q and this node has no key material (start the puller with --verify-dir)", desc.Digest, verify.ErrNotVerified, d.Verify.Keys)
		}
		keyDir := filepath.Join(dir, ns, d.Verify.Keys)
		p, err := dirPolicy(keyDir, d.Verify.Provider)
		if err != nil {
			return fmt.Errorf("verify %s: %w: %v", desc.Digest, verify.ErrNotVerified, err)
		}
		v, err := verify.New(p)
		if err != nil {
			return fmt.Errorf("verify %s with %s: %w: %v", desc.Digest, keyDir, verify.ErrNotVerified, err)
		}
		ref, err := registry.ParseReference(d.Reference)
		if err != nil {
			return fmt.Errorf("verify %s: %w", d.Reference, err)
		}
		repo := &remote.Repository{Client: client, Reference: ref, PlainHTTP: d.Insecure}
		signed := desc
		if d.Verify.Index != "" {
			if signed, err = jointIndex(ctx, repo, d.Verify.Index, desc); err != nil {
				return fmt.Errorf("verify %s: %w", desc.Digest, err)
			}
		}
		return v.Verify(ctx, repo, ref.Registry+"/"+ref.Repository, signed)
	}
}

// jointIndex is the descriptor of the joint model's index whose signature
// covers its edge part, desc: read by digest (so the bytes are the signed
// ones), it must list desc as its edge part.
func jointIndex(ctx context.Context, repo *remote.Repository, index string, desc ocispec.Descriptor) (ocispec.Descriptor, error) {
	idx, err := repo.Resolve(ctx, index)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("read the joint model's index %s: %w", index, err)
	}
	if idx.Digest.String() != index {
		return ocispec.Descriptor{}, fmt.Errorf("%w: the registry answered index %s with %s", verify.ErrNotVerified, index, idx.Digest)
	}
	b, err := artifact.FetchLimited(ctx, repo, idx)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("read the joint model's index %s: %w", index, err)
	}
	a, err := artifact.Parse(idx, b)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w: %v", verify.ErrNotVerified, err)
	}
	parts, err := artifact.JointPartsOf(a)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w: %v", verify.ErrNotVerified, err)
	}
	if parts.Edge.Digest != desc.Digest {
		return ocispec.Descriptor{}, fmt.Errorf("%w: the joint model %s, whose signature was to cover it, has another edge part (%s)", verify.ErrNotVerified, index, parts.Edge.Digest)
	}
	return idx, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// dirPolicy reads a key directory. A mounted ConfigMap keeps its files
// behind ..data symlinks; the names are what counts.
func dirPolicy(dir, provider string) (verify.Policy, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return verify.Policy{}, fmt.Errorf("this node has no key material %s: mount it there (the chart's edgePuller.verify)", dir)
	}
	if err != nil {
		return verify.Policy{}, err
	}
	files := map[string][]byte{}
	var ids []verify.Identity
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			if errors.Is(err, fs.ErrInvalid) || isDir(filepath.Join(dir, name)) {
				continue
			}
			return verify.Policy{}, err
		}
		if name == FileIdentities {
			if err := json.Unmarshal(b, &ids); err != nil {
				return verify.Policy{}, fmt.Errorf("%s: %v (want [{\"issuer\": \"…\", \"subject\": \"…\"}])", filepath.Join(dir, name), err)
			}
			continue
		}
		files[name] = b
	}
	if provider == "" {
		provider = verify.ProviderCosign
	}
	return verify.FromFiles(provider, files, ids), nil
}
