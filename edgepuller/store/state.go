package store

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"math"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/errdef"
)

// ingestState is a checkpoint persisted in ingest/<hex>/state (durable) or
// ingest/<hex>/progress (this boot only, see checkpoint.go): the sha256
// state after hashing the first Offset bytes of the data file, so that a
// resume continues hashing where it stopped instead of re-reading the prefix.
type ingestState struct {
	Digest digest.Digest
	Total  int64
	Offset int64
	Hash   []byte // sha256 MarshalBinary output covering data[:Offset]
	// BootID is the kernel's boot id when the checkpoint was taken, "" in
	// a version 1 file. A progress checkpoint is trusted only while it is
	// the current boot's: its data was never fsynced, and only the page
	// cache, which a process crash keeps and a power cut does not, holds it.
	BootID string
}

// stateMagic versions the file; a reader that does not know the version
// treats the file as unreadable and restarts the ingest. Version 2 adds
// the boot id; version 1 files, written by earlier releases as their
// durable checkpoint, are still read (with no boot id).
var (
	stateMagic   = [8]byte{'B', 'R', 'G', 'I', 'N', 'G', 0, 2}
	stateMagicV1 = [8]byte{'B', 'R', 'G', 'I', 'N', 'G', 0, 1}
)

// maxStateField bounds the variable-length fields so that a corrupt length
// cannot make the decoder allocate much. A sha256 state is ~108 bytes and a
// sha256 digest string 71.
const maxStateField = 1024

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Layout (version 2): magic[8] offset[8] total[8] dlen[2] digest hlen[2]
// hash blen[2] bootid crc32c[4], integers big-endian, the CRC over
// everything before it. Version 1 has no blen and bootid. The CRC is what
// lets a resume tell a damaged checkpoint from a good one.
func (st ingestState) MarshalBinary() ([]byte, error) {
	return st.marshal(stateMagic)
}

func (st ingestState) marshal(magic [8]byte) ([]byte, error) {
	if len(st.Digest) > maxStateField || len(st.Hash) > maxStateField || len(st.BootID) > maxStateField {
		return nil, fmt.Errorf("ingest state for %s: field too long", st.Digest)
	}
	if magic == stateMagicV1 && st.BootID != "" {
		return nil, fmt.Errorf("ingest state for %s: version 1 has no boot id", st.Digest)
	}
	b := make([]byte, 0, 8+8+8+2+len(st.Digest)+2+len(st.Hash)+2+len(st.BootID)+4)
	b = append(b, magic[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(st.Offset))
	b = binary.BigEndian.AppendUint64(b, uint64(st.Total))
	b = binary.BigEndian.AppendUint16(b, uint16(len(st.Digest)))
	b = append(b, st.Digest...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(st.Hash)))
	b = append(b, st.Hash...)
	if magic != stateMagicV1 {
		b = binary.BigEndian.AppendUint16(b, uint16(len(st.BootID)))
		b = append(b, st.BootID...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

var errBadState = errors.New("ingest state unreadable")

// decodeIngestState parses a state file. Its input comes from disk, where a
// crash, a full disk or a stray editor may have left anything; every path
// returns an error rather than panicking, and the caller restarts the ingest.
func decodeIngestState(b []byte) (ingestState, error) {
	var st ingestState
	const fixed = 8 + 8 + 8 + 2 + 2 + 4
	if len(b) < fixed {
		return st, fmt.Errorf("%w: %d bytes is too short", errBadState, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return st, fmt.Errorf("%w: checksum mismatch", errBadState)
	}
	magic := [8]byte(body[:8])
	if magic != stateMagic && magic != stateMagicV1 {
		return st, fmt.Errorf("%w: unknown format %q", errBadState, body[:8])
	}
	offset, total := binary.BigEndian.Uint64(body[8:]), binary.BigEndian.Uint64(body[16:])
	if total > math.MaxInt64 || offset > total {
		return st, fmt.Errorf("%w: offset %d beyond total %d", errBadState, offset, total)
	}
	rest := body[24:]
	field := func() ([]byte, bool) {
		if len(rest) < 2 {
			return nil, false
		}
		n := int(binary.BigEndian.Uint16(rest))
		if n > maxStateField || len(rest) < 2+n {
			return nil, false
		}
		f := rest[2 : 2+n]
		rest = rest[2+n:]
		return f, true
	}
	d, ok1 := field()
	h, ok2 := field()
	var boot []byte
	ok3 := true
	if magic == stateMagic {
		boot, ok3 = field()
	}
	if !ok1 || !ok2 || !ok3 || len(rest) != 0 {
		return st, fmt.Errorf("%w: bad field lengths", errBadState)
	}
	st = ingestState{Digest: digest.Digest(d), Total: int64(total), Offset: int64(offset), Hash: append([]byte(nil), h...), BootID: string(boot)}
	if err := validateDigest(st.Digest); err != nil {
		return ingestState{}, fmt.Errorf("%w: %w", errBadState, err)
	}
	if _, err := st.hasher(); err != nil {
		return ingestState{}, err
	}
	return st, nil
}

// hasher rebuilds the sha256 hash the checkpoint was taken from.
func (st ingestState) hasher() (hash.Hash, error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.Hash); err != nil {
		return nil, fmt.Errorf("%w: sha256 state: %w", errBadState, err)
	}
	return h, nil
}

// validateDigest accepts only well-formed sha256 digests. Besides matching
// the blobs/sha256 layout, it keeps a hostile digest such as
// "sha256:../../etc" from becoming a path.
func validateDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%q: %w: %w", d, errdef.ErrInvalidDigest, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%s: %w: only sha256 is supported", d, errdef.ErrInvalidDigest)
	}
	return nil
}
