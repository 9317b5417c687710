package artifact

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// Artifact is the typed view of a manifest.
type Artifact struct {
	Kind         Kind               `json:"kind"`
	Digest       digest.Digest      `json:"digest"`
	MediaType    string             `json:"mediaType"`
	ArtifactType string             `json:"artifactType,omitempty"`
	Config       ocispec.Descriptor `json:"config"`
	// Name and Version come from the ModelPack config or the manifest's
	// org.opencontainers.image annotations.
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	Files   []File `json:"files,omitempty"`
	// Layers counts all layers, including those that are not files (image
	// layers).
	Layers int `json:"layers"`
	// Size is the manifest, config and layers together, in bytes.
	Size int64 `json:"size"`
	// Metadata holds the dev.barge.* annotations without the prefix, such as
	// task and framework.
	Metadata    map[string]string `json:"metadata,omitempty"`
	Labels      []string          `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Subject is set on referrers such as metrics.
	Subject *ocispec.Descriptor `json:"subject,omitempty"`
	// Manifests lists an index's members (joint models, multi-platform
	// images).
	Manifests []ocispec.Descriptor `json:"manifests,omitempty"`
	// Warnings are things a user should know that do not stop a pull, such as
	// layer media types Barge does not know.
	Warnings []string `json:"warnings,omitempty"`
}

// Described is what people and selection expressions read of an
// artifact: its metadata (task, framework, labels) with the ModelPack name
// and version; nil when it has none. An InferenceModel's status.metadata,
// its spec.selection and `barge versions --require` all see this map, so
// an expression means the same in each.
func (a *Artifact) Described() map[string]string {
	out := map[string]string{}
	for k, v := range a.Metadata {
		out[k] = v
	}
	if a.Name != "" {
		out["name"] = a.Name
	}
	if a.Version != "" {
		out["version"] = a.Version
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// File is one file layer: a file, or a tar of a directory to unpack.
type File struct {
	Path      string        `json:"path"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType"`
	Role      string        `json:"role,omitempty"`
	// Unpack means the layer is a tar (or tar+gzip) to extract rather than
	// a file to write.
	Unpack bool `json:"unpack,omitempty"`
	// Annotations are the layer's, which the unpacker reads (title, the
	// oras unpack flag, the unpacked size).
	Annotations map[string]string `json:"annotations,omitempty"`
}

// FileLayers are the descriptors of the file layers, with their own
// annotations, as an unpacker materializes them.
func (a *Artifact) FileLayers() []ocispec.Descriptor {
	layers := make([]ocispec.Descriptor, len(a.Files))
	for i, f := range a.Files {
		layers[i] = f.Descriptor()
	}
	return layers
}

// Descriptor is the file's layer descriptor, for fetching it.
func (f File) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: f.MediaType, Digest: f.Digest, Size: f.Size, Annotations: f.Annotations}
}

type manifestDoc struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
}

// Parse reads a manifest or index as a typed view. desc is the manifest's
// descriptor; its media type is used when the document has none. Parse
// accepts Barge's own artifacts, ModelPack models from other tools, what
// plain `oras push` makes, and container images.
func Parse(desc ocispec.Descriptor, b []byte) (*Artifact, error) {
	if len(b) > MaxManifestBytes {
		return nil, errorf("manifest %s is %d bytes, more than the %d MiB Barge reads", desc.Digest, len(b), MaxManifestBytes>>20)
	}
	var m manifestDoc
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errorf("manifest %s is not valid JSON: %v", desc.Digest, err)
	}
	if m.SchemaVersion != 2 {
		return nil, errorf("manifest %s has schemaVersion %d; only 2 is supported", desc.Digest, m.SchemaVersion)
	}
	mediaType := m.MediaType
	if mediaType == "" {
		mediaType = desc.MediaType
	}
	a := &Artifact{
		Digest:       desc.Digest,
		MediaType:    mediaType,
		ArtifactType: m.ArtifactType,
		Subject:      m.Subject,
		Annotations:  m.Annotations,
		Size:         int64(len(b)),
	}
	if a.Digest == "" {
		a.Digest = digest.FromBytes(b)
	}
	switch {
	case mediaType == ocispec.MediaTypeImageIndex || mediaType == MediaTypeDockerManifestList || (mediaType == "" && m.Manifests != nil):
		return parseIndex(a, m)
	case mediaType == ocispec.MediaTypeImageManifest || mediaType == MediaTypeDockerManifest || mediaType == "":
	default:
		return nil, errorf("manifest %s has media type %q, which is neither an OCI manifest nor an index", desc.Digest, mediaType)
	}
	if m.Config == nil {
		return nil, errorf("manifest %s has no config", desc.Digest)
	}
	if err := checkDescriptor("config", *m.Config); err != nil {
		return nil, errorf("manifest %s: %v", desc.Digest, err)
	}
	a.Config = *m.Config
	a.Size += m.Config.Size
	a.Layers = len(m.Layers)
	if a.ArtifactType == "" && m.Config.MediaType != ocispec.MediaTypeEmptyJSON {
		// OCI 1.1: without artifactType, the config media type says what
		// the artifact is.
		a.ArtifactType = m.Config.MediaType
	}
	a.Kind = kindOf(mediaType, a.ArtifactType, m.Config.MediaType)

	seen := map[string]bool{}
	for i, l := range m.Layers {
		if err := checkDescriptor(fmt.Sprintf("layer %d", i), l); err != nil {
			return nil, errorf("manifest %s: %v", desc.Digest, err)
		}
		a.Size += l.Size
		title := l.Annotations[AnnotationTitle]
		if title == "" {
			title = l.Annotations[AnnotationFilepath]
		}
		if title == "" {
			if a.Kind != KindImage {
				a.Warnings = append(a.Warnings, fmt.Sprintf("layer %d (%s) has no title annotation: it is not written as a file", i, l.Digest))
			}
			continue
		}
		p, err := cleanPath(title)
		if err != nil {
			return nil, errorf("manifest %s: layer %d: %v", desc.Digest, i, err)
		}
		if seen[p] {
			return nil, errorf("manifest %s: two layers are titled %q: a pull would write one over the other", desc.Digest, p)
		}
		seen[p] = true
		f := File{
			Path:        p,
			Digest:      l.Digest,
			Size:        l.Size,
			MediaType:   l.MediaType,
			Role:        l.Annotations[AnnotationRole],
			Unpack:      isUnpack(l),
			Annotations: l.Annotations,
		}
		if !knownLayerTypes[l.MediaType] && !isGenericFile(l.MediaType) {
			a.Warnings = append(a.Warnings, fmt.Sprintf("%s: layer media type %q is not one Barge knows; it is pulled as a plain file", p, l.MediaType))
		}
		a.Files = append(a.Files, f)
	}
	a.Metadata, a.Labels = metadataOf(m.Annotations)
	a.Name = m.Annotations[ocispec.AnnotationTitle]
	a.Version = m.Annotations[ocispec.AnnotationVersion]
	return a, nil
}

func parseIndex(a *Artifact, m manifestDoc) (*Artifact, error) {
	a.Kind = KindImage
	if a.ArtifactType == ArtifactTypeJoint {
		a.Kind = KindJoint
	}
	for i, d := range m.Manifests {
		if err := checkDescriptor(fmt.Sprintf("manifest %d", i), d); err != nil {
			return nil, errorf("index %s: %v", a.Digest, err)
		}
		a.Size += d.Size
	}
	a.Manifests = m.Manifests
	a.Metadata, a.Labels = metadataOf(m.Annotations)
	return a, nil
}

func kindOf(mediaType, artifactType, configType string) Kind {
	switch artifactType {
	case ArtifactTypeModel, MediaTypeModelConfig:
		return KindModel
	case ArtifactTypeCode:
		return KindCode
	case ArtifactTypeDataset, MediaTypeDatasetConfig:
		return KindDataset
	case ArtifactTypeMetrics:
		return KindMetrics
	case ArtifactTypeUpdate:
		return KindUpdate
	}
	if mediaType == MediaTypeDockerManifest || configType == ocispec.MediaTypeImageConfig || configType == MediaTypeDockerConfig {
		return KindImage
	}
	return KindGeneric
}

// isUnpack reports whether a file layer is a tar to extract rather than a
// file to write: oras's unpack annotation, or a ModelPack tar media type.
// A plain `oras push` gives files application/vnd.oci.image.layer.v1.tar
// without the annotation, and oras pull writes those as files; so does Barge.
func isUnpack(l ocispec.Descriptor) bool {
	if l.Annotations[AnnotationUnpack] == "true" {
		return true
	}
	return strings.HasPrefix(l.MediaType, "application/vnd.cncf.model.") &&
		(strings.HasSuffix(l.MediaType, ".tar") || strings.HasSuffix(l.MediaType, ".tar+gzip"))
}

func isGenericFile(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageLayer || mediaType == "application/octet-stream"
}

func metadataOf(annotations map[string]string) (map[string]string, []string) {
	var meta map[string]string
	var labels []string
	for k, v := range annotations {
		name, ok := strings.CutPrefix(k, AnnotationPrefix)
		if !ok {
			continue
		}
		if meta == nil {
			meta = map[string]string{}
		}
		meta[name] = v
		if k == AnnotationLabels {
			// A label set that is not a JSON array stays in Metadata as
			// text; it is the publisher's annotation, not ours to reject.
			_ = json.Unmarshal([]byte(v), &labels)
		}
	}
	return meta, labels
}

func checkDescriptor(what string, d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%s has an invalid digest %q: %v", what, d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("%s has a negative size %d", what, d.Size)
	}
	return nil
}

// cleanPath checks that a title is a safe relative path and returns it
// slash-separated and clean.
func cleanPath(title string) (string, error) {
	if strings.ContainsRune(title, 0) || strings.Contains(title, "\\") {
		return "", fmt.Errorf("title %q has a NUL or backslash; refusing to write it", title)
	}
	p := path.Clean(title)
	if path.IsAbs(p) || p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("title %q is not a relative path inside the artifact; refusing to write it", title)
	}
	return p, nil
}

// Inspect fetches the manifest desc points to (and a model's config) from
// src and parses them.
func Inspect(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor) (*Artifact, error) {
	b, err := FetchLimited(ctx, src, desc)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest %s: %w", desc.Digest, err)
	}
	a, err := Parse(desc, b)
	if err != nil {
		return nil, err
	}
	if a.Config.MediaType == MediaTypeModelConfig {
		cb, err := FetchLimited(ctx, src, a.Config)
		if err != nil {
			return nil, fmt.Errorf("fetch model config %s: %w", a.Config.Digest, err)
		}
		cfg, err := ParseModelConfig(cb)
		if err != nil {
			return nil, errorf("model config %s: %v", a.Config.Digest, err)
		}
		if cfg.Descriptor.Name != "" {
			a.Name = cfg.Descriptor.Name
		}
		if cfg.Descriptor.Version != "" {
			a.Version = cfg.Descriptor.Version
		}
	}
	sort.SliceStable(a.Files, func(i, j int) bool { return a.Files[i].Path < a.Files[j].Path })
	return a, nil
}

// ParseModelConfig reads a ModelPack config.
func ParseModelConfig(b []byte) (*ModelConfig, error) {
	var cfg ModelConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("not a ModelPack config: %v", err)
	}
	return &cfg, nil
}

// FetchLimited fetches a manifest or config, refusing one larger than
// MaxManifestBytes before reading it, and verifies its digest.
func FetchLimited(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > MaxManifestBytes {
		return nil, errorf("%s is %d bytes, more than the %d MiB limit for manifests and configs", desc.Digest, desc.Size, MaxManifestBytes>>20)
	}
	return content.FetchAll(ctx, src, desc)
}
