package trust_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/edgepuller/trust"
	"github.com/bargeml/barge/internal/signtest"
	"github.com/bargeml/barge/registry"
)

type statuses struct {
	mu   sync.Mutex
	last map[string]agent.Status
}

func (s *statuses) Report(st agent.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last[st.Name] = st
}

func (s *statuses) wait(t *testing.T, name string, phase agent.Phase, dg digest.Digest, msg string) agent.Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.mu.Lock()
		st, ok := s.last[name]
		s.mu.Unlock()
		if ok && st.Phase == phase && st.Digest == dg && strings.Contains(st.Message, msg) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %+v; want %s at %s with %q", name, st, phase, dg, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type source chan []agent.Desired

func (c source) Watch(ctx context.Context, set func([]agent.Desired)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-c:
			set(l)
		}
	}
}

// A node activates a signed digest; a NodeArtifact whose digest was swapped
// to an unsigned one, or whose spec.verify was stripped, or that names key
// material the node does not have, is not activated: the artifact is Failed
// with the reason and the signed version stays current.
func TestNodeVerifiesBeforeActivation(t *testing.T) {
	reg := registry.StartForTest(t)
	v1 := reg.PushForTest(t, "models/m", "1.0.0", map[string]string{"m.onnx": "signed"}).Digest
	v2 := reg.PushForTest(t, "models/m", "2.0.0", map[string]string{"m.onnx": "unsigned"}).Digest
	repo := reg.Host() + "/models/m"
	key, pub := signtest.CosignKeyPair(t)
	signtest.CosignSign(t, key, repo+"@"+v1.String())

	// The node's key material, as the chart mounts a ConfigMap.
	dir := signtest.CosignKeyDir(t, pub, "team-a", "cosign")

	root := t.TempDir()
	rec := &statuses{last: map[string]agent.Status{}}
	a, err := agent.New(agent.Options{Root: root, Reporter: rec, Verify: trust.FromDir(dir, nil),
		Backoff: func(int) time.Duration { return 100 * time.Millisecond }, ResolveInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	src := make(source)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, src) }()
	t.Cleanup(func() { cancel(); <-done })

	const name = "team-a/model-m"
	signed := agent.VerifyRef{Provider: "cosign", Keys: "cosign"}
	src <- []agent.Desired{{Name: name, Reference: repo + "@" + v1.String(), Insecure: true, Verify: signed}}
	rec.wait(t, name, agent.Ready, v1, "")
	current := func() string {
		b, _ := os.ReadFile(filepath.Join(a.ArtifactDir(name), "current", "m.onnx"))
		return string(b)
	}
	if current() != "signed" {
		t.Fatalf("current m.onnx = %q", current())
	}

	for _, c := range []struct {
		name string
		d    agent.Desired
		want string
	}{
		{"digest swapped to an unsigned one", agent.Desired{Name: name, Reference: repo + "@" + v2.String(), Insecure: true, Verify: signed},
			"no cosign signature"},
		{"spec.verify stripped", agent.Desired{Name: name, Reference: repo + "@" + v2.String(), Insecure: true},
			"this node trusts only signed artifacts in namespace team-a"},
		{"key material the node does not have", agent.Desired{Name: name, Reference: repo + "@" + v2.String(), Insecure: true, Verify: agent.VerifyRef{Keys: "attacker"}},
			"this node has no key material " + filepath.Join(dir, "team-a", "attacker")},
	} {
		t.Run(c.name, func(t *testing.T) {
			src <- []agent.Desired{c.d}
			st := rec.wait(t, name, agent.Failed, v1, c.want)
			if !strings.Contains(st.Message, v2.String()) {
				t.Errorf("message %q does not name the refused digest %s", st.Message, v2)
			}
			if current() != "signed" {
				t.Errorf("current m.onnx = %q; want the signed version kept", current())
			}
		})
	}

	// A namespace the node has no key material for is not held to it.
	src <- []agent.Desired{{Name: "team-b/model-m", Reference: repo + "@" + v2.String(), Insecure: true}}
	rec.wait(t, "team-b/model-m", agent.Ready, v2, "")
}

// A joint model is signed as one index, not part by part: a node pulling
// the edge part verifies the signature on the index the entry names and
// that the index lists this part as its edge part. The edge part of
// another index, an unsigned index, or no index at all is not activated.
func TestNodeVerifiesJointEdgePart(t *testing.T) {
	reg := registry.StartForTest(t)
	signed, p1 := reg.PushJointForTest(t, "models/j", "1", map[string]string{"a.onnx": "edge v1"}, map[string]string{"b.onnx": "cloud v1"}, artifact.PackOptions{})
	unsigned, p2 := reg.PushJointForTest(t, "models/j", "2", map[string]string{"a.onnx": "edge v2"}, map[string]string{"b.onnx": "cloud v2"}, artifact.PackOptions{})
	repo := reg.Host() + "/models/j"
	key, pub := signtest.CosignKeyPair(t)
	signtest.CosignSign(t, key, repo+"@"+signed.Digest.String())

	dir := signtest.CosignKeyDir(t, pub, "team-a", "cosign")
	rec := &statuses{last: map[string]agent.Status{}}
	a, err := agent.New(agent.Options{Root: t.TempDir(), Reporter: rec, Verify: trust.FromDir(dir, nil),
		Backoff: func(int) time.Duration { return 100 * time.Millisecond }, ResolveInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	src := make(source)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, src) }()
	t.Cleanup(func() { cancel(); <-done })

	const name = "team-a/model-j"
	edge := func(part digest.Digest, index digest.Digest) agent.Desired {
		v := agent.VerifyRef{Provider: "cosign", Keys: "cosign"}
		if index != "" {
			v.Index = index.String()
		}
		return agent.Desired{Name: name, Reference: repo + "@" + part.String(), Insecure: true, Verify: v}
	}
	src <- []agent.Desired{edge(p1.Edge.Digest, signed.Digest)}
	rec.wait(t, name, agent.Ready, p1.Edge.Digest, "")

	for _, c := range []struct {
		name string
		d    agent.Desired
		want string
	}{
		{"the edge part of another index", edge(p2.Edge.Digest, signed.Digest), "has another edge part"},
		{"the cloud part of the signed index", edge(p1.Cloud.Digest, signed.Digest), "has another edge part"},
		{"an unsigned index", edge(p2.Edge.Digest, unsigned.Digest), "no cosign signature"},
		{"no index: the part is not signed on its own", edge(p2.Edge.Digest, ""), "no cosign signature"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Back to the signed part first, so the failure waited for
			// is this case's, not the last one's.
			src <- []agent.Desired{edge(p1.Edge.Digest, signed.Digest)}
			rec.wait(t, name, agent.Ready, p1.Edge.Digest, "")
			src <- []agent.Desired{c.d}
			st := rec.wait(t, name, agent.Failed, p1.Edge.Digest, c.want)
			if refused := strings.TrimPrefix(c.d.Reference, repo+"@"); !strings.Contains(st.Message, refused) {
				t.Errorf("message %q does not name the refused digest %s", st.Message, refused)
			}
		})
	}
}
