// Command barge packs, pushes, pulls and inspects ML models and datasets as
// OCI artifacts, and serves an embedded registry.
package main

import (
	"os"

	"github.com/bargeml/barge/internal/cli"
)

func main() { os.Exit(cli.Main()) }
