// Package unpack materializes an artifact's layers from the edge puller's
// blob store into a directory that workloads read: raw files are hard-linked
// from the store, tar layers are extracted with every path, link and size
// checked, and a finished tree is switched into place atomically.
// It must import neither Kubernetes nor any network package, nor the store.
package unpack
