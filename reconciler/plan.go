package reconciler

import (
	"slices"

	"berth.dev/berth/render"
)

// Revision is one side of an offline plan: a commit of the fleet
// repository and what it renders to.
type Revision struct {
	// Rev is the revision as it was asked for ("HEAD~1", "main", "v1.4");
	// may be empty.
	Rev string
	// Commit is the commit id it resolved to; may be empty (an empty
	// repository, or a working tree).
	Commit string
	// Desired is the rendered repository at that commit; nil is empty.
	Desired *render.Desired
}

// Plan is what it takes to go from one revision of the fleet to another,
// ready to be shown for review.
type Plan struct {
	// From and To are commit ids.
	From, To string
	// FromRev and ToRev are the revisions as they were asked for.
	FromRev, ToRev string
	// Changes, sorted by object key.
	Changes []Change
	// Diagnostics of the revision planned to, sorted.
	Diagnostics render.Diagnostics
	Summary     Summary
}

// Summary counts the changes of a plan as Terraform does: a replace is
// one add and one destroy.
type Summary struct {
	Add, Change, Destroy int
}

// NewPlan compares two revisions of the fleet repository.
func NewPlan(from, to Revision) *Plan {
	p := &Plan{
		From: from.Commit, To: to.Commit,
		FromRev: from.Rev, ToRev: to.Rev,
		Changes: Diff(from.Desired, to.Desired),
	}
	if to.Desired != nil {
		p.Diagnostics = slices.Clone(to.Desired.Diagnostics)
	}
	p.Summary = Summarize(p.Changes)
	return p
}

// Summarize counts changes.
func Summarize(changes []Change) Summary {
	var s Summary
	for _, c := range changes {
		switch c.Action {
		case ActionCreate:
			s.Add++
		case ActionUpdate:
			s.Change++
		case ActionDelete:
			s.Destroy++
		case ActionReplace:
			s.Add++
			s.Destroy++
		}
	}
	return s
}

// HasChanges reports whether applying the plan would change anything.
func (p *Plan) HasChanges() bool { return len(p.Changes) > 0 }
