package artifact_test

import (
	"context"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bargeml/barge/artifact"
)

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		kind     artifact.Kind
		files    []string
		warnings int
		unpack   []bool
	}{
		{
			name: "plain oras push: empty config, titles only",
			manifest: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.unknown.artifact.v1",
			"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + d1 + `","size":2},
			"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + d2 + `","size":5,"annotations":{"org.opencontainers.image.title":"a/b.txt"}}]}`,
			kind: artifact.KindGeneric, files: []string{"a/b.txt"}, unpack: []bool{false},
		},
		{
			name: "oras push of a directory: unpack annotation",
			manifest: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
			"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + d1 + `","size":2},
			"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + d2 + `","size":5,"annotations":{"org.opencontainers.image.title":"scripts","io.deis.oras.content.unpack":"true"}}]}`,
			kind: artifact.KindGeneric, files: []string{"scripts"}, unpack: []bool{true},
		},
		{
			name: "unknown layer media type is a warning, not an error",
			manifest: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.acme.thing",
			"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + d1 + `","size":2},
			"layers":[{"mediaType":"application/vnd.acme.weights","digest":"` + d2 + `","size":5,"annotations":{"org.opencontainers.image.title":"w.bin"}}]}`,
			kind: artifact.KindGeneric, files: []string{"w.bin"}, warnings: 1, unpack: []bool{false},
		},
		{
			name: "OCI image",
			manifest: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
			"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + d1 + `","size":2},
			"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + d2 + `","size":5}]}`,
			kind: artifact.KindImage,
		},
		{
			name: "Docker image",
			manifest: `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
			"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"` + d1 + `","size":2},
			"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"` + d2 + `","size":5}]}`,
			kind: artifact.KindImage,
		},
		{
			name: "multi-platform image index",
			manifest: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
			"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + d1 + `","size":2,"platform":{"architecture":"arm64","os":"linux"}}]}`,
			kind: artifact.KindImage,
		},
		{
			name: "ModelPack model from another tool, config media type only",
			manifest: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
			"config":{"mediaType":"application/vnd.cncf.model.config.v1+json","digest":"` + d1 + `","size":2},
			"layers":[{"mediaType":"application/vnd.cncf.model.weight.v1.tar","digest":"` + d2 + `","size":5,"annotations":{"org.cncf.model.filepath":"weights"}}]}`,
			kind: artifact.KindModel, files: []string{"weights"}, unpack: []bool{true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.manifest)
			a, err := artifact.Parse(ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}, b)
			if err != nil {
				t.Fatal(err)
			}
			if a.Kind != tt.kind {
				t.Errorf("kind %s, want %s", a.Kind, tt.kind)
			}
			var paths []string
			for i, f := range a.Files {
				paths = append(paths, f.Path)
				if f.Unpack != tt.unpack[i] {
					t.Errorf("%s: unpack %v", f.Path, f.Unpack)
				}
			}
			if strings.Join(paths, ",") != strings.Join(tt.files, ",") {
				t.Errorf("files %v, want %v", paths, tt.files)
			}
			if len(a.Warnings) != tt.warnings {
				t.Errorf("warnings %v", a.Warnings)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	layer := func(title string) string {
		return `{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + d1 + `","size":2},
		"layers":[{"mediaType":"application/octet-stream","digest":"` + d2 + `","size":5,"annotations":{"org.opencontainers.image.title":"` + title + `"}}]}`
	}
	tests := []struct{ name, manifest, want string }{
		{"not JSON", `{"schemaVersion":`, "not valid JSON"},
		{"schema 1", `{"schemaVersion":1}`, "schemaVersion 1"},
		{"no config", `{"schemaVersion":2,"layers":[]}`, "no config"},
		{"bad digest", `{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":2}}`, "invalid digest"},
		{"negative size", `{"schemaVersion":2,"config":{"mediaType":"x","digest":"` + d1 + `","size":-1}}`, "negative size"},
		{"title escapes", layer("../../etc/passwd"), "not a relative path"},
		{"absolute title", layer("/etc/passwd"), "not a relative path"},
		{"dot title", layer("."), "not a relative path"},
		{"two layers one title", `{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + d1 + `","size":2},
		"layers":[{"mediaType":"x","digest":"` + d2 + `","size":5,"annotations":{"org.opencontainers.image.title":"a"}},
		{"mediaType":"x","digest":"` + d1 + `","size":5,"annotations":{"org.opencontainers.image.title":"./a"}}]}`, "two layers are titled"},
		{"unknown document", `{"schemaVersion":2,"mediaType":"text/plain"}`, "neither an OCI manifest nor an index"},
		{"too large", `{"schemaVersion":2,"annotations":{"x":"` + strings.Repeat("x", artifact.MaxManifestBytes) + `"}}`, "more than the 4 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.manifest)
			_, err := artifact.Parse(ocispec.Descriptor{Digest: digest.FromBytes(b)}, b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestInspectRefusesLargeManifestBeforeFetching(t *testing.T) {
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d1, Size: artifact.MaxManifestBytes + 1}
	fetched := false
	_, err := artifact.Inspect(context.Background(), fetcherFunc(func() { fetched = true }), desc)
	if err == nil || !strings.Contains(err.Error(), "more than the 4 MiB limit") {
		t.Fatalf("error %v", err)
	}
	if fetched {
		t.Error("an oversized manifest was fetched")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.model.config.v1+json","digest":"` + d1 + `","size":2},"layers":[{"mediaType":"application/vnd.cncf.model.weight.v1.raw","digest":"` + d2 + `","size":5,"annotations":{"org.opencontainers.image.title":"a/b"}}],"annotations":{"dev.barge.labels":"[\"a\"]"}}`))
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","artifactType":"application/vnd.barge.joint.v1+json","manifests":[{"mediaType":"x","digest":"` + d1 + `","size":1}]}`))
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"annotations":{"org.opencontainers.image.title":"../x"}}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := artifact.Parse(ocispec.Descriptor{Digest: digest.FromBytes(b)}, b)
		if err != nil {
			return
		}
		for _, file := range a.Files {
			if strings.HasPrefix(file.Path, "/") || file.Path == ".." || strings.HasPrefix(file.Path, "../") {
				t.Fatalf("unsafe path %q accepted", file.Path)
			}
		}
	})
}

// Described is one map for status, spec.selection and barge versions: the
// metadata with the name and version beside it.
func TestDescribed(t *testing.T) {
	a := &artifact.Artifact{Name: "yolo", Version: "3.1.0", Metadata: map[string]string{"task": "object-detection"}}
	got := a.Described()
	if len(got) != 3 || got["name"] != "yolo" || got["version"] != "3.1.0" || got["task"] != "object-detection" {
		t.Errorf("Described() = %v", got)
	}
	if got := (&artifact.Artifact{}).Described(); got != nil {
		t.Errorf("Described() of a bare artifact = %v, want nil", got)
	}
}
