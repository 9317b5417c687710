package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/verify"
)

// verifyFlags are cosign's and notation's verification flags, shared by
// `barge verify` and `barge pull --verify`.
type verifyFlags struct {
	keys                     []string
	identity, identityRegexp string
	issuer, issuerRegexp     string
	trustedRoot              string
	trustPolicy, trustStore  string
}

func (v *verifyFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&v.keys, "key", nil, "cosign: PEM public key file (cosign.pub); repeatable, any one verifying is enough")
	f.StringVar(&v.identity, "certificate-identity", "", "cosign keyless: the signer's identity (certificate subject alternative name), exactly")
	f.StringVar(&v.identityRegexp, "certificate-identity-regexp", "", "cosign keyless: a regular expression the whole identity must match")
	f.StringVar(&v.issuer, "certificate-oidc-issuer", "", "cosign keyless: the OIDC issuer of the signer's certificate, exactly")
	f.StringVar(&v.issuerRegexp, "certificate-oidc-issuer-regexp", "", "cosign keyless: a regular expression the whole issuer must match")
	f.StringVar(&v.trustedRoot, "trusted-root", "", "cosign keyless: Sigstore trusted_root.json to verify against, offline")
	f.StringVar(&v.trustPolicy, "trust-policy", "", "notation: trustpolicy.json")
	f.StringVar(&v.trustStore, "trust-store", "", "notation: trust store directory, laid out as notation's: x509/TYPE/NAME/*.crt")
}

func (v *verifyFlags) set() bool {
	return len(v.keys) > 0 || v.identity != "" || v.identityRegexp != "" || v.issuer != "" || v.issuerRegexp != "" ||
		v.trustedRoot != "" || v.trustPolicy != "" || v.trustStore != ""
}

// policy reads the files the flags name into a verify policy.
func (v *verifyFlags) policy() (verify.Policy, error) {
	var p verify.Policy
	if v.trustPolicy != "" || v.trustStore != "" {
		if len(v.keys) > 0 || v.trustedRoot != "" || v.identity != "" || v.identityRegexp != "" || v.issuer != "" || v.issuerRegexp != "" {
			return p, errors.New("give either cosign flags (--key, or --trusted-root with --certificate-identity and --certificate-oidc-issuer) or notation flags (--trust-policy, --trust-store), not both")
		}
		if v.trustPolicy == "" || v.trustStore == "" {
			return p, errors.New("notation verification needs both --trust-policy and --trust-store")
		}
		p.Provider = verify.ProviderNotation
		b, err := os.ReadFile(v.trustPolicy)
		if err != nil {
			return p, fmt.Errorf("--trust-policy: %w", err)
		}
		p.TrustPolicy = b
		if p.TrustStore, err = readTrustStore(v.trustStore); err != nil {
			return p, fmt.Errorf("--trust-store: %w", err)
		}
		return p, nil
	}
	p.Provider = verify.ProviderCosign
	if len(v.keys) > 0 {
		p.PublicKeys = map[string][]byte{}
		for _, k := range v.keys {
			b, err := os.ReadFile(k)
			if err != nil {
				return p, fmt.Errorf("--key: %w", err)
			}
			p.PublicKeys[k] = b
		}
	}
	if v.trustedRoot != "" {
		b, err := os.ReadFile(v.trustedRoot)
		if err != nil {
			return p, fmt.Errorf("--trusted-root: %w", err)
		}
		p.TrustedRoot = b
	}
	if v.identity != "" || v.identityRegexp != "" || v.issuer != "" || v.issuerRegexp != "" {
		sub, err := exactOrRegexp("--certificate-identity", v.identity, v.identityRegexp)
		if err != nil {
			return p, err
		}
		iss, err := exactOrRegexp("--certificate-oidc-issuer", v.issuer, v.issuerRegexp)
		if err != nil {
			return p, err
		}
		if v.trustedRoot == "" {
			return p, errors.New("keyless verification needs --trusted-root (trusted_root.json: `cosign trusted-root create`, or the one Sigstore publishes); barge does not fetch it")
		}
		p.Identities = []verify.Identity{{Issuer: iss, Subject: sub}}
	}
	return p, nil
}

func exactOrRegexp(flag, exact, re string) (string, error) {
	switch {
	case exact != "" && re != "":
		return "", fmt.Errorf("give %s or %s-regexp, not both", flag, flag)
	case exact != "":
		return regexp.QuoteMeta(exact), nil
	case re != "":
		return re, nil
	}
	return "", fmt.Errorf("keyless verification needs %s (or %s-regexp)", flag, flag)
}

// readTrustStore reads notation's trust store layout, x509/TYPE/NAME/FILE,
// from dir or from dir/truststore (notation's configuration directory).
func readTrustStore(dir string) (map[string][]byte, error) {
	if _, err := os.Stat(filepath.Join(dir, "truststore", "x509")); err == nil {
		dir = filepath.Join(dir, "truststore")
	}
	root := filepath.Join(dir, "x509")
	types, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("%w (want notation's layout: %s/TYPE/NAME/cert.crt)", err, root)
	}
	store := map[string][]byte{}
	for _, t := range types {
		names, err := os.ReadDir(filepath.Join(root, t.Name()))
		if err != nil {
			continue
		}
		for _, n := range names {
			files, err := os.ReadDir(filepath.Join(root, t.Name(), n.Name()))
			if err != nil {
				continue
			}
			var all bytes.Buffer
			for _, f := range files {
				if f.IsDir() {
					continue
				}
				b, err := os.ReadFile(filepath.Join(root, t.Name(), n.Name(), f.Name()))
				if err != nil {
					return nil, err
				}
				all.Write(b)
				all.WriteByte('\n')
			}
			if all.Len() > 0 {
				store[t.Name()+"/"+n.Name()] = all.Bytes()
			}
		}
	}
	if len(store) == 0 {
		return nil, fmt.Errorf("no certificates under %s (want TYPE/NAME/cert.crt, e.g. ca/acme/acme.crt)", root)
	}
	return store, nil
}

// check verifies desc in repo under the flags' policy.
func (v *verifyFlags) check(ctx context.Context, repo *remote.Repository, ref registry.Reference, desc ocispec.Descriptor) error {
	p, err := v.policy()
	if err != nil {
		return err
	}
	ver, err := verify.New(p)
	if err != nil {
		return err
	}
	if err := ver.Verify(ctx, repo, ref.Registry+"/"+ref.Repository, desc); err != nil {
		if errors.Is(err, verify.ErrNotVerified) {
			return err
		}
		return explain(err, ref)
	}
	return nil
}

func newVerifyCommand(s streams) *cobra.Command {
	var (
		rf  remoteFlags
		vf  verifyFlags
		out output
	)
	cmd := &cobra.Command{
		Use:   "verify REF",
		Short: "Check that an artifact carries a signature you trust (cosign or Notation)",
		Long: `Resolve REF to its digest and check its signatures, stored in the registry
as referrers of that digest: a cosign signature made with a key (--key), a
keyless cosign signature by a given identity (--trusted-root with
--certificate-identity and --certificate-oidc-issuer; verified offline), or a
Notation signature (--trust-policy, --trust-store). The flags are cosign's and
notation's. Exit status 0 only if one signature verifies.`,
		Example: `  barge verify --key cosign.pub 127.0.0.1:5000/models/resnet:1.0.0
  barge verify --trusted-root trusted_root.json \
    --certificate-identity-regexp 'https://github\.com/acme/.*' \
    --certificate-oidc-issuer https://token.actions.githubusercontent.com registry.example.com/models/resnet:1.0.0
  barge verify --trust-policy trustpolicy.json --trust-store ~/.config/notation registry.example.com/models/resnet:1.0.0`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !vf.set() {
				return errors.New("say which signatures to trust: --key cosign.pub, or --trusted-root with --certificate-identity and --certificate-oidc-issuer, or --trust-policy with --trust-store")
			}
			ref, repo, err := rf.open(args[0])
			if err != nil {
				return err
			}
			desc, err := resolve(cmd.Context(), repo, ref)
			if err != nil {
				return err
			}
			if err := vf.check(cmd.Context(), repo, ref, desc); err != nil {
				return err
			}
			if out == "json" {
				return writeJSON(s.out, map[string]any{"reference": ref.String(), "digest": desc.Digest, "verified": true})
			}
			fmt.Fprintf(s.err, "Verified %s\n", ref)
			fmt.Fprintln(s.out, desc.Digest)
			return nil
		},
	}
	cmd.Flags().BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (loopback registries always do)")
	vf.add(cmd)
	addOutputFlag(cmd, &out)
	return cmd
}

// pullVerify is `barge pull --verify`: off unless asked for, and then the
// verify flags must say what to trust.
func pullVerify(on bool, vf *verifyFlags) error {
	switch {
	case on && !vf.set():
		return errors.New("--verify needs to know what to trust: --key cosign.pub, or --trusted-root with --certificate-identity and --certificate-oidc-issuer, or --trust-policy with --trust-store")
	case !on && vf.set():
		return fmt.Errorf("verification flags were given without --verify: add --verify to check signatures before the files are put in place")
	}
	if on {
		_, err := vf.policy()
		return err
	}
	return nil
}
