package cli

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
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
		Use:     "login REGISTRY",
		Short:   "Log in to a registry; credentials go to the Docker config or its credential helper",
		Example: `  echo "$TOKEN" | barge login registry.example.com -u robot --password-stdin`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			host := args[0]
			if passwordStdin {
				line, err := bufio.NewReader(s.in).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("read password from standard input: %w", err)
				}
				password = strings.TrimRight(line, "\r\n")
			}
			if username == "" || password == "" {
				return fmt.Errorf("login %s: give --username and --password (or --password-stdin)", host)
			}
			reg, err := remote.NewRegistry(host)
			if err != nil {
				return fmt.Errorf("login: %q is not a registry host: %w", host, err)
			}
			reg.PlainHTTP = rf.plainHTTP || isLoopback(host)
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
	f.BoolVar(&rf.plainHTTP, "plain-http", false, "use plain HTTP (loopback registries always do)")
	f.StringVarP(&username, "username", "u", "", "user name")
	f.StringVarP(&password, "password", "p", "", "password or token (prefer --password-stdin)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	return cmd
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
