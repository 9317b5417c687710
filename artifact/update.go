package artifact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// A trainer writes one round's update into a directory (BARGE_OUTPUT_DIR):
//
//	*.safetensors  the weights (or deltas), tensor names, shapes and dtypes as the base model's
//	update.json    {"samples": 1200, "metrics": {"accuracy": 0.91}}
//	DONE           written last; only a directory that has it is uploaded
//
// The node's puller packs every file but DONE as an update artifact, a
// referrer of the round's base model.
const (
	UpdateInfoFile = "update.json"
	UpdateDoneFile = "DONE"
)

// Update annotations on the manifest of an update artifact.
const (
	AnnotationUpdateNode    = "dev.barge.update.node"
	AnnotationUpdateRound   = "dev.barge.update.round"
	AnnotationUpdateSamples = "dev.barge.update.samples"
	// AnnotationUpdateRun is the TrainingModel's uid: two trainings from
	// one base never mix their updates.
	AnnotationUpdateRun = "dev.barge.update.run"
)

// MaxUpdateInfoBytes bounds update.json.
const MaxUpdateInfoBytes = 1 << 20

// UpdateInfo is what a trainer says of its update in update.json.
type UpdateInfo struct {
	// Samples it trained on: FedAvg weighs the update by it.
	Samples int64 `json:"samples"`
	// Metrics it measured, such as accuracy on its local validation split.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// ParseUpdateInfo reads update.json.
func ParseUpdateInfo(b []byte) (UpdateInfo, error) {
	if len(b) > MaxUpdateInfoBytes {
		return UpdateInfo{}, errorf("%s is %d bytes, more than the %d KiB limit", UpdateInfoFile, len(b), MaxUpdateInfoBytes>>10)
	}
	var u UpdateInfo
	if err := json.Unmarshal(b, &u); err != nil {
		return UpdateInfo{}, errorf("%s is not valid: %v: write {\"samples\": N, \"metrics\": {\"accuracy\": 0.9}}", UpdateInfoFile, err)
	}
	if u.Samples <= 0 {
		return UpdateInfo{}, errorf("%s: samples is %d: say how many samples the update was trained on (at least 1)", UpdateInfoFile, u.Samples)
	}
	for k, v := range u.Metrics {
		if k == "" {
			return UpdateInfo{}, errorf("%s: a metric has an empty name", UpdateInfoFile)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return UpdateInfo{}, errorf("%s: metric %q is not a finite number", UpdateInfoFile, k)
		}
	}
	return u, nil
}

// Update is an update artifact: who trained it, in which round, from which base.
type Update struct {
	UpdateInfo
	Node  string
	Round int
	Run   string
	// Base is the digest of the model the update was trained from (the
	// manifest's subject).
	Base ocispec.Descriptor
}

// ReadUpdateDir checks that dir holds a finished update and reads its
// update.json. It returns fs.ErrNotExist (wrapped) while DONE is missing.
func ReadUpdateDir(dir string) (UpdateInfo, error) {
	if _, err := os.Stat(filepath.Join(dir, UpdateDoneFile)); err != nil {
		return UpdateInfo{}, fmt.Errorf("update %s: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, UpdateInfoFile))
	if errors.Is(err, fs.ErrNotExist) {
		return UpdateInfo{}, errorf("update %s has %s but no %s: the trainer must write it before %s", dir, UpdateDoneFile, UpdateInfoFile, UpdateDoneFile)
	}
	if err != nil {
		return UpdateInfo{}, fmt.Errorf("update %s: %w", dir, err)
	}
	info, err := ParseUpdateInfo(b)
	if err != nil {
		return UpdateInfo{}, fmt.Errorf("update %s: %w", dir, err)
	}
	return info, nil
}

// PackUpdate pushes the finished update in dir (every file but DONE) to
// dst as a referrer of u.Base, annotated with u's node, round, run and
// sample count, and returns the update's manifest descriptor. It has no
// timestamp: a node that uploads again after a restart pushes the same
// digest, never a second update.
func PackUpdate(ctx context.Context, dst Storage, dir string, u Update) (ocispec.Descriptor, error) {
	info, err := ReadUpdateDir(dir)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	u.UpdateInfo = info
	all, err := listFiles(dir, false)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var layers []layer
	for _, f := range all {
		if f.rel == UpdateDoneFile {
			continue
		}
		d, size, err := hashFile(ctx, f.abs)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("pack update %s: %w", f.rel, err)
		}
		f.desc = ocispec.Descriptor{
			MediaType:   layerMediaType(KindModel, f.rel),
			Digest:      d,
			Size:        size,
			Annotations: map[string]string{AnnotationTitle: f.rel, AnnotationFilepath: f.rel},
		}
		layers = append(layers, f)
	}
	empty := ocispec.DescriptorEmptyJSON
	empty.Data = nil
	subject := ocispec.Descriptor{MediaType: u.Base.MediaType, Digest: u.Base.Digest, Size: u.Base.Size}
	annotations := map[string]string{
		AnnotationUpdateNode:    u.Node,
		AnnotationUpdateRound:   strconv.Itoa(u.Round),
		AnnotationUpdateSamples: strconv.FormatInt(u.Samples, 10),
	}
	if u.Run != "" {
		annotations[AnnotationUpdateRun] = u.Run
	}
	m := ocispec.Manifest{ArtifactType: ArtifactTypeUpdate, Config: empty, Subject: &subject, Annotations: annotations}
	return publish(ctx, dst, dir, m, ocispec.DescriptorEmptyJSON.Data, layers, 2)
}

// UpdateOf reads an update artifact's annotations.
func UpdateOf(a *Artifact) (Update, error) {
	if a.ArtifactType != ArtifactTypeUpdate {
		return Update{}, errorf("%s is %s, not a training update (%s)", a.Digest, describeType(a), ArtifactTypeUpdate)
	}
	if a.Subject == nil {
		return Update{}, errorf("update %s has no subject: it must be a referrer of the model it was trained from", a.Digest)
	}
	u := Update{Node: a.Annotations[AnnotationUpdateNode], Run: a.Annotations[AnnotationUpdateRun], Base: *a.Subject}
	if u.Node == "" {
		return Update{}, errorf("update %s has no %s annotation: it cannot be attributed to a node", a.Digest, AnnotationUpdateNode)
	}
	round, err := strconv.Atoi(a.Annotations[AnnotationUpdateRound])
	if err != nil || round < 1 {
		return Update{}, errorf("update %s from node %s: %s is %q, not a round number", a.Digest, u.Node, AnnotationUpdateRound, a.Annotations[AnnotationUpdateRound])
	}
	u.Round = round
	samples, err := strconv.ParseInt(a.Annotations[AnnotationUpdateSamples], 10, 64)
	if err != nil || samples < 1 {
		return Update{}, errorf("update %s from node %s: %s is %q, not a positive count", a.Digest, u.Node, AnnotationUpdateSamples, a.Annotations[AnnotationUpdateSamples])
	}
	u.Samples = samples
	return u, nil
}

// UpdateReferrers lists the update artifacts whose subject is base.
func UpdateReferrers(ctx context.Context, src content.ReadOnlyGraphStorage, base ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	refs, err := registry.Referrers(ctx, src, base, ArtifactTypeUpdate)
	if err != nil {
		return nil, fmt.Errorf("list updates of %s: %w", base.Digest, err)
	}
	return refs, nil
}

func describeType(a *Artifact) string {
	if a.ArtifactType != "" {
		return a.ArtifactType
	}
	return kindArticle(a.Kind)
}
