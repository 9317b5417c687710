package cli

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
)

func newRolloutCommand(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Manage the staged rollout of an InferenceModel's version",
	}
	cmd.AddCommand(newRolloutResumeCommand(s))
	return cmd
}

func newRolloutResumeCommand(s streams) *cobra.Command {
	var kf kubeFlags
	cmd := &cobra.Command{
		Use:   "resume NAME",
		Short: "Let a rollout paused after its canary nodes go on to the other nodes",
		Long: `Resume the rollout of an InferenceModel paused after its canary nodes
(spec.rollout.canary without a pause, or before the pause ends). It sets the
annotation barge.dev/resume-rollout to the digest being rolled out, so a
resume never lets a later version through: a new version pauses again after
its own canary. It needs the right to patch the InferenceModel.`,
		Example: `  barge rollout resume resnet -n vision
  barge rollout resume resnet --context edge-prod`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := kf.client()
			if err != nil {
				return err
			}
			m, err := resumeRollout(cmd.Context(), c, types.NamespacedName{Namespace: ns, Name: args[0]})
			if err != nil {
				return err
			}
			r := m.Status.Rollout
			fmt.Fprintf(s.out, "inferencemodel %s/%s: resumed the rollout of %s; the nodes after canary %v follow, %d at a time\n",
				m.Namespace, m.Name, rolloutVersion(r), r.CanaryNodes, max(m.Spec.Rollout.MaxConcurrentNodes, 1))
			return nil
		},
	}
	kf.add(cmd)
	return cmd
}

// resumeRollout sets the resume annotation of a paused rollout to its
// digest.
func resumeRollout(ctx context.Context, c client.Client, key types.NamespacedName) (*v1alpha1.InferenceModel, error) {
	m := &v1alpha1.InferenceModel{}
	if err := c.Get(ctx, key, m); err != nil {
		return nil, fmt.Errorf("rollout resume: get inferencemodel %s: %w", key, err)
	}
	if err := resumable(m); err != nil {
		return nil, fmt.Errorf("rollout resume: inferencemodel %s: %w", key, err)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{v1alpha1.ResumeRolloutAnnotation: m.Status.Rollout.Digest}}})
	if err != nil {
		return nil, err
	}
	if err := c.Patch(ctx, m, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return nil, fmt.Errorf("rollout resume: annotate inferencemodel %s: %w", key, err)
	}
	return m, nil
}

// resumable says why a model's rollout cannot be resumed, or nil.
func resumable(m *v1alpha1.InferenceModel) error {
	r := m.Status.Rollout
	switch {
	case r == nil:
		return fmt.Errorf("no rollout yet: nothing to resume")
	case r.Phase == v1alpha1.RolloutPaused:
		return nil
	case r.Phase == v1alpha1.RolloutComplete:
		return fmt.Errorf("the rollout of %s is complete: nothing to resume", rolloutVersion(r))
	case r.Phase == v1alpha1.RolloutProgressing && r.ResumedAt != nil:
		return fmt.Errorf("the rollout of %s was resumed already and is under way", rolloutVersion(r))
	case r.Phase == v1alpha1.RolloutProgressing:
		return fmt.Errorf("the rollout of %s is not paused: it pauses once its canary nodes %v hold it (%s)", rolloutVersion(r), r.CanaryNodes, r.Message)
	}
	return fmt.Errorf("the rollout of %s is %s, not paused (%s): push a fixed version or change the spec", rolloutVersion(r), r.Phase, r.Message)
}

func rolloutVersion(r *v1alpha1.RolloutStatus) string {
	if r.Version == "" {
		return r.Digest
	}
	return fmt.Sprintf("%s (%s)", r.Version, r.Digest)
}

// kubeFlags reach a cluster as kubectl does: $KUBECONFIG or
// ~/.kube/config, its current context and namespace, unless the flags say
// otherwise.
type kubeFlags struct {
	kubeconfig, context, namespace string
}

func (k *kubeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&k.kubeconfig, "kubeconfig", "", "path to the kubeconfig file; $KUBECONFIG or ~/.kube/config when empty")
	cmd.Flags().StringVar(&k.context, "context", "", "kubeconfig context to use; the current context when empty")
	cmd.Flags().StringVarP(&k.namespace, "namespace", "n", "", "namespace of the object; the context's namespace when empty")
}

// client is a client of Barge's kinds and the namespace to work in.
func (k *kubeFlags) client() (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: k.context}
	overrides.Context.Namespace = k.namespace
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w (set --kubeconfig, $KUBECONFIG or --context)", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: namespace: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	return c, ns, nil
}
