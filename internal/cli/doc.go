// Package cli is the `barge` command line: cobra commands over the
// artifact, registry and edge puller packages. It holds what is about
// talking to a person (flags, progress, messages), not the work itself.
package cli
