package fetch

import (
	"net/http"
	"testing"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"
)

func TestParseMirror(t *testing.T) {
	for _, tc := range []struct {
		in    string
		host  string
		plain bool
		ok    bool
	}{
		{"mirror.local:5000", "mirror.local:5000", false, true},
		{"http://10.0.0.1:5000", "10.0.0.1:5000", true, true},
		{"https://mirror.example/", "mirror.example", false, true},
		{"", "", false, false},
		{"http://", "", false, false},
		{"mirror.example/v2/prefix", "", false, false},
		{"user@mirror.example", "", false, false},
	} {
		s, err := parseMirror(tc.in, "origin.example")
		if (err == nil) != tc.ok || s.host != tc.host || s.plain != tc.plain || (tc.ok && (!s.mirror || s.ns != "origin.example")) {
			t.Errorf("parseMirror(%q) = %+v, %v", tc.in, s, err)
		}
	}
}

// TestBlobClientHasNoRetryTransport: blob GETs must not go through
// oras-go's retry transport, which would retry a cut body from byte 0 and
// multiply MaxAttempts; credentials and the token cache stay shared.
func TestBlobClientHasNoRetryTransport(t *testing.T) {
	cred := auth.StaticCredential("r.example", auth.Credential{Username: "u", Password: "p"})
	user := &auth.Client{Client: retry.DefaultClient, Credential: cred, Cache: auth.NewCache()}
	meta, blob := clients(user)
	if meta != user {
		t.Error("manifests do not use the caller's client")
	}
	b := blob.(*auth.Client)
	if _, ok := b.Client.Transport.(*retry.Transport); ok {
		t.Error("the blob client still retries underneath")
	}
	if b.Cache != user.Cache || b.Credential == nil {
		t.Error("the blob client lost the credentials or the token cache")
	}
	if _, ok := user.Client.Transport.(*retry.Transport); !ok {
		t.Error("the caller's client was modified")
	}

	meta, blob = clients(nil)
	if _, ok := meta.(*auth.Client).Client.Transport.(*retry.Transport); !ok {
		t.Error("the default manifest client does not retry")
	}
	if _, ok := blob.(*auth.Client).Client.Transport.(*retry.Transport); ok {
		t.Error("the default blob client retries underneath")
	}

	plain := &http.Client{}
	other := &auth.Client{Client: plain}
	if _, blob := clients(other); blob != other {
		t.Error("a client without a retry transport was replaced")
	}
}
