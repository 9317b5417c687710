package artifact

import (
	"encoding/json"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestManifestMediaType(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, ocispec.MediaTypeImageIndex},
		{`{"schemaVersion":2,"manifests":[]}`, ocispec.MediaTypeImageIndex},
		{`{"schemaVersion":2,"manifests":null}`, ocispec.MediaTypeImageManifest},
		{`{"schemaVersion":2,"artifactType":"application/vnd.barge.model.v1","layers":[]}`, ocispec.MediaTypeImageManifest},
		{`{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}`, "application/vnd.docker.distribution.manifest.v2+json"},
		{`not json`, ocispec.MediaTypeImageManifest},
	} {
		if got := ManifestMediaType([]byte(tt.in)); got != tt.want {
			t.Errorf("ManifestMediaType(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzManifestMediaType: whatever the bytes (a mirror's or a peer's), there
// is a media type, and a manifest that declares one gets it.
func FuzzManifestMediaType(f *testing.F) {
	for _, s := range []string{
		`{"mediaType":"a"}`, `{"manifests":[]}`, `{"manifests":null}`, `{"MediaType":"b","mediatype":"c"}`,
		`{"mediaType":1,"manifests":{}}`, `{"mediaType":"a"} x`, `[1,2]`, `"s"`, `{"a":{"mediaType":"x"},"manifests":[{}]}`,
		`{"mediaType":"a","mediaType":null}`, `{"manifests":[],"manifests":null}`, ``, `{`, `{"mediaType":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := ManifestMediaType(b)
		if got == "" {
			t.Fatalf("ManifestMediaType(%q) is empty", b)
		}
		var m struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(b, &m) == nil && m.MediaType != "" && got != m.MediaType {
			t.Fatalf("ManifestMediaType(%q) = %q, but it declares %q", b, got, m.MediaType)
		}
	})
}
