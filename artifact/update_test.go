package artifact_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"oras.land/oras-go/v2/content/memory"

	"github.com/bargeml/barge/artifact"
)

func TestPackUpdateIsAReferrerOfItsBase(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	base, err := artifact.Pack(ctx, store, writeTree(t, map[string]string{"model.safetensors": "base weights", "train/train.json": "{}"}), artifact.PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := writeTree(t, map[string]string{"model.safetensors": "new weights", "update.json": `{"samples": 120, "metrics": {"accuracy": 0.8}}`})
	u := artifact.Update{Node: "edge-1", Round: 2, Run: "uid-1", Base: base}
	if _, err := artifact.PackUpdate(ctx, store, dir, u); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pack before DONE: %v, want not exist", err)
	}
	if err := os.WriteFile(filepath.Join(dir, artifact.UpdateDoneFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	desc, err := artifact.PackUpdate(ctx, store, dir, u)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := artifact.UpdateReferrers(ctx, store, base)
	if err != nil || len(refs) != 1 || refs[0].Digest != desc.Digest {
		t.Fatalf("referrers %v, %v; want %s", refs, err, desc.Digest)
	}
	a, err := artifact.Inspect(ctx, store, desc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := artifact.UpdateOf(a)
	if err != nil {
		t.Fatal(err)
	}
	if got.Node != "edge-1" || got.Round != 2 || got.Run != "uid-1" || got.Samples != 120 || got.Base.Digest != base.Digest {
		t.Errorf("update %+v", got)
	}
	var titles []string
	for _, f := range a.Files {
		titles = append(titles, f.Path)
	}
	if strings.Join(titles, ",") != "model.safetensors,update.json" {
		t.Errorf("files %v: want the weights and update.json, not DONE", titles)
	}
	if _, err := artifact.UpdateOf(&artifact.Artifact{ArtifactType: artifact.ArtifactTypeMetrics}); err == nil {
		t.Error("a metrics referrer read as an update")
	}
}

func TestParseUpdateInfo(t *testing.T) {
	for in, want := range map[string]string{
		`{"samples": 10, "metrics": {"loss": 0.2}}`: "",
		`{"samples": 0}`:                     "samples is 0",
		`{"metrics": {"loss": 1}}`:           "samples is 0",
		`[1]`:                                "not valid",
		`{"samples": 3, "metrics": {"": 1}}`: "empty name",
	} {
		_, err := artifact.ParseUpdateInfo([]byte(in))
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
}

func FuzzParseUpdateInfo(f *testing.F) {
	f.Add([]byte(`{"samples": 10, "metrics": {"accuracy": 0.9}}`))
	f.Add([]byte(`{"samples": -1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := artifact.ParseUpdateInfo(b)
		if err == nil && u.Samples < 1 {
			t.Fatalf("accepted %d samples", u.Samples)
		}
	})
}
