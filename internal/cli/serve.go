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
		opts       registry.Options
		verbose    bool
		secretFile string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the embedded OCI registry",
		Long: `Run an OCI registry (CNCF distribution) in this process. It listens on
loopback by default; content is kept under --root, or in memory without it.
Stops cleanly on SIGINT or SIGTERM.

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
    --htpasswd rw.htpasswd --htpasswd-readonly ro.htpasswd`,
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
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			reg, err := registry.Start(ctx, opts)
			if errors.Is(err, registry.ErrInsecureListen) {
				return fmt.Errorf("%w\nadd --tls-cert and --tls-key, and --htpasswd (or --htpasswd-readonly); or --insecure-listen to serve anyway on a network you trust", err)
			}
			if err != nil {
				return err
			}
			where := "memory (lost on exit)"
			if opts.Root != "" {
				where = opts.Root
			}
			var notes []string
			if opts.Htpasswd == "" && opts.HtpasswdReadOnly == "" {
				notes = append(notes, "no auth")
			}
			if opts.EnableDelete {
				notes = append(notes, "deletes allowed")
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
