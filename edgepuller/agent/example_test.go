package agent_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"oras.land/oras-go/v2/registry/remote"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/agent"
	"github.com/bargeml/barge/registry"
)

// A node keeps one model as a fixed list says; workloads read it under
// artifacts/<name>/current.
func ExampleAgent_Run() {
	ctx := context.Background()
	reg, err := registry.Start(ctx, registry.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close(ctx)
	tmp, _ := os.MkdirTemp("", "agent-example-")
	defer os.RemoveAll(tmp)
	model := filepath.Join(tmp, "model")
	os.Mkdir(model, 0o755)
	os.WriteFile(filepath.Join(model, "model.onnx"), []byte("weights"), 0o644)
	repo, _ := remote.NewRepository(reg.Host() + "/models/pets")
	repo.PlainHTTP = true
	desc, _ := artifact.Pack(ctx, repo, model, artifact.PackOptions{})
	repo.Tag(ctx, desc, "v1")

	ready := make(chan agent.Status, 1)
	a, err := agent.New(agent.Options{
		Root: filepath.Join(tmp, "node"),
		Log:  slog.New(slog.DiscardHandler),
		Reporter: agent.ReporterFunc(func(s agent.Status) {
			if s.Phase == agent.Ready {
				select {
				case ready <- s:
				default:
				}
			}
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	src := agent.SourceFunc(func(ctx context.Context, set func([]agent.Desired)) error {
		set([]agent.Desired{{Name: "pets", Reference: reg.Host() + "/models/pets:v1", Insecure: true}})
		<-ctx.Done()
		return nil
	})
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- a.Run(ctx, src) }()

	s := <-ready
	b, _ := os.ReadFile(filepath.Join(s.Path, "model.onnx"))
	fmt.Printf("%s %s: %s\n", s.Name, s.Phase, b)
	fmt.Println("digest matches the push:", s.Digest == desc.Digest)
	cancel()
	fmt.Println("stopped:", <-done)
	// Output:
	// pets Ready: weights
	// digest matches the push: true
	// stopped: <nil>
}
