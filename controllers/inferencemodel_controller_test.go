package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"oras.land/oras-go/v2/registry/remote/auth"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
)

func edgeModel(ns, name, repository, version string) *v1alpha1.InferenceModel {
	return &v1alpha1.InferenceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.InferenceModelSpec{
			Artifact:      repository,
			TargetVersion: version,
			Insecure:      true,
			NodeSelector:  map[string]string{"barge-test": ns},
		},
	}
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

// TestInferenceModelResolve: a tag costs a HEAD, a range picks the newest
// matching tag (skipping the referrers tag metrics leave), a digest is used
// as given; a version that does not exist stalls the model with a message
// that says what to do, and a registry that is down is retried, not stalled.
func TestInferenceModelResolve(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "resnet")
	repo := openRepo(t, ref)
	digests := map[string]string{}
	for _, v := range []string{"1.0.0", "1.2.0", "1.5.0", "2.0.0"} {
		digests[v] = pushModel(t, repo, v, map[string]string{"model.onnx": "weights " + v}, artifact.Metadata{}).Digest.String()
	}
	d15, err := repo.Resolve(context.Background(), "1.5.0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := artifact.AttachMetrics(context.Background(), repo, d15, artifact.Metrics{Metrics: map[string]float64{"accuracy": 0.9}}); err != nil {
		t.Fatal(err)
	}

	missing := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name, repository, version string
		wantVersion, wantDigest   string
		want                      conds
	}{
		{name: "tag", version: "1.0.0", wantVersion: "1.0.0", wantDigest: digests["1.0.0"],
			want: conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded, message: "no node matches spec.nodeSelector"}},
		{name: "range", version: ">=1.2 <2", wantVersion: "1.5.0", wantDigest: digests["1.5.0"],
			want: conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}},
		{name: "wildcard", version: "1.x", wantVersion: "1.5.0", wantDigest: digests["1.5.0"],
			want: conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}},
		{name: "digest", version: digests["1.2.0"], wantDigest: digests["1.2.0"],
			want: conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}},
		{name: "unknown-tag", version: "9.9.9",
			want: conds{ready: metav1.ConditionFalse, reason: ReasonVersionNotFound, message: `tag "9.9.9" not found in ` + ref, stalled: true}},
		{name: "no-match", version: ">=3",
			want: conds{ready: metav1.ConditionFalse, reason: ReasonNoMatchingVersion, message: "its versions are 1.0.0, 1.2.0, 1.5.0, 2.0.0", stalled: true}},
		{name: "unknown-digest", version: missing,
			want: conds{ready: metav1.ConditionFalse, reason: ReasonVersionNotFound, message: "manifest " + missing + " not found", stalled: true}},
		{name: "unreachable", repository: "127.0.0.1:1/models/resnet", version: "1.0.0",
			want: conds{ready: metav1.ConditionFalse, reason: ReasonRegistryUnreachable, message: "registry 127.0.0.1:1 is not reachable", reconciling: true}},
	}
	for _, tt := range tests {
		r := tt.repository
		if r == "" {
			r = ref
		}
		create(t, edgeModel(ns, tt.name, r, tt.version))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &v1alpha1.InferenceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: tt.name}}
			eventually(t, "conditions", func() error {
				get(t, m)
				return tt.want.check(m.Generation, m.Status.ObservedGeneration, m.Status.Conditions)
			})
			if tt.wantDigest == "" {
				if m.Status.Resolved != nil {
					t.Errorf("status.resolved = %+v, want none", m.Status.Resolved)
				}
				return
			}
			got := m.Status.Resolved
			if got == nil || got.Digest != tt.wantDigest || got.Version != tt.wantVersion || got.ShortDigest != tt.wantDigest[7:19] ||
				got.ArtifactType != artifact.ArtifactTypeModel || got.Size <= 0 || got.ResolvedAt == nil {
				t.Errorf("status.resolved = %+v, want version %q digest %s", got, tt.wantVersion, tt.wantDigest)
			}
			if m.Status.Nodes != (v1alpha1.NodeCounts{}) {
				t.Errorf("status.nodes = %+v, want zero: no node matches", m.Status.Nodes)
			}
		})
	}
}

// TestInferenceModelMetadataAndMetrics: the model's annotations, ModelPack
// name and version, and its newest metrics show in status, numbers as
// written.
func TestInferenceModelMetadataAndMetrics(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "yolo")
	repo := openRepo(t, ref)
	desc := pushModel(t, repo, "3.1.0", map[string]string{"yolo.onnx": "w"}, artifact.Metadata{
		Name: "yolo", Version: "3.1.0", Task: "object-detection", Framework: "onnx", Labels: []string{"cat", "dog"},
	})
	ctx := context.Background()
	if _, err := artifact.AttachMetrics(ctx, repo, desc, artifact.Metrics{Metrics: map[string]float64{"accuracy": 0.5, "latency_ms": 12}}); err != nil {
		t.Fatal(err)
	}
	if _, err := artifact.AttachMetrics(ctx, repo, desc, artifact.Metrics{Metrics: map[string]float64{"accuracy": 0.913, "params": 1.2e9}}); err != nil {
		t.Fatal(err)
	}
	m := edgeModel(ns, "yolo", ref, "3.1.0")
	create(t, m)
	eventually(t, "Ready", func() error {
		get(t, m)
		return conditionIs(m.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionTrue, ReasonSucceeded, "")
	})
	wantMeta := map[string]string{"name": "yolo", "version": "3.1.0", "task": "object-detection", "framework": "onnx", "labels": `["cat","dog"]`}
	if fmt.Sprint(m.Status.Metadata) != fmt.Sprint(wantMeta) {
		t.Errorf("status.metadata = %v, want %v", m.Status.Metadata, wantMeta)
	}
	wantMetrics := map[string]string{"accuracy": "0.913", "latency_ms": "12", "params": "1.2e+09"}
	if fmt.Sprint(m.Status.Metrics) != fmt.Sprint(wantMetrics) {
		t.Errorf("status.metrics = %v, want %v", m.Status.Metrics, wantMetrics)
	}
}

// TestTagMovedOnInterval: without any change to the object, the next
// resolution after spec.interval finds the moved tag and rolls it out.
func TestTagMovedOnInterval(t *testing.T) {
	ns := env.Namespace(t)
	ref := repoName(t, "m")
	repo := openRepo(t, ref)
	d1 := pushModel(t, repo, "latest", map[string]string{"m.onnx": "v1"}, artifact.Metadata{}).Digest.String()
	nodes(t, ns, nil, 1)
	m := edgeModel(ns, "m", ref, "latest")
	m.Spec.Interval = &metav1.Duration{Duration: minInterval}
	create(t, m)
	waitNodeArtifacts(t, ns, "on v1", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, d1); len(got) != 1 {
			return fmt.Errorf("on v1: %v", got)
		}
		return nil
	})
	get(t, m)
	generation := m.Generation
	d2 := pushModel(t, repo, "latest", map[string]string{"m.onnx": "v2"}, artifact.Metadata{}).Digest.String()
	waitNodeArtifacts(t, ns, "on v2", func(nas map[string]*v1alpha1.NodeArtifact) error {
		if got := onDigest(nas, d2); len(got) != 1 {
			return fmt.Errorf("on v2: %v", got)
		}
		return nil
	})
	get(t, m)
	if m.Generation != generation || m.Status.Resolved.Digest != d2 {
		t.Errorf("generation %d (was %d), resolved %+v", m.Generation, generation, m.Status.Resolved)
	}
	eventually(t, "a Resolved event", func() error { return findEvent(ns, "m", ReasonResolved) })
}

// TestPullSecretRef: the controller resolves a private repository with the
// credentials of spec.pullSecretRef, read with nothing but get on secrets.
func TestPullSecretRef(t *testing.T) {
	secure := htpasswdRegistry(t)
	ref := secure.Host() + "/private/model"
	repo := openRepo(t, ref)
	repo.Client = &auth.Client{Credential: auth.StaticCredential(secure.Host(), auth.Credential{Username: "robot", Password: "s3cret"})}
	d := pushModel(t, repo, "1.0.0", map[string]string{"m.onnx": "private"}, artifact.Metadata{}).Digest.String()
	ns := env.Namespace(t)
	create(t, dockerConfigSecret(ns, "robot", secure.Host(), "robot", "s3cret"))

	anonymous := edgeModel(ns, "anonymous", ref, "1.0.0")
	withSecret := edgeModel(ns, "with-secret", ref, "1.0.0")
	withSecret.Spec.PullSecretRef = &v1alpha1.LocalObjectReference{Name: "robot"}
	create(t, anonymous)
	create(t, withSecret)
	eventually(t, "resolved with the secret", func() error {
		get(t, withSecret)
		if withSecret.Status.Resolved == nil || withSecret.Status.Resolved.Digest != d {
			return fmt.Errorf("resolved %+v, conditions %s", withSecret.Status.Resolved, describe(withSecret.Status.Conditions))
		}
		return conds{ready: metav1.ConditionTrue, reason: ReasonSucceeded}.check(withSecret.Generation, withSecret.Status.ObservedGeneration, withSecret.Status.Conditions)
	})
	eventually(t, "anonymous refused", func() error {
		get(t, anonymous)
		return conds{ready: metav1.ConditionFalse, reason: ReasonUnauthorized, message: "wants credentials for " + ref + ": set spec.pullSecretRef", reconciling: true}.check(anonymous.Generation, anonymous.Status.ObservedGeneration, anonymous.Status.Conditions)
	})
}
