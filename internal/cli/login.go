package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

func newLoginCommand(s streams) *cobra.Command {
	var (
		rf            remoteFlags
		username      string
		password      string
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "login REGISTRY",
		Short: "Log in to a registry; credentials go to the Docker config or its credential helper",
		Long: `Log in to a registry. The password is read from standard input with
--password-stdin, or asked for on the terminal; never from the command line,
where the process list and the shell history would keep it.`,
		Example: `  echo "$TOKEN" | barge login registry.example.com -u robot --password-stdin
  barge login registry.example.com -u robot   # asks for the password`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			host := args[0]
			if cmd.Flags().Changed("password") {
				return fmt.Errorf("login %s: --password is refused: it leaves the password in the process list and the shell history; pipe it in with --password-stdin, or leave it out to be asked", host)
			}
			in := bufio.NewReader(s.in)
			tty := isTerminal(s.in)
			if username == "" {
				if !tty {
					return fmt.Errorf("login %s: give --username", host)
				}
				fmt.Fprint(s.err, "Username: ")
				line, err := in.ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("login %s: read the user name: %w", host, err)
				}
				username = strings.TrimSpace(line)
			}
			switch {
			case passwordStdin:
				line, err := in.ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("login %s: read the password from standard input: %w", host, err)
				}
				password = strings.TrimRight(line, "\r\n")
			case tty:
				fmt.Fprint(s.err, "Password: ")
				b, err := term.ReadPassword(int(s.in.(*os.File).Fd()))
				fmt.Fprintln(s.err)
				if err != nil {
					return fmt.Errorf("login %s: read the password: %w", host, err)
				}
				password = string(b)
			default:
				return fmt.Errorf("login %s: standard input is not a terminal: give --password-stdin to read the password from it", host)
			}
			if username == "" || password == "" {
				return fmt.Errorf("login %s: the user name and the password must not be empty", host)
			}
			reg, err := remote.NewRegistry(host)
			if err != nil {
				return fmt.Errorf("login: %q is not a registry host: %w", host, err)
			}
			reg.PlainHTTP = rf.plainHTTPFor(host)
			store, err := credentialStore()
			if err != nil {
				return err
			}
			ref, _ := parseRef(host + "/x")
			if err := credentials.Login(cmd.Context(), store, reg, auth.Credential{Username: username, Password: password}); err != nil {
				return explain(fmt.Errorf("login %s: %w", host, err), ref)
			}
			fmt.Fprintf(s.err, "Login Succeeded\n")
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (a registry on this machine that does not speak TLS always does)")
	f.StringVarP(&username, "username", "u", "", "user name (asked for on a terminal when left out)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	// Kept only to refuse it with advice: scripts that used it get a clear
	// error instead of "unknown flag".
	f.StringVarP(&password, "password", "p", "", "refused: use --password-stdin")
	_ = f.MarkHidden("password")
	return cmd
}

// isTerminal says whether r is a terminal one can prompt on.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newLogoutCommand(s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "logout REGISTRY",
		Short: "Forget the credentials for a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := credentialStore()
			if err != nil {
				return err
			}
			if err := credentials.Logout(cmd.Context(), store, args[0]); err != nil {
				return fmt.Errorf("logout %s: %w", args[0], err)
			}
			fmt.Fprintf(s.err, "Removed the credentials for %s\n", args[0])
			return nil
		},
	}
}
