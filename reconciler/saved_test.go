package reconciler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/reconciler/live"
)

// savePlan plans desired against a and round-trips the plan through JSON,
// as berth plan --out and berth apply do.
func savePlan(t *testing.T, a *agents, mem live.Memory, commit string) (*SavedPlan, []live.Observed) {
	t.Helper()
	d := quickstartDesired(t)
	obs, err := a.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p, err := live.Plan(live.Input{Desired: d, Observed: obs, Memory: mem, Now: time.Unix(1000, 0)}, live.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(NewSavedPlan("fleet.git", "main", "c0ffee1234", "berth/status", "", obs, live.Options{}, p)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "\"send\"") {
		t.Fatal("the saved plan holds the pod sets (they carry Secret data)")
	}
	s, err := ReadSavedPlan(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return s, obs
}

func TestSavedPlanApply(t *testing.T) {
	a := newAgents("lab1", "lab2", "lab3")
	s, obs := savePlan(t, a, live.Memory{}, "c0ffee1234")
	if len(s.Sends) != 3 {
		t.Fatalf("saved plan sends to %d machines, want 3", len(s.Sends))
	}
	if err := s.CheckSource("c0ffee1234", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckObserved(obs); err != nil {
		t.Fatal(err)
	}
	// Applied unchanged: the first pass is the plan, and it converges.
	c := &Converge{Machines: a, Poll: time.Millisecond, First: obs, Verify: s.CheckPass}
	res, err := c.Run(context.Background(), quickstartDesired(t), live.Memory{})
	if err != nil || !res.Pass.Converged {
		t.Fatalf("apply of an unchanged plan: %v", err)
	}
}

func TestSavedPlanRefused(t *testing.T) {
	a := newAgents("lab1", "lab2", "lab3")
	s, obs := savePlan(t, a, live.Memory{}, "c0ffee1234")

	if err := s.CheckSource("beef000000", ""); !errors.Is(err, ErrStalePlan) || !strings.Contains(err.Error(), "at c0ffee1 when planned and is at beef000") {
		t.Errorf("branch moved: %v", err)
	}
	if err := s.CheckSource("c0ffee1234", "5747u5"); !errors.Is(err, ErrStalePlan) || !strings.Contains(err.Error(), "status branch") {
		t.Errorf("status moved: %v", err)
	}

	// Someone else applied it in the meantime: lab2 holds a set now.
	c := &Converge{Machines: a, Poll: time.Millisecond}
	if _, err := c.Run(context.Background(), quickstartDesired(t), live.Memory{}); err != nil {
		t.Fatal(err)
	}
	now, _ := a.Observe(context.Background())
	err := s.CheckObserved(now)
	if !errors.Is(err, ErrStalePlan) || !strings.Contains(err.Error(), "lab1, lab2, lab3") {
		t.Errorf("machines changed: %v", err)
	}
	lost := obs[:2]
	if err := s.CheckObserved(lost); err == nil || !strings.Contains(err.Error(), "lab3 (not observed now)") {
		t.Errorf("a machine not observed: %v", err)
	}

	// A pass that would send something else is vetoed before anything is
	// sent.
	b := newAgents("lab1", "lab2", "lab3")
	sends := b.sends
	c = &Converge{Machines: b, Poll: time.Millisecond, Verify: func(p *live.Pass) error {
		p.Machines[0].Send.Pods = nil // another set than planned
		return s.CheckPass(p)
	}}
	if _, err := c.Run(context.Background(), quickstartDesired(t), live.Memory{}); !errors.Is(err, ErrStalePlan) || b.sends != sends {
		t.Errorf("vetoed pass: %v, %d sends", err, b.sends-sends)
	}
}

func TestReadSavedPlanErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{`:                                "not a saved plan",
		`{"kind":"Deployment"}`:            `kind is "Deployment"`,
		`{"kind":"BerthPlan","version":9}`: "version 9",
		`{"kind":"BerthPlan","version":1}`: "no commit",
		`{"kind":"BerthPlan","version":1,"commit":"c"}`: "no pass",
	} {
		_, err := ReadSavedPlan(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}
