package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bargeml/barge/artifact"
)

// selectedUpdate is an update chosen for the round, with what its
// update.json says once it is downloaded.
type selectedUpdate struct {
	artifact.Update
	Desc ocispec.Descriptor
	// Dir holds its files once fetched.
	Dir string
}

// name is how errors name an update: by node and digest, which is what a
// user needs to find the node's log and the artifact.
func (u selectedUpdate) name() string {
	return fmt.Sprintf("update %s from node %s", shortDigest(string(u.Desc.Digest)), u.Node)
}

// selectUpdates takes the --update digests, each of which must be an update
// of this base, round and run; or, without --update, every update referrer
// of the base of this round and run, leaving out (and saying so) those of
// other rounds and runs. Updates are sorted by node, so that the same set
// gives the same sums and the same digest.
func (ag *aggregation) selectUpdates(ctx context.Context) ([]selectedUpdate, error) {
	var chosen []selectedUpdate
	if len(ag.f.updates) > 0 {
		for _, arg := range ag.f.updates {
			u, err := ag.namedUpdate(ctx, arg)
			if err != nil {
				return nil, err
			}
			if err := ag.belongs(u); err != nil {
				return nil, fmt.Errorf("aggregate: %s: %w", u.name(), err)
			}
			chosen = append(chosen, u)
		}
	} else {
		var err error
		if chosen, err = ag.referrerUpdates(ctx); err != nil {
			return nil, err
		}
	}
	if len(chosen) == 0 {
		return nil, fmt.Errorf("aggregate: %s has no updates of round %d%s in %s/%s: nothing to average; check that the nodes uploaded them (NodeArtifact status.upload)",
			shortDigest(string(ag.base.Digest)), ag.f.round, ag.runText(), ag.updRef.Registry, ag.updRef.Repository)
	}
	sort.Slice(chosen, func(i, j int) bool {
		if chosen[i].Node != chosen[j].Node {
			return chosen[i].Node < chosen[j].Node
		}
		return chosen[i].Desc.Digest < chosen[j].Desc.Digest
	})
	for i := 1; i < len(chosen); i++ {
		a, b := chosen[i-1], chosen[i]
		if a.Desc.Digest == b.Desc.Digest {
			return nil, fmt.Errorf("aggregate: %s is given twice", a.name())
		}
		if a.Node == b.Node {
			return nil, fmt.Errorf("aggregate: node %s has two updates in round %d, %s and %s: pass the one to average with --update", a.Node, ag.f.round, a.Desc.Digest, b.Desc.Digest)
		}
	}
	if ag.f.run == "" {
		for _, u := range chosen[1:] {
			if u.Run != chosen[0].Run {
				return nil, fmt.Errorf("aggregate: round %d has updates of two training runs (%s from node %s, %s from node %s): pass --run to choose one", ag.f.round, orNone(chosen[0].Run), chosen[0].Node, orNone(u.Run), u.Node)
			}
		}
	}
	return chosen, nil
}

// namedUpdate reads the manifest of an --update argument: a digest in the
// updates repository, or REPO@DIGEST.
func (ag *aggregation) namedUpdate(ctx context.Context, arg string) (selectedUpdate, error) {
	ref := ag.updRef
	repo := ag.updRepo
	if _, err := digest.Parse(arg); err == nil {
		ref.Reference = arg
	} else {
		var err error
		if ref, repo, err = ag.f.rf.open(arg); err != nil {
			return selectedUpdate{}, fmt.Errorf("aggregate: --update: %w", err)
		}
		if _, err := digest.Parse(ref.Reference); err != nil {
			return selectedUpdate{}, fmt.Errorf("aggregate: --update %s: name the update by digest, as in %s/%s@sha256:…", arg, ref.Registry, ref.Repository)
		}
		if ref.Registry != ag.updRef.Registry || ref.Repository != ag.updRef.Repository {
			return selectedUpdate{}, fmt.Errorf("aggregate: --update %s is not in the updates repository %s/%s: give --updates-repo", arg, ag.updRef.Registry, ag.updRef.Repository)
		}
	}
	desc, err := resolve(ctx, repo, ref)
	if err != nil {
		return selectedUpdate{}, fmt.Errorf("aggregate: update %s: %w", ref.Reference, err)
	}
	return ag.readUpdate(ctx, desc)
}

// readUpdate reads an update's manifest and annotations.
func (ag *aggregation) readUpdate(ctx context.Context, desc ocispec.Descriptor) (selectedUpdate, error) {
	a, err := artifact.Inspect(ctx, ag.updRepo, desc)
	if err != nil {
		return selectedUpdate{}, fmt.Errorf("aggregate: update %s: %w", desc.Digest, explain(err, ag.updRef))
	}
	u, err := artifact.UpdateOf(a)
	if err != nil {
		return selectedUpdate{}, fmt.Errorf("aggregate: %w", err)
	}
	return selectedUpdate{Update: u, Desc: desc}, nil
}

// belongs checks that an update was trained from this base, in this round
// and run: a stale update from an earlier round must never be mixed in.
func (ag *aggregation) belongs(u selectedUpdate) error {
	switch {
	case u.Base.Digest != ag.base.Digest:
		return fmt.Errorf("it was trained from %s, not from the base %s: it belongs to another round", shortDigest(string(u.Base.Digest)), shortDigest(string(ag.base.Digest)))
	case u.Round != ag.f.round:
		return fmt.Errorf("it is of round %d, not %d", u.Round, ag.f.round)
	case ag.f.run != "" && u.Run != ag.f.run:
		return fmt.Errorf("it is of training run %s, not %s", orNone(u.Run), ag.f.run)
	}
	return nil
}

// referrerUpdates lists the base's update referrers and keeps those of
// this round and run.
func (ag *aggregation) referrerUpdates(ctx context.Context) ([]selectedUpdate, error) {
	refs, err := artifact.UpdateReferrers(ctx, ag.updRepo, ag.base)
	if err != nil {
		return nil, fmt.Errorf("aggregate: %w", explain(err, ag.updRef))
	}
	var chosen []selectedUpdate
	var left []string
	for _, d := range refs {
		u, err := ag.readUpdate(ctx, d)
		if err != nil {
			// Without its annotations it cannot be told to belong here.
			fmt.Fprintf(ag.s.err, "Warning: left out %s: %v\n", d.Digest, err)
			continue
		}
		if err := ag.belongs(u); err != nil {
			left = append(left, fmt.Sprintf("%s (%v)", u.name(), err))
			continue
		}
		chosen = append(chosen, u)
	}
	if len(left) > 0 {
		fmt.Fprintf(ag.s.err, "Left out %d update(s) of other rounds or runs: %s\n", len(left), strings.Join(left, "; "))
	}
	return chosen, nil
}

func (ag *aggregation) runText() string {
	if ag.f.run == "" {
		return ""
	}
	return " of run " + ag.f.run
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
