package reconciler

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/policy"
	"berth.dev/berth/render"
)

// EmptyRevision, given as a revision to PlanRevisions, stands for a
// repository with nothing in it: planning from it shows everything as new.
const EmptyRevision = "empty"

// Snapshotter reads the fleet repository at a revision.
type Snapshotter interface {
	Snapshot(ctx context.Context, rev string) (*gitsource.Snapshot, error)
}

// OfflineOptions configure PlanRevisions.
type OfflineOptions struct {
	// Path is the directory of the repository that holds the fleet.
	Path string
}

// PlanRevisions plans the change from one revision of the repository to
// another without contacting any machine: both are read from git, rendered
// and admitted, then compared. Files the two revisions share are decoded
// once. The plan's diagnostics are those of the revision planned to.
func PlanRevisions(ctx context.Context, repo Snapshotter, fromRev, toRev string, opts OfflineOptions) (*Plan, error) {
	cache := render.NewCache()
	var from, to Revision
	var fromErr, toErr error
	var wg sync.WaitGroup
	// Only the target's findings are shown, so the source revision is
	// decoded but neither validated nor admitted.
	wg.Go(func() { from, fromErr = loadRevision(ctx, repo, fromRev, opts, cache, false) })
	wg.Go(func() { to, toErr = loadRevision(ctx, repo, toRev, opts, cache, true) })
	wg.Wait()
	if err := errors.Join(fromErr, toErr); err != nil {
		return nil, err
	}
	p := NewPlan(from, to)
	if from.Desired != nil && from.Desired.Diagnostics.HasErrors() {
		p.Diagnostics = append(p.Diagnostics, render.Diagnostic{
			Severity: render.SeverityNote,
			Message: fmt.Sprintf("%s: %d document(s) do not decode; their objects count as absent",
				revLabel(from.Rev, from.Commit), from.Desired.Diagnostics.Errors()),
		})
		p.Diagnostics.Sort()
	}
	return p, nil
}

// LoadRevision reads, renders and admits the fleet at one revision (rev
// EmptyRevision gives an empty fleet). cache may be nil.
func LoadRevision(ctx context.Context, repo Snapshotter, rev string, opts OfflineOptions, cache *render.Cache) (Revision, error) {
	return loadRevision(ctx, repo, rev, opts, cache, true)
}

func loadRevision(ctx context.Context, repo Snapshotter, rev string, opts OfflineOptions, cache *render.Cache, check bool) (Revision, error) {
	if rev == EmptyRevision {
		return Revision{Rev: rev}, nil
	}
	snap, err := repo.Snapshot(ctx, rev)
	if err != nil {
		return Revision{}, err
	}
	d, err := render.Load(ctx, snap.FS, render.Options{Path: opts.Path, Cache: cache, SkipValidation: !check})
	if err != nil {
		return Revision{}, fmt.Errorf("revision %s: %w", rev, err)
	}
	if check {
		policy.Admit(d)
	}
	return Revision{Rev: rev, Commit: snap.Commit.Hash, Desired: d}, nil
}
