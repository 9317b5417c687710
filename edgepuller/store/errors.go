package store

import "errors"

// The sentinels mirror oras.land/oras-go/v2/errdef, whose texts they copy.
// oras-go is not yet required by go.mod; once it is, alias these to errdef
// (ErrNotFound = errdef.ErrNotFound, ...) so that oras.Copy, which skips
// blobs whose Push fails with errdef.ErrAlreadyExists, recognises ours.
var (
	// ErrNotFound: the blob or ingest is not in the store.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the blob is already committed; nothing to download.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidDigest: the digest is malformed or not sha256, the only algorithm the layout stores.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrDigestMismatch: the data written does not hash to the descriptor's digest.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrSizeMismatch: the data written is shorter or longer than the descriptor's size.
	ErrSizeMismatch = errors.New("size mismatch")
)
