package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bargeml/barge/registry"
)

func newServeCommand(s streams) *cobra.Command {
	var (
		opts    registry.Options
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the embedded OCI registry",
		Long: `Run an OCI registry (CNCF distribution) in this process. It listens on
loopback by default; content is kept under --root, or in memory without it.
Stops cleanly on SIGINT or SIGTERM.`,
		Example: `  barge serve --addr 127.0.0.1:5000 --root /var/lib/barge/registry`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if verbose {
				opts.Log = s.err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			reg, err := registry.Start(ctx, opts)
			if err != nil {
				return err
			}
			where := "memory (lost on exit)"
			if opts.Root != "" {
				where = opts.Root
			}
			fmt.Fprintf(s.err, "Serving an OCI registry on %s, storage in %s\n", reg.URL(), where)
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
	f.StringVar(&opts.Addr, "addr", registry.DefaultAddr, "listen address host:port")
	f.StringVar(&opts.Root, "root", "", "storage directory (default: in memory)")
	f.StringVar(&opts.Htpasswd, "htpasswd", "", "require basic auth from this htpasswd file (bcrypt)")
	f.BoolVarP(&verbose, "verbose", "v", false, "log every request")
	return cmd
}
