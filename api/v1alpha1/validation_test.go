package v1alpha1_test

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	bargev1alpha1 "github.com/bargeml/barge/api/v1alpha1"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// apply creates the object that doc describes in YAML, as `kubectl create -f`
// would: fields left out stay out, unlike with Go structs.
func apply(t *testing.T, ns, doc string) (*unstructured.Unstructured, error) {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("test YAML: %v", err)
	}
	u.SetAPIVersion(bargev1alpha1.GroupVersion.String())
	u.SetNamespace(ns)
	if u.GetName() == "" {
		u.SetGenerateName("obj-")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return u, env.Client.Create(ctx, u)
}

type validationCase struct {
	name string
	doc  string
	// want are substrings of the API server's error; none means accepted.
	want []string
}

func runValidation(t *testing.T, cases []validationCase) {
	ns := env.Namespace(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := apply(t, ns, tc.doc)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("rejected a valid object: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted an invalid object; want an error with %q", tc.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want 422 Invalid, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestInferenceModelValidation(t *testing.T) {
	const exactlyOne = "set exactly one of spec.image (a container image) or spec.artifact (an OCI repository of model files)"
	runValidation(t, []validationCase{
		{name: "artifact with tag", doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50, targetVersion: "1.0.0"}`},
		{name: "artifact with semver range and registry port", doc: `
kind: InferenceModel
spec: {artifact: "localhost:5000/models/resnet50", targetVersion: ">=1.2 <2"}`},
		{name: "artifact with digest", doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50, targetVersion: "` + digestA + `"}`},
		{name: "image in the cloud with replicas", doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", deployToLayer: cloud, replicas: 3}`},
		{name: "zero replicas in the cloud", doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", deployToLayer: cloud, replicas: 0}`},

		{name: "image and artifact", want: []string{exactlyOne}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", artifact: registry.example.com/models/resnet50, targetVersion: "1.0"}`},
		{name: "neither image nor artifact", want: []string{exactlyOne}, doc: `
kind: InferenceModel
spec: {modelName: resnet50}`},
		{name: "empty image", want: []string{"spec.image", "at least 1 chars long"}, doc: `
kind: InferenceModel
spec: {image: ""}`},
		{name: "no spec", want: []string{"spec: Required value"}, doc: `
kind: InferenceModel`},
		{name: "artifact without targetVersion", want: []string{"spec.targetVersion: Required value: spec.targetVersion is required with spec.artifact"}, doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50}`},
		{name: "targetVersion with image", want: []string{"spec.targetVersion applies to spec.artifact only"}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", targetVersion: "1.0"}`},
		{name: "artifact with a tag in it", want: []string{"spec.artifact is a repository without tag or digest"}, doc: `
kind: InferenceModel
spec: {artifact: "localhost:5000/models/resnet50:1.0", targetVersion: "1.0"}`},
		{name: "artifact with a digest in it", want: []string{"spec.artifact is a repository without tag or digest"}, doc: `
kind: InferenceModel
spec: {artifact: "registry.example.com/models/resnet50@` + digestA + `", targetVersion: "1.0"}`},
		{name: "targetVersion with a short digest", want: []string{"a digest is sha256: followed by 64 lowercase hex characters"}, doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50, targetVersion: "sha256:abc"}`},
		{name: "unknown layer", want: []string{`spec.deployToLayer: Unsupported value: "fog"`, `"edge", "cloud", "joint"`}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", deployToLayer: fog}`},
		{name: "replicas on the edge", want: []string{"spec.replicas: Invalid value", "spec.replicas applies only to deployToLayer: cloud or joint"}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", deployToLayer: edge, replicas: 2}`},
		{name: "replicas on the default layer", want: []string{"spec.replicas applies only to deployToLayer: cloud"}, doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50, targetVersion: "1.0", replicas: 2}`},
		{name: "joint model with replicas", doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/joint, targetVersion: "1.0.0", deployToLayer: joint, replicas: 2, cloud: {modelMount: imageVolume}}`},
		{name: "edge image with tolerations", doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", server: {port: 9000, tolerations: [{key: edge, operator: Exists}]}}`},
		{name: "selection and canary", doc: `
kind: InferenceModel
spec: {artifact: r.example/m, targetVersion: ">=1", selection: {require: ["metrics.accuracy >= 0.9"], order: ["metrics.accuracy"]}, rollout: {canary: {nodes: 1, pause: 10m}, failurePolicy: Halt, maxFailedNodes: 1}}`},
		{name: "joint without artifact", want: []string{"deployToLayer: joint needs spec.artifact"}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", deployToLayer: joint}`},
		{name: "selection of an image", want: []string{"spec.selection chooses among versions of spec.artifact"}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", deployToLayer: cloud, selection: {require: ["metrics.accuracy > 0.5"]}}`},
		{name: "server in the cloud", want: []string{"spec.server is the edge serving container"}, doc: `
kind: InferenceModel
spec: {artifact: r.example/m, targetVersion: "1", deployToLayer: cloud, server: {}}`},
		{name: "cloud options on the edge", want: []string{"spec.cloud configures the cloud layer"}, doc: `
kind: InferenceModel
spec: {artifact: r.example/m, targetVersion: "1", cloud: {modelMount: imageVolume}}`},
		{name: "canary with count and selector", want: []string{"exactly one of nodes (a count) or nodeSelector"}, doc: `
kind: InferenceModel
spec: {artifact: r.example/m, targetVersion: "1", rollout: {canary: {nodes: 1, nodeSelector: {a: b}}}}`},
		{name: "unknown failure policy", want: []string{"spec.rollout.failurePolicy", `"Rollback", "Halt"`}, doc: `
kind: InferenceModel
spec: {artifact: r.example/m, targetVersion: "1", rollout: {failurePolicy: Retry}}`},
		{name: "empty require", want: []string{"spec.selection.require[0]", "at least 1 chars long"}, doc: `
kind: InferenceModel
spec: {artifact: r.example/m, targetVersion: "1", selection: {require: [""]}}`},
		{name: "negative replicas", want: []string{"spec.replicas", "greater than or equal to 0"}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", deployToLayer: cloud, replicas: -1}`},
		{name: "zero maxConcurrentNodes", want: []string{"spec.rollout.maxConcurrentNodes", "greater than or equal to 1"}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", rollout: {maxConcurrentNodes: 0}}`},
		{name: "interval in words", want: []string{"spec.interval", "should match"}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", interval: 5 minutes}`},
		{name: "pull secret without name", want: []string{"spec.pullSecretRef.name: Required value"}, doc: `
kind: InferenceModel
spec: {image: "registry.example.com/serving/resnet:1.0", pullSecretRef: {}}`},
	})
}

func TestNodeArtifactValidation(t *testing.T) {
	const badDigest = "spec.digest must be sha256: followed by 64 lowercase hex characters"
	runValidation(t, []validationCase{
		{name: "valid", doc: `
kind: NodeArtifact
spec: {nodeName: edge-1, reference: "registry.example.com/models/resnet50@` + digestA + `", digest: "` + digestA + `", insecure: true}`},
		{name: "short digest", want: []string{badDigest}, doc: `
kind: NodeArtifact
spec: {nodeName: edge-1, reference: "registry.example.com/models/resnet50@sha256:abc", digest: "sha256:abc"}`},
		{name: "upper-case digest", want: []string{badDigest}, doc: `
kind: NodeArtifact
spec: {nodeName: edge-1, reference: "r.example.com/m@` + strings.ToUpper(digestA) + `", digest: "` + strings.ToUpper(digestA) + `"}`},
		{name: "tag for a digest", want: []string{badDigest}, doc: `
kind: NodeArtifact
spec: {nodeName: edge-1, reference: "registry.example.com/models/resnet50:1.0", digest: "1.0"}`},
		{name: "reference of another digest", want: []string{"spec.reference must be the repository followed by @ and spec.digest"}, doc: `
kind: NodeArtifact
spec: {nodeName: edge-1, reference: "registry.example.com/models/resnet50:1.0", digest: "` + digestA + `"}`},
		{name: "no node", want: []string{"spec.nodeName: Required value"}, doc: `
kind: NodeArtifact
spec: {reference: "registry.example.com/models/resnet50@` + digestA + `", digest: "` + digestA + `"}`},
		{name: "edge part of a signed joint index", doc: `
kind: NodeArtifact
spec: {nodeName: edge-1, reference: "r.example.com/m@` + digestA + `", digest: "` + digestA + `", verify: {secretRef: {name: keys}, signedIndex: "sha256:` + strings.Repeat("b", 64) + `"}}`},
		{name: "signedIndex not a digest", want: []string{"spec.verify.signedIndex must be sha256:"}, doc: `
kind: NodeArtifact
spec: {nodeName: edge-1, reference: "r.example.com/m@` + digestA + `", digest: "` + digestA + `", verify: {secretRef: {name: keys}, signedIndex: "latest"}}`},
	})
}

func TestDatasetValidation(t *testing.T) {
	runValidation(t, []validationCase{
		{name: "valid", doc: `
kind: Dataset
spec: {artifact: registry.example.com/datasets/coco-val, targetVersion: "2017", format: coco}`},
		{name: "no targetVersion", want: []string{"spec.targetVersion: Required value"}, doc: `
kind: Dataset
spec: {artifact: registry.example.com/datasets/coco-val}`},
		{name: "unknown format", want: []string{`spec.format: Unsupported value: "parquet"`, `"csv", "imagelist", "imagefolder", "voc", "coco", "yolo", "jsonl"`}, doc: `
kind: Dataset
spec: {artifact: registry.example.com/datasets/coco-val, targetVersion: "2017", format: parquet}`},
		{name: "artifact with a tag in it", want: []string{"spec.artifact is a repository without tag or digest"}, doc: `
kind: Dataset
spec: {artifact: "registry.example.com/datasets/coco-val:2017", targetVersion: "2017"}`},
	})
}

func TestVerifyValidation(t *testing.T) {
	const model = "kind: InferenceModel\nspec: {artifact: registry.example.com/models/resnet50, targetVersion: \"1.0.0\", verify: "
	runValidation(t, []validationCase{
		{name: "cosign key from a ConfigMap", doc: model + `{configMapRef: {name: keys}}}`},
		{name: "keyless", doc: model + `{secretRef: {name: root}, matchOIDCIdentity: [{issuer: "https://token\\.actions\\.githubusercontent\\.com", subject: "https://github\\.com/acme/.*"}]}}`},
		{name: "notation", doc: model + `{provider: notation, configMapRef: {name: trust}}}`},
		{name: "no key material", doc: model + `{provider: cosign}}`, want: []string{"exactly one of secretRef or configMapRef"}},
		{name: "both refs", doc: model + `{secretRef: {name: a}, configMapRef: {name: b}}}`, want: []string{"exactly one of secretRef or configMapRef"}},
		{name: "unknown provider", doc: model + `{provider: gpg, secretRef: {name: a}}}`, want: []string{"spec.verify.provider", "cosign", "notation"}},
		{name: "identity with notation", doc: model + `{provider: notation, secretRef: {name: a}, matchOIDCIdentity: [{issuer: a, subject: b}]}}`, want: []string{"cosign keyless signatures only"}},
		{name: "empty subject", doc: model + `{secretRef: {name: a}, matchOIDCIdentity: [{issuer: a, subject: ""}]}}`, want: []string{"subject"}},
		{name: "dataset", doc: "kind: Dataset\nspec: {artifact: registry.example.com/datasets/coco, targetVersion: \"1\", verify: {secretRef: {name: keys}}}"},
		{name: "signedIndex on a model", doc: model + `{secretRef: {name: a}, signedIndex: "sha256:` + strings.Repeat("a", 64) + `"}}`, want: []string{"written by the controller on NodeArtifacts"}},
		{name: "signedIndex on a dataset", doc: "kind: Dataset\nspec: {artifact: registry.example.com/datasets/coco, targetVersion: \"1\", verify: {secretRef: {name: keys}, signedIndex: \"sha256:" + strings.Repeat("a", 64) + "\"}}", want: []string{"written by the controller on NodeArtifacts"}},
	})
}

// TestIntervalMinimum: the API server refuses an interval below 30s, which
// would make every object a load on the registry, and says what the floor is.
func TestIntervalMinimum(t *testing.T) {
	const floor = "spec.interval must be at least 30s"
	runValidation(t, []validationCase{
		{name: "model 30s", doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50, targetVersion: "1.0.0", interval: 30s}`},
		{name: "model 1m30s", doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50, targetVersion: "1.0.0", interval: 1m30s}`},
		{name: "model 10s", want: []string{floor}, doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50, targetVersion: "1.0.0", interval: 10s}`},
		{name: "model 29999ms", want: []string{floor}, doc: `
kind: InferenceModel
spec: {artifact: registry.example.com/models/resnet50, targetVersion: "1.0.0", interval: 29999ms}`},
		{name: "dataset 30s", doc: `
kind: Dataset
spec: {artifact: registry.example.com/datasets/coco-val, targetVersion: "2017", interval: 30s}`},
		{name: "dataset 10s", want: []string{floor}, doc: `
kind: Dataset
spec: {artifact: registry.example.com/datasets/coco-val, targetVersion: "2017", interval: 10s}`},
	})
}
