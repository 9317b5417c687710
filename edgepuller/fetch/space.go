package fetch

import (
	"context"
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrNoSpace is returned (wrapped, with the numbers) by a Pull whose layers
// cannot fit on the store's filesystem. Nothing of the layers was fetched,
// so a version already in place stays as it is.
var ErrNoSpace = errors.New("not enough free space")

// checkSpace refuses, before the first layer byte, a pull whose layers
// still to fetch (less those in the store, less what partial downloads
// hold) do not fit in the free space of the store's filesystem: failing
// at once beats failing hours later with a full disk that also stops
// every other writer on it.
func (p *puller) checkSpace(ctx context.Context, layers []ocispec.Descriptor) error {
	var need int64
	n := 0
	seen := map[string]bool{}
	for _, l := range layers {
		if seen[l.Digest.String()] {
			continue
		}
		seen[l.Digest.String()] = true
		if ok, err := p.st.Exists(ctx, l); err != nil {
			return err
		} else if ok {
			continue
		}
		n++
		need += l.Size
		if st, err := p.st.Status(ctx, l.Digest); err == nil && st.Total == l.Size {
			need -= st.Offset
		}
	}
	if need <= 0 {
		return nil
	}
	free, err := p.st.Available()
	if err != nil || free < 0 {
		return nil // cannot tell: the pull fails on a full disk if it must
	}
	if need > free {
		return fmt.Errorf("%w: need %s for %d layer(s) still to fetch, %s free on %s; free space on that filesystem and pull again",
			ErrNoSpace, humanBytes(need), n, humanBytes(free), p.st.Root())
	}
	return nil
}

// humanBytes writes n in binary units, as df -h does.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
