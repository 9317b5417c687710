// Package dataset computes the statistics of a dataset directory that go into a
// dataset artifact's config: format, samples, classes, splits, files, CSV schema
// and the problems found in malformed files. It reads files as streams, so memory
// does not grow with the dataset. It must not import Kubernetes, network or OCI code.
package dataset
