package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bargeml/barge/registry"
)

func newServeCommand(s streams) *cobra.Command {
	var (
		opts        registry.Options
		verbose     bool
		secretFile  string
		storageOpts []string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the embedded OCI registry",
		Long: `Run an OCI registry (CNCF distribution) in this process. It listens on
loopback by default; content is kept under --root, or in memory without it.
Stops cleanly on SIGINT or SIGTERM.

With --storage-driver s3 content lives in an S3-compatible bucket instead,
which several replicas behind one address can share: give them the same
--upload-secret-file, so that an upload started on one is finished on
another. The s3 driver's options are distribution's (bucket, region,
regionendpoint, forcepathstyle, rootdirectory, chunksize, ...); credentials
come from the AWS environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
a web identity token, an instance role), so they stay off the command line.

Beyond loopback it needs TLS (--tls-cert, --tls-key) and auth (--htpasswd,
--htpasswd-readonly), or --insecure-listen. Users in --htpasswd may pull and
push; users in --htpasswd-readonly may only pull. Both files hold bcrypt
entries (htpasswd -B), as distribution and Zot read them, and are read again
when they change. Deleting manifests and blobs is off unless --enable-delete.`,
		Example: `  barge serve --addr 127.0.0.1:5000 --root /var/lib/barge/registry

  printf '%s\n' "$PUSH_PASSWORD" | htpasswd -Bin ci > rw.htpasswd
  printf '%s\n' "$PULL_PASSWORD" | htpasswd -Bin edge > ro.htpasswd
  barge serve --addr 0.0.0.0:5000 --root /var/lib/barge/registry \
    --tls-cert tls.crt --tls-key tls.key \
    --htpasswd rw.htpasswd --htpasswd-readonly ro.htpasswd

  # one of several replicas on MinIO, Ceph RGW, versitygw or Amazon S3
  export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
  barge serve --storage-driver s3 --storage-opt bucket=models \
    --storage-opt region=us-east-1 --storage-opt regionendpoint=https://s3.example.com \
    --storage-opt forcepathstyle=true --upload-secret-file /etc/barge/upload-secret ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if verbose {
				opts.Log = s.err
			}
			if secretFile != "" {
				b, err := os.ReadFile(secretFile)
				if err != nil {
					return fmt.Errorf("serve: read the upload secret: %w", err)
				}
				if opts.Secret = strings.TrimSpace(string(b)); len(opts.Secret) < 16 {
					return fmt.Errorf("serve: the upload secret in %s is shorter than 16 characters: write a long random one, e.g. `head -c 32 /dev/urandom | base64 > %s`", secretFile, secretFile)
				}
			}
			params, err := storageParameters(storageOpts)
			if err != nil {
				return err
			}
			opts.Storage.Parameters = params
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			reg, err := registry.Start(ctx, opts)
			if errors.Is(err, registry.ErrInsecureListen) {
				return fmt.Errorf("%w\nadd --tls-cert and --tls-key, and --htpasswd (or --htpasswd-readonly); or --insecure-listen to serve anyway on a network you trust", err)
			}
			if err != nil {
				return err
			}
			where := storageWhere(opts)
			var notes []string
			if opts.Htpasswd == "" && opts.HtpasswdReadOnly == "" {
				notes = append(notes, "no auth")
			}
			if opts.EnableDelete {
				notes = append(notes, "deletes allowed")
			}
			if opts.Storage.Driver == "s3" && secretFile == "" {
				notes = append(notes, "upload secret random: replicas need one --upload-secret-file")
			}
			note := ""
			if len(notes) > 0 {
				note = " (" + strings.Join(notes, ", ") + ")"
			}
			fmt.Fprintf(s.err, "Serving an OCI registry on %s, storage in %s%s\n", reg.URL(), where, note)
			select {
			case <-ctx.Done():
			case <-reg.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := reg.Close(sctx); err != nil {
				return fmt.Errorf("stop registry: %w", err)
			}
			fmt.Fprintln(s.err, "Registry stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Addr, "addr", registry.DefaultAddr, "listen address host:port; beyond loopback it needs TLS and auth, or --insecure-listen")
	f.StringVar(&opts.Root, "root", "", "storage directory (default: in memory)")
	f.StringVar(&opts.Storage.Driver, "storage-driver", "", "distribution storage driver instead of --root: "+strings.Join(registry.StorageDrivers, ", "))
	f.StringArrayVar(&storageOpts, "storage-opt", nil, "option of the storage driver as key=value, such as bucket=models (repeat the flag)")
	f.BoolVar(&opts.Storage.Redirect, "storage-redirect", false, "answer blob downloads with a redirect to the object store (clients must reach and trust it)")
	f.StringVar(&opts.Htpasswd, "htpasswd", "", "htpasswd file (bcrypt) of users who may pull and push")
	f.StringVar(&opts.HtpasswdReadOnly, "htpasswd-readonly", "", "htpasswd file (bcrypt) of users who may only pull")
	f.StringVar(&opts.TLSCert, "tls-cert", "", "serve HTTPS with this PEM certificate (chain first); read again when it changes")
	f.StringVar(&opts.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	f.BoolVar(&opts.EnableDelete, "enable-delete", false, "let clients delete manifests and blobs")
	f.BoolVar(&opts.InsecureListen, "insecure-listen", false, "listen beyond loopback without TLS or auth")
	f.StringVar(&secretFile, "upload-secret-file", "", "file holding the secret that signs upload state (default: random per start; replicas behind one address need the same)")
	f.BoolVarP(&verbose, "verbose", "v", false, "log every request")
	return cmd
}

// storageParameters turns --storage-opt key=value flags into the driver's
// parameters. Keys are lowercased, as distribution's configuration file
// spells them.
func storageParameters(opts []string) (map[string]any, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	params := make(map[string]any, len(opts))
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			return nil, fmt.Errorf("serve: --storage-opt %q is not key=value, such as --storage-opt bucket=models", o)
		}
		if k == "accesskey" || k == "secretkey" {
			return nil, fmt.Errorf("serve: --storage-opt %s would show the credential to anyone who lists processes: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment instead", k)
		}
		params[k] = v
	}
	return params, nil
}

// storageWhere says where content is kept, for the start message.
func storageWhere(opts registry.Options) string {
	p := opts.Storage.Parameters
	switch {
	case opts.Storage.Driver == "s3":
		where := fmt.Sprintf("s3 bucket %v", p["bucket"])
		if e, ok := p["regionendpoint"]; ok {
			where += fmt.Sprintf(" at %v", e)
		}
		return where
	case opts.Storage.Driver != "":
		return opts.Storage.Driver + " storage"
	case opts.Root != "":
		return opts.Root
	}
	return "memory (lost on exit)"
}
