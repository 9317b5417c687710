package store

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"
)

// TestIngestPathFollowsWriter: a reader of IngestPath sees the bytes a
// Writer appends as it appends them, and its handle reads the whole
// committed blob after Commit, as the peer server relies on.
func TestIngestPathFollowsWriter(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{CheckpointBytes: 1024, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	data, desc := testBlob(5000, 11)
	if got := s.IngestPath("sha256:nothex"); got != "" {
		t.Errorf("IngestPath of an invalid digest = %q, want empty", got)
	}
	w, err := s.Writer(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(s.IngestPath(desc.Digest))
	if err != nil {
		t.Fatalf("the ingest's data file is not at IngestPath once a Writer opened it: %v", err)
	}
	defer f.Close()
	if _, err := w.Write(data[:3000]); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3000)
	if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, data[:3000]) {
		t.Fatalf("reader of the ingest did not see the first 3000 bytes written: %v", err)
	}
	if _, err := w.Write(data[3000:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.IngestPath(desc.Digest)); !os.IsNotExist(err) {
		t.Errorf("ingest data still at IngestPath after Commit: %v", err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(rest, data[3000:]) {
		t.Fatalf("the handle opened before Commit does not read the rest of the committed blob: %d bytes, %v", len(rest), err)
	}
	fi, _ := f.Stat()
	bi, err := os.Stat(s.BlobPath(desc.Digest))
	if err != nil || !os.SameFile(fi, bi) {
		t.Errorf("the handle opened on the ingest is not the committed blob: %v", err)
	}
}
