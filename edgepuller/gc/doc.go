// Package gc frees the edge puller's disk: it removes artifact versions that
// are neither current nor among the few kept for rollback, deletes blobs that
// no kept version references, discards abandoned partial downloads and, under
// a disk quota, evicts the least recently used versions that are not current.
// It must import neither Kubernetes nor any network package: it only reads
// and deletes local files through the store and the unpacker.
package gc
