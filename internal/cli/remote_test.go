package cli

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Loopback registries are plain HTTP, as Docker treats them; nothing else is.
func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost:5000": true, "127.0.0.1:5000": true, "127.0.0.2": true, "[::1]:5000": true,
		"registry.example.com": false, "10.0.0.5:5000": false, "localhost.example.com:5000": false, "0.0.0.0:5000": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%s) = %v, want %v", host, got, want)
		}
	}
}

// Registry errors say what to do.
func TestExplain(t *testing.T) {
	ref, _ := parseRef("registry.example.com/models/resnet:1.0")
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "is it running? `barge serve` starts one"},
		{errors.New(`Get "https://x/v2/": http: server gave HTTP response to HTTPS client`), "add --plain-http"},
		{fmt.Errorf("push: %w", auth.ErrBasicCredentialNotFound), "run `barge login registry.example.com`"},
		{fmt.Errorf("resolve: %w", errdef.ErrNotFound), "barge versions registry.example.com/models/resnet"},
	} {
		if got := explain(tt.err, ref).Error(); !strings.Contains(got, tt.want) {
			t.Errorf("explain(%v) = %q, want it to say %q", tt.err, got, tt.want)
		}
	}
	if explain(nil, ref) != nil {
		t.Error("explain(nil) is not nil")
	}
}

func TestParseRefSaysHowToWriteOne(t *testing.T) {
	_, err := parseRef("resnet")
	if err == nil || !strings.Contains(err.Error(), "HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]") {
		t.Fatalf("error %v", err)
	}
}
