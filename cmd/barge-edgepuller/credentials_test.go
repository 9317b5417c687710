package main

import (
	"context"
	"encoding/base64"
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
