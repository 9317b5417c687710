//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// timeline pulls the model once with each tool through the proxy and
// prints every request against the time since the tool started: where a
// cold pull spends its time before, during and after the downloads.
func (b *bench) timeline(ctx context.Context) error {
	tools := []tool{b.bargeTool(), b.orasTool()}
	if b.crane != "" {
		tools = append(tools, b.craneTool())
	}
	for _, t := range tools {
		base := filepath.Join(b.work, "timeline", t.name)
		b.proxy.reset()
		syscall.Sync()
		p, err := b.start(ctx, t.argv(b.proxied(b.model), filepath.Join(base, "out"), filepath.Join(base, "cache")), false)
		if err != nil {
			return err
		}
		r := p.wait()
		if r.err != nil {
			return fmt.Errorf("%s: %w\n%s", t.name, r.err, r.stderr)
		}
		ms := func(at time.Time) string {
			if at.IsZero() {
				return "-"
			}
			return fmt.Sprintf("%d", at.Sub(p.start).Milliseconds())
		}
		fmt.Printf("%s: exited after %d ms\n", t.name, r.wall.Milliseconds())
		fmt.Printf("  %-6s %-6s %-8s %-8s %-8s %-10s %s\n", "method", "status", "head ms", "1st ms", "end ms", "MiB", "path")
		for _, q := range b.proxy.requests() {
			path := shortPath(q.Path)
			if q.Range != "" {
				path += " (" + q.Range + ")"
			}
			fmt.Printf("  %-6s %-6d %-8s %-8s %-8s %-10.1f %s\n", q.Method, q.Status, ms(q.Start), ms(q.FirstByte), ms(q.End), float64(q.Bytes)/(1<<20), path)
		}
		os.RemoveAll(base)
	}
	return nil
}
