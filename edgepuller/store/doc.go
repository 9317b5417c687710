// Package store is the edge puller's content-addressed blob store on local disk:
// verified blobs under blobs/sha256/<hex>, resumable partial downloads under ingest/<hex>/.
// It implements oras-go's content.Storage so oras.Copy can pull straight into it.
// It must not import Kubernetes or network code: fetching is the puller's job, not the store's.
package store
