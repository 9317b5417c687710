//go:build tools

// Package versitygw pins versitygw, an S3-compatible server over a directory
// (its posix backend): the registry's S3 test runs it as the object store
// behind two `barge serve` replicas. Nothing here is imported by Barge.
package versitygw

import (
	_ "github.com/versity/versitygw/cmd/versitygw"
)
