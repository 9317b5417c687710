package controllers

import (
	"context"
	"errors"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/verify"
)

// verify refuses desc unless it carries a signature spec trusts. The key
// material is the one Secret or ConfigMap spec names, read with a direct GET
// (Resolver.Secrets): the controller never lists or watches either kind.
func (r *Resolver) verify(ctx context.Context, repo *remote.Repository, src source, spec *v1alpha1.VerifySpec, desc ocispec.Descriptor) error {
	files, what, err := r.keyMaterial(ctx, src.Namespace, spec)
	if err != nil {
		return err
	}
	ids := make([]verify.Identity, 0, len(spec.MatchOIDCIdentity))
	for _, id := range spec.MatchOIDCIdentity {
		ids = append(ids, verify.Identity{Issuer: id.Issuer, Subject: id.Subject})
	}
	provider := spec.Provider
	if provider == "" {
		provider = verify.ProviderCosign
	}
	v, err := verify.New(verify.FromFiles(provider, files, ids))
	if err != nil {
		return stalledf(ReasonVerificationFailed, "spec.verify with %s: %v", what, err)
	}
	if err := v.Verify(ctx, repo, src.Repository, desc); err != nil {
		if errors.Is(err, verify.ErrNotVerified) {
			return stalledf(ReasonVerificationFailed, "refusing %s: %v; the previous digest stays in place", desc.Digest, err)
		}
		return explain(err, src, "signatures of "+desc.Digest.String())
	}
	return nil
}

// keyMaterial reads the data of the Secret or ConfigMap spec names.
func (r *Resolver) keyMaterial(ctx context.Context, namespace string, spec *v1alpha1.VerifySpec) (map[string][]byte, string, error) {
	if r.Secrets == nil {
		return nil, "", errors.New("no reader for verify key material configured")
	}
	key := client.ObjectKey{Namespace: namespace, Name: spec.KeyMaterialName()}
	var (
		obj  client.Object
		what string
	)
	switch {
	case spec.SecretRef != nil:
		obj, what = &corev1.Secret{}, "secret "+namespace+"/"+key.Name
	case spec.ConfigMapRef != nil:
		obj, what = &corev1.ConfigMap{}, "configmap "+namespace+"/"+key.Name
	default:
		return nil, "", stalledf(ReasonVerificationFailed, "spec.verify names no key material: set secretRef or configMapRef")
	}
	if err := r.Secrets.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, what, stalledf(ReasonVerificationFailed, "%s named by spec.verify does not exist: create it with the public key (cosign.pub), trusted_root.json, or notation's trustpolicy.json and certificates", what)
		}
		return nil, what, retryf(ReasonVerificationFailed, err, "read %s named by spec.verify: %v", what, err)
	}
	files := map[string][]byte{}
	switch o := obj.(type) {
	case *corev1.Secret:
		for k, v := range o.Data {
			files[k] = v
		}
	case *corev1.ConfigMap:
		for k, v := range o.Data {
			files[k] = []byte(v)
		}
		for k, v := range o.BinaryData {
			files[k] = v
		}
	}
	return files, what, nil
}
