package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/registry"
	"github.com/bargeml/barge/safetensors"
)

// The puller takes registry credentials from a mounted Docker config file,
// never from the API; without them a private model fails with a message.
func TestDaemonRegistryCredentials(t *testing.T) {
	ctx := context.Background()
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(htpasswd, []byte("robot:"+string(hash)+"\n"), 0o600)
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0", Root: t.TempDir(), Htpasswd: htpasswd})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(ctx)

	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "w.bin"), []byte("private weights"), 0o644)
	repo, _ := remote.NewRepository(reg.Host() + "/private/model")
	repo.PlainHTTP = true
	repo.Client = &auth.Client{Credential: auth.StaticCredential(reg.Host(), auth.Credential{Username: "robot", Password: "s3cret"})}
	desc, err := artifact.Pack(ctx, repo, src, artifact.PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, desc, "1"); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	s := &site{t: t, reg: reg, host: reg.Host(), root: filepath.Join(dir, "root"), desired: filepath.Join(dir, "desired.yaml")}
	s.writeDesired(s.entry("private", "private/model:1"))

	// Anonymous: the artifact fails and says why.
	d := s.start()
	waitFor(t, "a Failed status naming the missing credentials", func() bool {
		st := d.statuses()["private"]
		return st.Phase == agent.Failed && strings.Contains(strings.ToLower(st.Message), "credential")
	})
	d.stop()

	config := filepath.Join(dir, "config.json")
	creds := base64.StdEncoding.EncodeToString([]byte("robot:s3cret"))
	os.WriteFile(config, []byte(`{"auths":{"`+reg.Host()+`":{"auth":"`+creds+`"}}}`), 0o600)
	d = s.start("--registry-config", config)
	d.waitReady("private", desc.Digest)
	if got := s.mustRead("private", "w.bin"); got != "private weights" {
		t.Errorf("w.bin = %q", got)
	}
}

// Updates go up with the push credential alone: without it the upload is
// anonymous and refused by a registry that wants a login (the pull
// credential, a read-only user here, is not tried); with it the update is
// pushed.
func TestDaemonPushCredentials(t *testing.T) {
	ctx := context.Background()
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0", Root: t.TempDir(),
		Htpasswd:         registry.HtpasswdForTest(t, map[string]string{"trainer": "push-pw"}),
		HtpasswdReadOnly: registry.HtpasswdForTest(t, map[string]string{"node": "pull-pw"})})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(ctx)
	src := t.TempDir()
	var model bytes.Buffer
	tensors := []safetensors.Tensor{{Name: "w", DType: safetensors.F32, Shape: []int64{1}}}
	safetensors.Encode(&model, nil, tensors, [][]byte{safetensors.AppendF32(nil, 0)})
	os.WriteFile(filepath.Join(src, "model.safetensors"), model.Bytes(), 0o644)
	repo, _ := remote.NewRepository(reg.Host() + "/models/mnist")
	repo.PlainHTTP = true
	repo.Client = &auth.Client{Credential: auth.StaticCredential(reg.Host(), auth.Credential{Username: "trainer", Password: "push-pw"})}
	base, err := artifact.Pack(ctx, repo, src, artifact.PackOptions{})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	dockerConfig := func(name, user, password string) string {
		p := filepath.Join(dir, name)
		creds := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
		os.WriteFile(p, []byte(`{"auths":{"`+reg.Host()+`":{"auth":"`+creds+`"}}}`), 0o600)
		return p
	}
	pull, push := dockerConfig("pull.json", "node", "pull-pw"), dockerConfig("push.json", "trainer", "push-pw")
	s := &site{t: t, reg: reg, host: reg.Host(), root: filepath.Join(dir, "root"), desired: filepath.Join(dir, "desired.yaml")}
	s.writeDesired(s.entry("train", "models/mnist@"+base.Digest.String()) +
		fmt.Sprintf("    upload: {round: 1, repository: %s/models/mnist, run: r1}\n", reg.Host()))
	update := filepath.Join(s.root, "uploads", "train", "round-1")
	os.MkdirAll(update, 0o755)
	os.WriteFile(filepath.Join(update, "model.safetensors"), model.Bytes(), 0o644)
	os.WriteFile(filepath.Join(update, artifact.UpdateInfoFile), []byte(`{"samples": 7}`), 0o644)
	os.WriteFile(filepath.Join(update, artifact.UpdateDoneFile), nil, 0o644)

	d := s.start("--registry-config", pull)
	waitFor(t, "an anonymous upload to fail, naming the flag", func() bool {
		u := d.statuses()["train"].Upload
		return u.Phase == agent.UploadFailed && strings.Contains(u.Message, "--push-credentials")
	})
	d.stop()
	if refs, err := artifact.UpdateReferrers(ctx, repo, base); err != nil || len(refs) != 0 {
		t.Fatalf("updates of the base after an anonymous upload: %v, %v; want none", refs, err)
	}

	d = s.start("--registry-config", pull, "--push-credentials", push)
	var st agent.Status
	waitFor(t, "the upload with the push credential", func() bool {
		st = d.statuses()["train"]
		return st.Upload.Phase == agent.UploadUploaded
	})
	refs, err := artifact.UpdateReferrers(ctx, repo, base)
	if err != nil || len(refs) != 1 || refs[0].Digest != st.Upload.Digest {
		t.Errorf("updates of the base: %v, %v; want %s", refs, err, st.Upload.Digest)
	}
}
