package reconciler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"berth.dev/berth/reconciler/live"
)

// SavedPlanKind and SavedPlanVersion identify a saved plan file.
const (
	SavedPlanKind    = "BerthPlan"
	SavedPlanVersion = 1
)

// ErrStalePlan is returned when a saved plan no longer describes what
// applying it would do: the branch moved, another controller wrote status,
// or a machine reports something else than when the plan was made. As
// Terraform does with a saved plan whose state changed, and Nomad with a
// job's check-index, the plan is refused rather than applied to a world it
// was not reviewed against.
var ErrStalePlan = errors.New("the plan is stale")

// SavedPlan is a plan against the machines written to a file (berth plan
// --out) to be applied later, unchanged (berth apply). It holds no Secret
// data: the pod sets themselves are planned again when applied and must
// come out as they were reviewed (their digests are kept here).
type SavedPlan struct {
	Kind    string    `json:"kind"`
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	// Repo is the repository as it was given; Rev the revision asked for
	// (a branch, usually) and Commit what it pointed at.
	Repo   string `json:"repo"`
	Rev    string `json:"rev"`
	Commit string `json:"commit"`
	// StatusBranch and StatusCommit are where the controller's memory was
	// read from ("" when there was no status yet).
	StatusBranch string `json:"statusBranch"`
	StatusCommit string `json:"statusCommit,omitempty"`
	// Observed are live.Fingerprints of what the machines reported.
	Observed map[string]string `json:"observed"`
	// Options are the pass's options; the plan is applied with them.
	Options live.Options `json:"options"`
	// Sends are, per machine told something, the digest of its new set.
	Sends map[string]string `json:"sends"`
	// Pass is the plan as shown.
	Pass *live.Pass `json:"pass"`
}

// NewSavedPlan records pass p, planned from obs at commit and from the
// memory found at statusCommit.
func NewSavedPlan(repo, rev, commit, statusBranch, statusCommit string, obs []live.Observed, opts live.Options, p *live.Pass) *SavedPlan {
	return &SavedPlan{
		Kind: SavedPlanKind, Version: SavedPlanVersion, Created: p.Now,
		Repo: repo, Rev: rev, Commit: commit,
		StatusBranch: statusBranch, StatusCommit: statusCommit,
		Observed: live.Fingerprints(obs),
		Options:  opts,
		Sends:    sends(p),
		Pass:     p,
	}
}

func sends(p *live.Pass) map[string]string {
	out := map[string]string{}
	for _, m := range p.Machines {
		if m.Send != nil {
			out[m.Name] = m.Send.Digest()
		}
	}
	return out
}

// ReadSavedPlan decodes a saved plan, refusing anything that is not one
// of this version.
func ReadSavedPlan(r io.Reader) (*SavedPlan, error) {
	b, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read the plan: %w", err)
	}
	var head struct {
		Kind    string `json:"kind"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("not a saved plan: %w", err)
	}
	if head.Kind != SavedPlanKind {
		return nil, fmt.Errorf("not a saved plan: kind is %q, want %q (write one with berth plan --out FILE)", head.Kind, SavedPlanKind)
	}
	if head.Version != SavedPlanVersion {
		return nil, fmt.Errorf("saved plan version %d, this berth reads version %d: plan again with this berth", head.Version, SavedPlanVersion)
	}
	var s SavedPlan
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode the plan: %w", err)
	}
	switch {
	case s.Commit == "":
		return nil, errors.New("saved plan: no commit")
	case s.Pass == nil:
		return nil, errors.New("saved plan: no pass")
	case s.Observed == nil:
		return nil, errors.New("saved plan: no observed state")
	}
	return &s, nil
}

// CheckSource refuses a plan whose revision now points elsewhere, or
// whose status branch another pass wrote to since.
func (s *SavedPlan) CheckSource(commit, statusCommit string) error {
	if commit != s.Commit {
		return fmt.Errorf("%w: %s was at %s when planned and is at %s now: plan again", ErrStalePlan, s.Rev, short(s.Commit), short(commit))
	}
	if statusCommit != s.StatusCommit {
		return fmt.Errorf("%w: the status branch %s moved from %s to %s since the plan (another pass ran): plan again",
			ErrStalePlan, s.StatusBranch, orNone(short(s.StatusCommit)), orNone(short(statusCommit)))
	}
	return nil
}

// CheckObserved refuses a plan when any machine reports something else
// than it did when the plan was made, naming the machines.
func (s *SavedPlan) CheckObserved(obs []live.Observed) error {
	now := live.Fingerprints(obs)
	var changed []string
	for _, m := range slices.Sorted(maps.Keys(union(s.Observed, now))) {
		was, ok1 := s.Observed[m]
		is, ok2 := now[m]
		switch {
		case !ok1:
			changed = append(changed, m+" (not in the plan)")
		case !ok2:
			changed = append(changed, m+" (not observed now)")
		case was != is:
			changed = append(changed, m)
		}
	}
	if len(changed) > 0 {
		return fmt.Errorf("%w: what the machines run changed since it was made (%s): plan again", ErrStalePlan, strings.Join(changed, ", "))
	}
	return nil
}

// CheckPass refuses a pass that would send other sets than the saved one.
func (s *SavedPlan) CheckPass(p *live.Pass) error {
	now := sends(p)
	var diff []string
	for _, m := range slices.Sorted(maps.Keys(union(s.Sends, now))) {
		if s.Sends[m] != now[m] {
			diff = append(diff, m)
		}
	}
	if len(diff) > 0 {
		return fmt.Errorf("%w: planned again, %s would be told something else than the plan says: plan again", ErrStalePlan, strings.Join(diff, ", "))
	}
	return nil
}

func union(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, b)
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// short abbreviates a commit hash as git log --oneline does.
func short(commit string) string {
	if len(commit) > 7 {
		return commit[:7]
	}
	return commit
}
