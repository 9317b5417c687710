package artifact

import (
	"encoding/json"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// CNCF ModelPack media types. A Barge model is a valid ModelPack artifact.
const (
	ArtifactTypeModel    = "application/vnd.cncf.model.manifest.v1+json"
	MediaTypeModelConfig = "application/vnd.cncf.model.config.v1+json"

	MediaTypeModelWeightRaw       = "application/vnd.cncf.model.weight.v1.raw"
	MediaTypeModelWeightTar       = "application/vnd.cncf.model.weight.v1.tar"
	MediaTypeModelWeightTarGzip   = "application/vnd.cncf.model.weight.v1.tar+gzip"
	MediaTypeModelWeightConfigRaw = "application/vnd.cncf.model.weight.config.v1.raw"
	MediaTypeModelWeightConfigTar = "application/vnd.cncf.model.weight.config.v1.tar"
	MediaTypeModelCodeRaw         = "application/vnd.cncf.model.code.v1.raw"
	MediaTypeModelCodeTar         = "application/vnd.cncf.model.code.v1.tar"
	MediaTypeModelCodeTarGzip     = "application/vnd.cncf.model.code.v1.tar+gzip"
	MediaTypeModelDocRaw          = "application/vnd.cncf.model.doc.v1.raw"
	MediaTypeModelDocTar          = "application/vnd.cncf.model.doc.v1.tar"
	MediaTypeModelDatasetRaw      = "application/vnd.cncf.model.dataset.v1.raw"
	MediaTypeModelDatasetTar      = "application/vnd.cncf.model.dataset.v1.tar"
)

// Barge's own artifact types, for what ModelPack has no type for.
const (
	ArtifactTypeCode       = "application/vnd.barge.code.manifest.v1+json"
	ArtifactTypeDataset    = "application/vnd.barge.dataset.manifest.v1+json"
	MediaTypeDatasetConfig = "application/vnd.barge.dataset.config.v1+json"
	// ArtifactTypeMetrics marks a referrer whose subject is a model manifest;
	// its one layer has the same media type.
	ArtifactTypeMetrics = "application/vnd.barge.metrics.v1+json"
	ArtifactTypeUpdate  = "application/vnd.barge.update.v1+json"
	ArtifactTypeJoint   = "application/vnd.barge.joint.v1+json"
)

// Docker image media types, reported as kind image.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
)

// Annotations.
const (
	// AnnotationTitle is a file layer's relative path, slash-separated; oras
	// pull writes the file under this name.
	AnnotationTitle = ocispec.AnnotationTitle
	// AnnotationFilepath is ModelPack's name for the same path.
	AnnotationFilepath = "org.cncf.model.filepath"
	// AnnotationUnpack tells oras pull to extract a tar layer into the
	// directory named by its title.
	AnnotationUnpack = "io.deis.oras.content.unpack"

	// AnnotationPrefix starts every Barge annotation.
	AnnotationPrefix = "dev.barge."
	// AnnotationRole is a code layer's role: preprocess, postprocess, train
	// or aggregate.
	AnnotationRole = "dev.barge.role"
	// AnnotationTask is the model's task, such as object-detection.
	AnnotationTask = "dev.barge.task"
	// AnnotationLabels is the model's label set as a JSON array of strings.
	AnnotationLabels = "dev.barge.labels"
	// AnnotationFramework is the serving framework, such as onnxruntime.
	AnnotationFramework = "dev.barge.framework"
	// AnnotationLayer marks a joint model's member as edge or cloud.
	AnnotationLayer = "dev.barge.layer"
	// AnnotationShardFiles is how many files a dataset tar shard holds.
	AnnotationShardFiles = "dev.barge.shard-files"
	// AnnotationUnpackedSize is the byte count a tar layer expands to, so
	// an extractor can refuse more.
	AnnotationUnpackedSize = "dev.barge.unpacked-size"
)

// Code roles.
const (
	RolePreprocess  = "preprocess"
	RolePostprocess = "postprocess"
	RoleTrain       = "train"
	RoleAggregate   = "aggregate"
)

// Roles lists the code roles in the order a pipeline runs them.
var Roles = []string{RolePreprocess, RolePostprocess, RoleTrain, RoleAggregate}

// MaxManifestBytes is the largest manifest or config Barge reads or writes,
// the limit most registries and oras-go apply.
const MaxManifestBytes = 4 << 20

// knownLayerTypes are the file layer media types Barge understands; any
// other is pulled as a plain file with a warning.
var knownLayerTypes = map[string]bool{
	MediaTypeModelWeightRaw: true, MediaTypeModelWeightTar: true, MediaTypeModelWeightTarGzip: true,
	MediaTypeModelWeightConfigRaw: true, MediaTypeModelWeightConfigTar: true,
	MediaTypeModelCodeRaw: true, MediaTypeModelCodeTar: true, MediaTypeModelCodeTarGzip: true,
	MediaTypeModelDocRaw: true, MediaTypeModelDocTar: true,
	MediaTypeModelDatasetRaw: true, MediaTypeModelDatasetTar: true,
	ArtifactTypeMetrics:         true,
	ocispec.MediaTypeImageLayer: true, ocispec.MediaTypeImageLayerGzip: true,
}

// ManifestMediaType is the media type of manifest bytes b: the mediaType it
// declares or, for an OCI manifest that leaves it out, what its fields make
// it (an index when it has manifests). Bytes that are not a manifest are
// named an image manifest: Parse says what is wrong with them.
func ManifestMediaType(b []byte) string {
	var m struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	_ = json.Unmarshal(b, &m)
	switch {
	case m.MediaType != "":
		return m.MediaType
	case m.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	}
	return ocispec.MediaTypeImageManifest
}
