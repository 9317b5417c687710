package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/bargeml/barge/api/v1alpha1"
	"github.com/bargeml/barge/artifact"
	"github.com/bargeml/barge/selection"
)

// Reasons of spec.selection and of versions a rollout rolled back. All but
// InvalidSelection hold a version back while the running digest stays.
const (
	// ReasonInvalidSelection: an expression of spec.selection does not
	// compile.
	ReasonInvalidSelection = "InvalidSelection"
	// ReasonNoVersionPasses: no version of the range passes spec.selection.
	ReasonNoVersionPasses = "NoVersionPasses"
	// ReasonRequirementFailed: the version a tag or digest names fails
	// spec.selection.require.
	ReasonRequirementFailed = "RequirementFailed"
	// ReasonVersionRejected: the version a tag or digest names was rolled
	// back, and is not rolled out again.
	ReasonVersionRejected = "VersionRejected"
)

// HeldCondition is True while the version spec.targetVersion names (or
// the range's choice) is held back and the running digest kept; its
// reason and message say why. Like Reconciling and Stalled it is present
// only while true. It carries the hold between two resolutions, through
// passes whose other conditions speak of a rollout.
const HeldCondition = "VersionHeld"

// heldReason: a refusal that keeps the running digest. It changes only
// with new metrics or tags, so it is looked at again each interval rather
// than on every pass.
func heldReason(reason string) bool {
	switch reason {
	case ReasonNoVersionPasses, ReasonRequirementFailed, ReasonVersionRejected:
		return true
	}
	return false
}

const (
	// maxCandidates bounds the versions of a range read for spec.selection:
	// the newest that match.
	maxCandidates = 50
	// candidateReads is how many candidates are read at once, so a range
	// of fifty versions costs a few round trips, not fifty in a row.
	candidateReads = 4
)

// choose turns the source's version into the digest to run, as resolve
// does, then applies spec.selection and the rejected digests: a range
// picks the best candidate that passes and was not rolled back; a tag or
// digest must pass spec.selection.require and not have been rolled back,
// or the running digest is held (f.held says why).
func (f *resolveFacts) choose(ctx context.Context, rs *Resolver, resolved *v1alpha1.ResolvedArtifact, specChanged bool) (resolution, error) {
	policy, err := f.policy()
	if err != nil {
		return resolution{}, err
	}
	v := f.src.Version
	if !strings.HasPrefix(v, "sha256:") && isRange(v) && (policy != nil || len(f.rejected) > 0) {
		return f.chooseInRange(ctx, rs, policy, resolved, specChanged)
	}
	res, err := rs.resolve(ctx, f.repo, f.src)
	if err != nil {
		return resolution{}, err
	}
	return f.gate(ctx, rs, policy, res, resolved, specChanged)
}

// policy compiles spec.selection; nil when it asks nothing.
func (f *resolveFacts) policy() (*selection.Policy, error) {
	sel := f.selection
	if sel == nil || (len(sel.Require) == 0 && len(sel.Order) == 0) {
		return nil, nil
	}
	p, err := selection.Compile(sel.Require, sel.Order)
	if err != nil {
		return nil, stalledf(ReasonInvalidSelection, "spec.selection: %s; expressions are CEL over metrics, metadata and version, and `barge versions REPO --require ... --order ...` tries them locally", oneLine(err))
	}
	return p, nil
}

// oneLine keeps a CEL error's message without the source excerpt that
// follows it on separate lines, for a condition.
func oneLine(err error) string {
	var keep []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "|") {
			keep = append(keep, t)
		}
	}
	return clipTo(strings.Join(keep, "; "), 200)
}

// chooseInRange reads the newest maxCandidates versions of the range and
// picks with policy, or, without one, the newest not rolled back.
func (f *resolveFacts) chooseInRange(ctx context.Context, rs *Resolver, policy *selection.Policy, resolved *v1alpha1.ResolvedArtifact, specChanged bool) (resolution, error) {
	c, err := rangeOf(f.src.Version)
	if err != nil {
		return resolution{}, err
	}
	tags, err := matchingTags(ctx, f.repo, f.src, c)
	if err != nil {
		return resolution{}, err
	}
	if len(tags) > maxCandidates {
		tags = tags[:maxCandidates]
	}
	if policy == nil {
		return f.newestNotRejected(ctx, tags, resolved, specChanged)
	}
	cands, descs, err := rs.candidates(ctx, f.repo, f.src, tags)
	if err != nil {
		return resolution{}, err
	}
	var open []selection.Candidate
	var passedOver []string
	for _, c := range cands {
		if _, ok := f.rejected[c.Digest]; ok {
			passedOver = append(passedOver, c.Version)
			continue
		}
		open = append(open, c)
	}
	ch := policy.Choose(open)
	summary := policy.Summary(ch)
	if len(passedOver) > 0 {
		summary += fmt.Sprintf("; passed over %s (rolled back)", listVersions(passedOver))
	}
	best, ok := ch.Best()
	if !ok {
		return f.hold(ctx, resolved, specChanged, ReasonNoVersionPasses,
			fmt.Sprintf("no version matching %q passes spec.selection (%s)", f.src.Version, summary),
			"attach metrics with `barge metrics attach` or change spec.selection")
	}
	f.choiceReason = summary
	return resolution{Tag: best.Version, Descriptor: descs[best.Version]}, nil
}

// newestNotRejected is a range without spec.selection: the newest version
// that was not rolled back.
func (f *resolveFacts) newestNotRejected(ctx context.Context, tags []string, resolved *v1alpha1.ResolvedArtifact, specChanged bool) (resolution, error) {
	var passedOver []string
	for _, tag := range tags {
		desc, err := f.repo.Resolve(ctx, tag)
		if errors.Is(err, errdef.ErrNotFound) {
			continue // deleted since the list
		}
		if err != nil {
			return resolution{}, explain(err, f.src, fmt.Sprintf("tag %q", tag))
		}
		if _, ok := f.rejected[desc.Digest.String()]; ok {
			passedOver = append(passedOver, tag)
			continue
		}
		if len(passedOver) > 0 {
			f.choiceReason = fmt.Sprintf("newest not rolled back; passed over %s", listVersions(passedOver))
		}
		return resolution{Tag: tag, Descriptor: desc}, nil
	}
	return f.hold(ctx, resolved, specChanged, ReasonVersionRejected,
		fmt.Sprintf("every version matching %q was rolled back (%s)", f.src.Version, listVersions(passedOver)),
		"push a new version or change spec.targetVersion")
}

// gate checks the one version a tag or digest names: it must not have been
// rolled back, and must pass spec.selection.require.
func (f *resolveFacts) gate(ctx context.Context, rs *Resolver, policy *selection.Policy, res resolution, resolved *v1alpha1.ResolvedArtifact, specChanged bool) (resolution, error) {
	d := res.Descriptor.Digest.String()
	name := versionText(&v1alpha1.ResolvedArtifact{Version: res.Tag, Digest: d})
	if why, ok := f.rejected[d]; ok {
		return f.hold(ctx, resolved, specChanged, ReasonVersionRejected,
			fmt.Sprintf("%s was rolled back (%s) and is not rolled out again", name, clipTo(why, 100)),
			"push a new version or change spec.targetVersion")
	}
	if policy == nil {
		return res, nil
	}
	c, ok, err := rs.candidate(ctx, f.repo, f.src, res.Tag, res.Descriptor)
	if err != nil {
		return resolution{}, err
	}
	if !ok {
		// Not an artifact at all: the inspect phase says so.
		return res, nil
	}
	ch := policy.Choose([]selection.Candidate{c})
	if _, ok := ch.Best(); !ok {
		r := ch.Refused[0]
		msg := fmt.Sprintf("%s fails spec.selection.require %s", name, clipTo(r.Require, 100))
		if r.Err != nil {
			msg += fmt.Sprintf(" (%s)", clipTo(r.Err.Error(), 60))
		}
		return f.hold(ctx, resolved, specChanged, ReasonRequirementFailed, msg,
			"attach metrics with `barge metrics attach` or change spec.selection")
	}
	f.choiceReason = policy.Summary(ch)
	return res, nil
}

// hold keeps the running digest when the version asked for may not roll
// out: the pass goes on with status.resolved, so no node moves, and
// f.held says why. With nothing running yet, or when the repository
// (spec.artifact changed) does not have the running digest, nothing can be
// kept: that is a stalled failure.
func (f *resolveFacts) hold(ctx context.Context, resolved *v1alpha1.ResolvedArtifact, specChanged bool, reason, msg, hint string) (resolution, error) {
	if resolved == nil || resolved.Digest == "" {
		return resolution{}, stalledf(reason, "%s; nothing runs until one does: %s", msg, hint)
	}
	if specChanged {
		if _, err := f.repo.Resolve(ctx, resolved.Digest); err != nil {
			if errors.Is(err, errdef.ErrNotFound) {
				// Not a held reason: the passes until one passes must not
				// deploy status.resolved from this repository.
				return resolution{}, stalledf(ReasonVersionNotFound, "%s, and %s has no %s to keep: %s", msg, f.src.Repository, versionText(resolved), hint)
			}
			return resolution{}, explain(err, f.src, "manifest "+resolved.Digest)
		}
	}
	kept := versionText(resolved) + " keeps running"
	if _, ok := f.rejected[resolved.Digest]; ok {
		// Rolled back itself: the rollout keeps the nodes where it took them.
		kept = "the nodes stay on the version they were rolled back to"
	}
	f.held = stalledf(reason, "%s; %s: %s", msg, kept, hint)
	f.choiceReason = resolved.Reason
	return resolutionOf(resolved), nil
}

// heldBefore is the hold the last resolution found, for the passes
// between two resolutions, which keep it as they keep status.resolved.
func heldBefore(conds []metav1.Condition) *failure {
	c := apimeta.FindStatusCondition(conds, HeldCondition)
	if c == nil || c.Status != metav1.ConditionTrue || !heldReason(c.Reason) {
		return nil
	}
	return stalledf(c.Reason, "%s", c.Message)
}

// setHeld writes the HeldCondition: present while held.
func setHeld(conds *[]metav1.Condition, generation int64, held *failure) {
	if held == nil {
		apimeta.RemoveStatusCondition(conds, HeldCondition)
		return
	}
	apimeta.SetStatusCondition(conds, metav1.Condition{Type: HeldCondition, Status: metav1.ConditionTrue, Reason: held.reason, Message: held.message, ObservedGeneration: generation})
}

// listVersions names a few versions: "1.4.0, 1.3.0 and 2 more".
func listVersions(vs []string) string {
	if len(vs) <= 3 {
		return strings.Join(vs, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(vs[:3], ", "), len(vs)-3)
}

// candidates reads the versions that tags name, at most candidateReads at
// a time, in the order of tags. A tag deleted meanwhile, or a version that
// is not a readable artifact, is left out; a registry failure fails all.
// descs holds each candidate's manifest descriptor by version.
func (r *Resolver) candidates(ctx context.Context, repo *remote.Repository, src source, tags []string) ([]selection.Candidate, map[string]ocispec.Descriptor, error) {
	read := make([]*selection.Candidate, len(tags))
	found := make([]ocispec.Descriptor, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(candidateReads)
	for i, tag := range tags {
		g.Go(func() error {
			desc, err := repo.Resolve(gctx, tag)
			if errors.Is(err, errdef.ErrNotFound) {
				return nil
			}
			if err != nil {
				return explain(err, src, fmt.Sprintf("tag %q", tag))
			}
			c, ok, err := r.candidate(gctx, repo, src, tag, desc)
			if err != nil || !ok {
				return err
			}
			read[i], found[i] = &c, desc
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	var out []selection.Candidate
	descs := map[string]ocispec.Descriptor{}
	for i, c := range read {
		if c != nil {
			out = append(out, *c)
			descs[c.Version] = found[i]
		}
	}
	return out, descs, nil
}

// candidate reads what spec.selection sees of one version: its metadata
// (the manifest, cached by digest) and metrics (cached by their
// referrers). ok is false for a version that is not a readable artifact.
// Metrics that cannot be read leave the candidate without metrics, so it
// fails the requirements that read them, rather than stopping the choice.
func (r *Resolver) candidate(ctx context.Context, repo *remote.Repository, src source, tag string, desc ocispec.Descriptor) (selection.Candidate, bool, error) {
	log := ctrl.LoggerFrom(ctx)
	in, err := r.inspect(ctx, &repo, src, desc)
	var f *failure
	if errors.As(err, &f) && f.reason == ReasonInvalidArtifact {
		log.Info("leaving out a version that cannot be read", "version", tag, "digest", desc.Digest, "error", err)
		return selection.Candidate{}, false, nil
	}
	if err != nil {
		return selection.Candidate{}, false, err
	}
	metrics, err := r.latestMetrics(ctx, repo, src, desc)
	if errors.Is(err, artifact.ErrInvalid) || errors.Is(err, errTooManyPages) {
		log.Info("a version's metrics cannot be read; it is taken as having none", "version", tag, "digest", desc.Digest, "error", err)
		metrics, err = nil, nil
	}
	if err != nil {
		return selection.Candidate{}, false, err
	}
	return selection.Candidate{Version: tag, Digest: desc.Digest.String(), Metrics: metrics, Metadata: in.Artifact.Described()}, true, nil
}

// metricsCache keeps the newest metrics of versions by the set of their
// metrics referrers. Referrers are content-addressed, so a set read once
// never needs reading again; a new one (barge metrics attach) makes a new
// set, which is read. Each pass still lists the referrers: one request.
type metricsCache struct {
	mu sync.Mutex
	m  map[string]map[string]float64
}

func (c *metricsCache) get(key string) (map[string]float64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.m[key]
	return m, ok
}

// put keeps at most maxCached sets; past it the cache starts over.
func (c *metricsCache) put(key string, m map[string]float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = map[string]map[string]float64{}
	}
	c.m[key] = m
}

// maxMetricsReferrers bounds the metrics referrers read of one version:
// with fifty candidates a pass could otherwise read thousands of metrics
// documents that anyone who may push to the repository attached.
const maxMetricsReferrers = 64

// newestReferrers keeps the n newest referrers by their creation time
// (barge metrics attach sets it), in the order given.
func newestReferrers(refs []ocispec.Descriptor, n int) []ocispec.Descriptor {
	if len(refs) <= n {
		return refs
	}
	sorted := slices.Clone(refs)
	created := func(d ocispec.Descriptor) time.Time {
		t, _ := time.Parse(time.RFC3339, d.Annotations[ocispec.AnnotationCreated])
		return t // zero, the oldest, when absent or not a time
	}
	slices.SortStableFunc(sorted, func(a, b ocispec.Descriptor) int { return created(b).Compare(created(a)) })
	keep := map[string]bool{}
	for _, r := range sorted[:n] {
		keep[r.Digest.String()] = true
	}
	return slices.DeleteFunc(slices.Clone(refs), func(r ocispec.Descriptor) bool { return !keep[r.Digest.String()] })
}

// metricsKey names a set of referrers of a repository.
func metricsKey(repository string, refs []ocispec.Descriptor) string {
	ds := make([]string, len(refs))
	for i, ref := range refs {
		ds[i] = ref.Digest.String()
	}
	slices.Sort(ds)
	return repository + "|" + strings.Join(ds, ",")
}

// latestMetrics is the newest value of each metric of desc, read with the
// same code `barge versions` uses. The map is shared with the cache: read
// it, never write it.
func (r *Resolver) latestMetrics(ctx context.Context, repo *remote.Repository, src source, desc ocispec.Descriptor) (map[string]float64, error) {
	refs, err := artifact.MetricsReferrers(withPageBudget(ctx, maxReferrerPages), repo, desc)
	if err != nil {
		return nil, metricsFailure(err, src, desc)
	}
	if len(refs) == 0 {
		return nil, nil
	}
	refs = newestReferrers(refs, maxMetricsReferrers)
	key := metricsKey(src.Repository, refs)
	if m, ok := r.metricsCache.get(key); ok {
		return m, nil
	}
	records, err := artifact.ReadMetrics(ctx, repo, refs)
	if err != nil {
		return nil, metricsFailure(err, src, desc)
	}
	latest := artifact.Latest(records)
	r.metricsCache.put(key, latest)
	return latest, nil
}

// withHeld is the outcome the conditions show: a held version stalls an
// object that is otherwise ready, since what its spec asks for does not
// run (kstatus reports it Failed, not Current); a failure or a rollout
// under way speaks first.
func withHeld(o outcome, held *failure) outcome {
	if held != nil && o.failure == nil && o.progressReason == "" {
		o.failure = held
	}
	return o
}

// heldEvent tells the user once of each hold: when the HeldCondition
// appears or says something new.
func heldEvent(emit func(eventType, reason, action, note string, args ...any), held *failure, before, after []metav1.Condition) {
	if held == nil {
		return
	}
	b := apimeta.FindStatusCondition(before, HeldCondition)
	a := apimeta.FindStatusCondition(after, HeldCondition)
	if a != nil && (b == nil || b.Reason != a.Reason || b.Message != a.Message) {
		emit(corev1.EventTypeWarning, held.reason, "Resolve", "%s", held.message)
	}
}
