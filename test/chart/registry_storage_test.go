package chart

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// s3Values put the registry on an S3-compatible bucket with three replicas.
var s3Values = []string{
	"--set", "registry.replicas=3,registry.storage.type=s3,registry.storage.s3.bucket=models",
	"--set", "registry.storage.s3.regionEndpoint=http://minio.storage:9000,registry.storage.s3.forcePathStyle=true",
	"--set", "registry.storage.s3.credentialsSecret=s3-keys,registry.storage.s3.rootDirectory=barge",
	"--set-json", `registry.storage.s3.options={"chunksize":"16777216"}`,
}

// TestRegistryOnS3: the replicas run `barge serve` with distribution's s3
// driver on the bucket, read the keys from the named Secret into the AWS
// environment (never into arguments), share the upload secret, and have no
// volume and no claim: nothing ties them to one node.
func TestRegistryOnS3(t *testing.T) {
	objs := render(t, s3Values...)
	d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "registry"))
	c := container(t, &d.Spec.Template, "registry")
	if *d.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", *d.Spec.Replicas)
	}
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		t.Error("strategy Recreate on S3: an upgrade would take every replica down at once")
	}
	var opts []string
	for _, a := range c.Args {
		if o, ok := strings.CutPrefix(a, "--storage-opt="); ok {
			opts = append(opts, o)
		}
	}
	slices.Sort(opts)
	want := []string{"bucket=models", "chunksize=16777216", "forcepathstyle=true", "region=us-east-1", "regionendpoint=http://minio.storage:9000", "rootdirectory=barge"}
	if driver, _ := flag(c.Args, "storage-driver"); driver != "s3" || !slices.Equal(opts, want) {
		t.Errorf("--storage-driver=%s --storage-opt %v, want s3 with %v", driver, opts, want)
	}
	if root, ok := flag(c.Args, "root"); ok {
		t.Errorf("--root=%s beside the s3 driver", root)
	}
	for _, a := range c.Args {
		if strings.Contains(strings.ToLower(a), "secretkey") || strings.Contains(strings.ToLower(a), "accesskey") {
			t.Errorf("a credential in the arguments: %s", a)
		}
	}
	env := map[string]corev1.SecretKeySelector{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			env[e.Name] = *e.ValueFrom.SecretKeyRef
		}
	}
	if k := env["AWS_ACCESS_KEY_ID"]; k.Name != "s3-keys" || k.Key != "accessKey" {
		t.Errorf("AWS_ACCESS_KEY_ID from %+v, want key accessKey of Secret s3-keys", k)
	}
	if k := env["AWS_SECRET_ACCESS_KEY"]; k.Name != "s3-keys" || k.Key != "secretKey" {
		t.Errorf("AWS_SECRET_ACCESS_KEY from %+v, want key secretKey of Secret s3-keys", k)
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "data" {
			t.Errorf("a data volume on S3: %+v", v)
		}
	}
	if n := len(objs.find("PersistentVolumeClaim", "")); n != 0 {
		t.Errorf("%d claims on S3, want none", n)
	}
	uploadSecretShared(t, objs, &d.Spec.Template)

	// Without a Secret, the pod's own AWS identity (a role) is used.
	d = decode[appsv1.Deployment](t, render(t, append(s3Values, "--set", "registry.storage.s3.credentialsSecret=")...).one(t, "Deployment", "registry"))
	if c := container(t, &d.Spec.Template, "registry"); len(c.Env) != 0 {
		t.Errorf("env %+v without a credentials Secret, want none", c.Env)
	}
}

// uploadSecretShared: every replica reads the one generated upload secret,
// so a PATCH that lands on another replica than the POST is accepted.
func uploadSecretShared(t *testing.T, objs objects, tmpl *corev1.PodTemplateSpec) {
	t.Helper()
	c := container(t, tmpl, "registry")
	file, _ := flag(c.Args, "upload-secret-file")
	v := volumeOf(t, tmpl, "upload-secret")
	name := release + "-barge-registry-upload"
	if v.Secret == nil || v.Secret.SecretName != name || file != mountOf(t, c, "upload-secret").MountPath+"/secret" {
		t.Errorf("--upload-secret-file=%s on volume %+v, want key secret of Secret %s", file, v, name)
	}
	if s := secretData(t, objs, name)["secret"]; len(s) < 32 {
		t.Errorf("upload secret of %d characters, want at least 32 (barge serve refuses under 16)", len(s))
	}
	secretVolumesAre0400(t, "registry", tmpl)
}

// TestRegistryUploadSecretOnFilesystem: one replica on a volume keeps its
// upload secret too, so an upload cut by a registry restart resumes.
func TestRegistryUploadSecretOnFilesystem(t *testing.T) {
	objs := render(t)
	d := decode[appsv1.Deployment](t, objs.one(t, "Deployment", "registry"))
	uploadSecretShared(t, objs, &d.Spec.Template)
}

// TestRegistryStorageRefused: values that would run replicas on one
// ReadWriteOnce volume, or S3 without a bucket, fail at install with a
// message naming the value to set.
func TestRegistryStorageRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"replicas on a volume", []string{"--set", "registry.replicas=2"}, "registry.replicas=2 needs registry.storage.type=s3"},
		{"replicas without persistence", []string{"--set", "registry.replicas=2,registry.persistence.enabled=false"}, "registry.replicas=2 needs registry.storage.type=s3"},
		{"s3 without a bucket", []string{"--set", "registry.storage.type=s3"}, "registry.storage.type=s3 needs registry.storage.s3.bucket"},
		{"s3 without a region or endpoint", []string{"--set", "registry.storage.type=s3,registry.storage.s3.bucket=b,registry.storage.s3.region="}, "registry.storage.s3.regionEndpoint"},
		{"unknown type", []string{"--set", "registry.storage.type=gcs"}, `registry.storage.type "gcs"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := renderErr(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
