package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Aggregation is how a round's updates become the next global model.
// +kubebuilder:validation:Enum=FedAvg;Script
type Aggregation string

const (
	// AggregationFedAvg averages the updates' tensors weighted by sample
	// count (barge aggregate fedavg).
	AggregationFedAvg Aggregation = "FedAvg"
	// AggregationScript runs the artifact's aggregate code as a cloud Job.
	AggregationScript Aggregation = "Script"
)

// TrainingModelSpec says what to train, on which nodes, for how many rounds.
//
// +kubebuilder:validation:XValidation:rule="has(self.dataset) != has(self.localDataset)",message="set exactly one of spec.dataset (a Dataset that Barge distributes) or spec.localDataset (a directory already on each node)"
type TrainingModelSpec struct {
	// ModelName names the model being trained; the object's name when empty.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ModelName string `json:"modelName,omitempty"`

	// FrameworkType names the training framework (pytorch, tensorflow,
	// ...); with no spec.trainer.image it chooses the trainer image from
	// the controller's runtime table.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	FrameworkType string `json:"frameworkType,omitempty"`

	// NodeSelector chooses the participants by label. An empty selector
	// matches every node.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Artifact is the OCI repository of the initial global model, without
	// tag or digest. The model must carry a train code layer (train/...),
	// and may carry an aggregate one (aggregate/...).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="!self.contains('@') && !self.substring(self.lastIndexOf('/') + 1).contains(':')",message="spec.artifact is a repository without tag or digest (registry.example.com/models/resnet50); put the version in spec.targetVersion"
	Artifact string `json:"artifact"`

	// TargetVersion of Artifact: a tag, a semver range or a digest. It is
	// resolved once, when training starts.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('sha256:') || self.matches('^sha256:[a-f0-9]{64}$')",message="spec.targetVersion: a digest is sha256: followed by 64 lowercase hex characters"
	TargetVersion string `json:"targetVersion"`

	// Output is the repository the global model of each round is pushed to;
	// spec.artifact when empty. The nodes' pullers push their updates
	// there too, as referrers of the round's base model.
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="!self.contains('@') && !self.substring(self.lastIndexOf('/') + 1).contains(':')",message="spec.output is a repository without tag or digest"
	// +optional
	Output string `json:"output,omitempty"`

	// Insecure reaches the registry over plain HTTP.
	// +optional
	Insecure bool `json:"insecure,omitempty"`

	// PullSecretRef names a kubernetes.io/dockerconfigjson Secret in the same
	// namespace that the controller uses to read the registry.
	// +optional
	PullSecretRef *LocalObjectReference `json:"pullSecretRef,omitempty"`

	// PushSecretRef names a kubernetes.io/dockerconfigjson Secret in the
	// same namespace that the aggregation Job pushes spec.output with. The
	// nodes push their updates with their own credential (the chart's
	// edgePuller.push), never with this one.
	// +optional
	PushSecretRef *LocalObjectReference `json:"pushSecretRef,omitempty"`

	// Dataset names a Dataset in the same namespace that Barge distributes
	// to the participants; it must be Ready on a node before that node
	// trains. Exclusive with LocalDataset.
	// +optional
	Dataset *LocalObjectReference `json:"dataset,omitempty"`

	// LocalDataset is an absolute directory that already exists on each
	// participant: data collected there, which never leaves the node.
	// Exclusive with Dataset.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/') && !self.contains('/../') && !self.endsWith('/..')",message="spec.localDataset must be an absolute path without '..'"
	// +optional
	LocalDataset string `json:"localDataset,omitempty"`

	// Trainer is the container run once per participant per round; the
	// runtime table's trainer for spec.frameworkType when unset.
	// +optional
	Trainer *TrainerSpec `json:"trainer,omitempty"`

	// Rounds of training. Each round trains on every participant, then
	// aggregates.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Rounds int32 `json:"rounds,omitempty"`

	// MinParticipants is how many updates a round needs to aggregate; all
	// participants when unset. With fewer at roundTimeout the round fails.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MinParticipants *int32 `json:"minParticipants,omitempty"`

	// RoundTimeout is how long a round waits for all participants; at the
	// timeout it aggregates what came in if that is at least
	// minParticipants.
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:MaxLength=32
	// +optional
	RoundTimeout *metav1.Duration `json:"roundTimeout,omitempty"`

	// Aggregation is FedAvg (built in) or Script (the artifact's aggregate code).
	// +kubebuilder:default=FedAvg
	// +optional
	Aggregation Aggregation `json:"aggregation,omitempty"`

	// Promote tags the final global model with a version when it passes
	// every require expression, so an InferenceModel following a semver
	// range picks it up.
	// +optional
	Promote *PromoteSpec `json:"promote,omitempty"`
}

// TrainerSpec is the container that trains on one node for one round. It
// finds its inputs through environment variables (see the README's trainer
// contract): BARGE_MODEL_DIR (the round's global model, read-only),
// BARGE_TRAIN_DIR (the model's train/ code), BARGE_DATA_DIR (read-only),
// BARGE_OUTPUT_DIR (where the update goes), BARGE_ROUND and BARGE_NODE_NAME.
type TrainerSpec struct {
	// Image of the trainer.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// Command replaces the image's entrypoint.
	// +listType=atomic
	// +optional
	Command []string `json:"command,omitempty"`

	// Args of the trainer; Kubernetes expands $(BARGE_MODEL_DIR).
	// +listType=atomic
	// +optional
	Args []string `json:"args,omitempty"`

	// Env adds environment variables.
	// +listType=map
	// +listMapKey=name
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`

	// Resources of the trainer container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// Tolerations of the trainer pods, for tainted edge nodes.
	// +listType=atomic
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
}

// PromoteSpec is the version the final global model gets if it is good enough.
type PromoteSpec struct {
	// Version is the semver tag pushed to spec.output, such as 1.1.0.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$`
	Version string `json:"version"`

	// Require lists CEL expressions over the final model's metrics, as an
	// InferenceModel's spec.selection.require ("metrics.accuracy >= 0.9").
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=1024
	// +listType=atomic
	// +optional
	Require []string `json:"require,omitempty"`
}

// TrainingPhase is where a TrainingModel stands.
// +kubebuilder:validation:Enum=Pending;Training;Aggregating;Completed;Failed
type TrainingPhase string

const (
	TrainingPending     TrainingPhase = "Pending"
	TrainingTraining    TrainingPhase = "Training"
	TrainingAggregating TrainingPhase = "Aggregating"
	TrainingCompleted   TrainingPhase = "Completed"
	TrainingFailed      TrainingPhase = "Failed"
)

// TrainingModelStatus is what the controller observed. Per-node state lives
// in NodeArtifacts and the update artifacts; this object carries counts.
type TrainingModelStatus struct {
	// ObservedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase of the training.
	// +optional
	Phase TrainingPhase `json:"phase,omitempty"`

	// Round in progress (1-based); the last round once Completed.
	// +optional
	Round int32 `json:"round,omitempty"`

	// Initial is what spec.targetVersion resolved to when training started.
	// +optional
	Initial *ResolvedArtifact `json:"initial,omitempty"`

	// Rounds lists each round, oldest first.
	// +kubebuilder:validation:MaxItems=1000
	// +listType=atomic
	// +optional
	Rounds []RoundStatus `json:"rounds,omitempty"`

	// Promoted is the version the final model was tagged with.
	// +optional
	Promoted *ResolvedArtifact `json:"promoted,omitempty"`

	// Conditions: Ready summarizes; Reconciling and Stalled appear only while true.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// RoundStatus is one round of training.
type RoundStatus struct {
	// Round number, from 1.
	Round int32 `json:"round"`

	// Base is the digest of the global model the participants trained from.
	Base string `json:"base"`

	// Participants is how many nodes were asked to train.
	// +optional
	Participants int32 `json:"participants,omitempty"`

	// Updates is how many updates were uploaded for this round.
	// +optional
	Updates int32 `json:"updates,omitempty"`

	// Samples is the sum of the aggregated updates' sample counts.
	// +optional
	Samples int64 `json:"samples,omitempty"`

	// StartedAt is when the round's trainer Jobs were created.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`

	// AggregatedAt is when the round's global model was pushed.
	// +optional
	AggregatedAt *metav1.Time `json:"aggregatedAt,omitempty"`

	// Aggregated is the digest of the round's global model, the next round's base.
	// +optional
	Aggregated string `json:"aggregated,omitempty"`

	// Tag of Aggregated in spec.output.
	// +optional
	Tag string `json:"tag,omitempty"`

	// Metrics of Aggregated: the sample-weighted means of the participants'
	// metrics, as decimal text (see InferenceModelStatus.metrics).
	// +optional
	Metrics map[string]string `json:"metrics,omitempty"`

	// Message says what the round waits for, or why it failed.
	// +optional
	Message string `json:"message,omitempty"`
}

// TrainingModel trains a model by federated learning: each round the global
// model goes to the participants, a trainer runs on each, the nodes' pullers
// upload the updates, and the cloud aggregates them into the next global
// model.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=barge
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Round",type=integer,JSONPath=`.status.round`
// +kubebuilder:printcolumn:name="Rounds",type=integer,JSONPath=`.spec.rounds`
// +kubebuilder:printcolumn:name="Promoted",type=string,JSONPath=`.status.promoted.version`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TrainingModel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TrainingModelSpec   `json:"spec"`
	Status TrainingModelStatus `json:"status,omitempty"`
}

// TrainingModelList is a list of TrainingModels.
//
// +kubebuilder:object:root=true
type TrainingModelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrainingModel `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TrainingModel{}, &TrainingModelList{})
}
