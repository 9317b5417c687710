package store

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/opencontainers/go-digest"
)

func sha256State(t testing.TB, data []byte) []byte {
	t.Helper()
	h := sha256.New()
	h.Write(data)
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIngestStateRoundTrip(t *testing.T) {
	data := []byte("hello, edge")
	want := ingestState{Digest: digest.FromBytes(data), Total: 11, Offset: 5, Hash: sha256State(t, data[:5])}
	b, err := want.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeIngestState(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != want.Digest || got.Total != want.Total || got.Offset != want.Offset || !bytes.Equal(got.Hash, want.Hash) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	// The restored hash must continue where it stopped: that is the point.
	h, err := got.hasher()
	if err != nil {
		t.Fatal(err)
	}
	h.Write(data[5:])
	if d := digest.NewDigest(digest.SHA256, h); d != want.Digest {
		t.Fatalf("restored hash finished as %s, want %s", d, want.Digest)
	}
}

// FuzzIngestState feeds the state decoder whatever a damaged disk could
// hold, or a person crafting a file: both versions, with and without a
// boot id. The decoder must not panic, and anything it accepts must be
// self-consistent, since a resume trusts it without re-reading the data.
func FuzzIngestState(f *testing.F) {
	data := []byte("hello, edge")
	st := ingestState{Digest: digest.FromBytes(data), Total: 11, Offset: 5, Hash: sha256State(f, data[:5])}
	v1, _ := st.marshal(stateMagicV1)
	st.BootID = "76c339b1-8f93-446c-9e45-7d52fa1a4684"
	good, _ := st.MarshalBinary()
	for _, b := range [][]byte{good, v1} {
		f.Add(b, false)
		f.Add(b[:len(b)-4], true)
		f.Add(b[:len(b)-1], false)
	}
	f.Add(good[:len(good)-4-2-len(st.BootID)], true)    // v2 without the boot id field
	f.Add(append(v1[:len(v1)-4:len(v1)-4], 0, 0), true) // v1 with a boot id field
	f.Add([]byte{}, false)
	f.Add(stateMagic[:], true)
	f.Add(stateMagicV1[:], true)
	f.Add(bytes.Repeat([]byte{0xff}, 200), true)
	f.Fuzz(func(t *testing.T, b []byte, sealed bool) {
		if sealed {
			// Append a valid checksum so the fuzzer reaches the parser
			// behind it instead of stopping at the CRC every time.
			b = binary.BigEndian.AppendUint32(bytes.Clone(b), crc32.Checksum(b, castagnoli))
		}
		st, err := decodeIngestState(b)
		if err != nil {
			return
		}
		if st.Offset < 0 || st.Offset > st.Total {
			t.Fatalf("accepted offset %d outside [0, %d]", st.Offset, st.Total)
		}
		if validateDigest(st.Digest) != nil {
			t.Fatalf("accepted invalid digest %q", st.Digest)
		}
		if _, err := st.hasher(); err != nil {
			t.Fatalf("accepted a hash state that does not restore: %v", err)
		}
		if len(st.BootID) > maxStateField {
			t.Fatalf("accepted a %d-byte boot id", len(st.BootID))
		}
		// It round-trips in its own version; a version 1 file (no boot
		// id) is rewritten as version 2 and reads back the same.
		magic := [8]byte(b[:8])
		if magic == stateMagicV1 && st.BootID != "" {
			t.Fatalf("version 1 input gave boot id %q", st.BootID)
		}
		again, err := st.marshal(magic)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted input does not round-trip: %v", err)
		}
		v2, err := st.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeIngestState(v2)
		if err != nil || back.Digest != st.Digest || back.Total != st.Total || back.Offset != st.Offset ||
			!bytes.Equal(back.Hash, st.Hash) || back.BootID != st.BootID {
			t.Fatalf("re-encoded as version 2, %+v reads back as %+v, %v", st, back, err)
		}
	})
}
