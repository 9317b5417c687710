package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/edgepuller/store"
	"github.com/bargeml/barge/edgepuller/unpack"
)

// Options configures Collect. The zero value keeps one previous version per
// artifact, sets no quota and discards partial downloads untouched for a week.
type Options struct {
	// Previous is how many versions besides the current one each artifact
	// keeps for a quick rollback, the most recently used first. If 0, 1 is
	// kept; if negative, none.
	Previous int
	// Quota bounds the bytes on disk of the store and of every artifact
	// directory together, each file counted once however many hard links it
	// has. Above it, the least recently used versions that are not current
	// are removed, oldest first, each followed by the blobs only it
	// referenced, until usage fits. 0 means no quota.
	Quota int64
	// IngestTTL is how long a partial download may go unwritten before it
	// counts as abandoned and is discarded. If <= 0, 7 days is used.
	IngestTTL time.Duration
	// Log receives a line per removal. If nil, nothing is logged.
	Log *slog.Logger
}

// DefaultIngestTTL is the IngestTTL used when Options leaves it unset.
const DefaultIngestTTL = 7 * 24 * time.Hour

// Result says what a collection did.
type Result struct {
	VersionsRemoved int
	BlobsDeleted    int
	IngestsAborted  int
	// BytesFreed counts the files that are gone from disk, not those that
	// lost one of their hard links.
	BytesFreed int64
	// Usage is the bytes on disk afterwards, as Options.Quota counts them.
	Usage int64
	// OverQuota is set when Usage still exceeds the quota: what is left is
	// current, pinned, or being downloaded.
	OverQuota bool
}

// Collect frees disk under the store st and the artifact directories roots
// (each the root given to unpack.Activate). It never removes a current
// version, a version or blob that a pinned manifest needs, or a partial
// download someone is writing.
//
// pinned lists manifests being pulled and not yet current: their config and
// layers are kept although no version references them yet, so a pull that
// found a blob in the store does not lose it before activating. A pinned
// manifest that is not in the store yet stops blob deletion altogether for
// this run, since its pull may be about to reuse any blob.
//
// The caller must make sure that nothing calls unpack.Activate or
// unpack.Remove on roots while Collect runs, and that every pull writing
// into st has its manifest in pinned.
func Collect(ctx context.Context, st *store.Store, roots []string, pinned []digest.Digest, opts Options) (Result, error) {
	c := &collector{st: st, roots: roots, pinned: pinned, opts: opts, log: opts.Log}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c.run(ctx)
}

type collector struct {
	st     *store.Store
	roots  []string
	pinned []digest.Digest
	opts   Options
	log    *slog.Logger
	res    Result
	// marked is what the last sweep kept; partial downloads of these are
	// never abandoned.
	marked map[digest.Digest]bool
}

// version is one materialized version of one artifact.
type version struct {
	root    string
	digest  digest.Digest
	current bool
	usedAt  time.Time
}

func (c *collector) run(ctx context.Context) (Result, error) {
	before, err := c.measure(ctx)
	if err != nil {
		return c.res, err
	}
	versions, err := c.versions()
	if err != nil {
		return c.res, err
	}
	versions, err = c.retain(versions)
	if err != nil {
		return c.res, err
	}
	if err := c.sweep(ctx, versions); err != nil {
		return c.res, err
	}
	if err := c.abandonedIngests(ctx); err != nil {
		return c.res, err
	}
	after, err := c.measure(ctx)
	if err != nil {
		return c.res, err
	}
	c.res.BytesFreed += before.freed(after)

	for c.opts.Quota > 0 && after.total() > c.opts.Quota {
		i := c.leastRecentlyUsed(versions)
		if i < 0 {
			c.res.OverQuota = true
			c.log.Warn("disk quota exceeded and nothing left to evict: everything on disk is current, pinned or being downloaded",
				"usage", after.total(), "quota", c.opts.Quota)
			break
		}
		v := versions[i]
		if err := c.remove(v, "least recently used version evicted to meet the disk quota"); err != nil {
			return c.res, err
		}
		versions = slices.Delete(versions, i, i+1)
		if err := c.sweep(ctx, versions); err != nil {
			return c.res, err
		}
		before = after
		if after, err = c.measure(ctx); err != nil {
			return c.res, err
		}
		c.res.BytesFreed += before.freed(after)
	}
	c.res.Usage = after.total()
	return c.res, nil
}

// versions lists every version under every root.
func (c *collector) versions() ([]version, error) {
	var out []version
	for _, root := range c.roots {
		ds, err := unpack.Versions(root)
		if err != nil {
			return nil, fmt.Errorf("gc: list versions of %s: %w", root, err)
		}
		cur, err := unpack.Current(root)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("gc: %w", err)
		}
		for _, d := range ds {
			fi, err := os.Lstat(versionDir(root, d))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("gc: %w", err)
			}
			out = append(out, version{root: root, digest: d, current: d == cur, usedAt: fi.ModTime()})
		}
	}
	return out, nil
}

// retain removes, per root, the versions beyond the current one, the pinned
// ones and the Previous most recently used, and returns what is left.
func (c *collector) retain(versions []version) ([]version, error) {
	keep := c.opts.Previous
	if keep == 0 {
		keep = 1
	}
	// Most recently used first, so the first `keep` of each root stay.
	slices.SortStableFunc(versions, func(a, b version) int { return b.usedAt.Compare(a.usedAt) })
	kept := map[string]int{}
	var out []version
	for _, v := range versions {
		if v.current || slices.Contains(c.pinned, v.digest) {
			out = append(out, v)
			continue
		}
		if kept[v.root] < keep {
			kept[v.root]++
			out = append(out, v)
			continue
		}
		if err := c.remove(v, "old version removed"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (c *collector) remove(v version, why string) error {
	if err := unpack.Remove(v.root, v.digest); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	c.res.VersionsRemoved++
	c.log.Info(why, "artifact", v.root, "digest", v.digest, "lastUsed", v.usedAt.Format(time.RFC3339))
	return nil
}

// leastRecentlyUsed returns the index of the oldest version that may be
// evicted, or -1.
func (c *collector) leastRecentlyUsed(versions []version) int {
	best := -1
	for i, v := range versions {
		if v.current || slices.Contains(c.pinned, v.digest) {
			continue
		}
		if best < 0 || v.usedAt.Before(versions[best].usedAt) {
			best = i
		}
	}
	return best
}

// sweep deletes the blobs that neither a kept version nor a pinned manifest
// references.
func (c *collector) sweep(ctx context.Context, versions []version) error {
	marked := map[digest.Digest]bool{}
	c.marked = marked
	for _, v := range versions {
		// A version whose manifest is gone from the store still has all its
		// files (they are hard links or extracted copies); only its blobs
		// cannot be told apart, and losing them costs a download at most.
		if _, err := c.mark(ctx, v.digest, marked); err != nil {
			return err
		}
	}
	for _, d := range c.pinned {
		found, err := c.mark(ctx, d, marked)
		if err != nil {
			return err
		}
		if !found {
			c.log.Debug("blob deletion skipped: a pull has not stored its manifest yet", "manifest", d)
			return nil
		}
	}
	return c.st.Walk(ctx, func(b store.BlobInfo) error {
		if marked[b.Digest] {
			return nil
		}
		err := c.st.Delete(ctx, ocispec.Descriptor{Digest: b.Digest, Size: b.Size})
		if errors.Is(err, errdef.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("gc: %w", err)
		}
		c.res.BlobsDeleted++
		c.log.Debug("unreferenced blob deleted", "digest", b.Digest, "size", b.Size)
		return nil
	})
}

// manifestRefs is what a manifest or an index references.
type manifestRefs struct {
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
	Manifests []ocispec.Descriptor `json:"manifests"`
}

// mark marks the manifest d and everything it references, following index
// members. It reports whether d is in the store.
func (c *collector) mark(ctx context.Context, d digest.Digest, marked map[digest.Digest]bool) (bool, error) {
	if marked[d] {
		return true, nil
	}
	path := c.st.BlobPath(d)
	if path == "" {
		return false, nil // not sha256: cannot be in this store
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("gc: %w", err)
	}
	marked[d] = true
	if fi.Size() > artifact.MaxManifestBytes {
		return true, nil // not a manifest Barge would have pulled
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return true, fmt.Errorf("gc: read manifest %s: %w", d, err)
	}
	var m manifestRefs
	if json.Unmarshal(b, &m) != nil {
		return true, nil
	}
	if m.Config != nil {
		marked[m.Config.Digest] = true
	}
	for _, l := range m.Layers {
		marked[l.Digest] = true
	}
	for _, sub := range m.Manifests {
		if _, err := c.mark(ctx, sub.Digest, marked); err != nil {
			return true, err
		}
	}
	return true, nil
}

// abandonedIngests discards partial downloads untouched for IngestTTL. One
// that is locked is being written, whatever its age says, and is skipped.
func (c *collector) abandonedIngests(ctx context.Context) error {
	ttl := c.opts.IngestTTL
	if ttl <= 0 {
		ttl = DefaultIngestTTL
	}
	ingests, err := c.st.ListIngests(ctx)
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	for _, in := range ingests {
		if time.Since(in.UpdatedAt) < ttl || c.marked[in.Digest] {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := c.st.AbortIngest(actx, in.Digest)
		cancel()
		switch {
		case err == nil:
			c.res.IngestsAborted++
			c.res.BytesFreed += in.Offset
			c.log.Info("abandoned partial download discarded", "digest", in.Digest, "bytes", in.Offset,
				"lastWritten", in.UpdatedAt.Format(time.RFC3339))
		case errors.Is(err, errdef.ErrNotFound), errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		default:
			return fmt.Errorf("gc: %w", err)
		}
	}
	return nil
}

// Touch records that the version dgst under root was in use at t: Collect
// keeps and evicts versions by it. The puller calls it when a version
// becomes current and when it stops being current.
func Touch(root string, dgst digest.Digest, t time.Time) error {
	return os.Chtimes(versionDir(root, dgst), t, t)
}

// versionDir is where unpack.Activate puts the version dgst.
func versionDir(root string, dgst digest.Digest) string {
	return filepath.Join(root, "versions", string(dgst.Algorithm())+"-"+dgst.Encoded())
}
