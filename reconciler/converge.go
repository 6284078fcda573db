package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/render"
)

// Machines is what the apply loop needs of the fleet: what every agent
// reports, and handing one machine its pod set (package nodes/fleet, over
// SSH).
type Machines interface {
	Observe(ctx context.Context) ([]live.Observed, error)
	SetPods(ctx context.Context, machine string, pods api.DesiredPods) error
	SetNetwork(ctx context.Context, machine string, n api.Network) error
}

// DefaultPoll is how often Converge looks again while the fleet changes,
// at most: a pass that takes longer waits PollRatio times its own length
// before the next, so that the controller spends at most a fifth of its
// time planning however large the fleet.
const (
	DefaultPoll = 50 * time.Millisecond
	PollRatio   = 4
)

// pollWait is the wait after a pass that took took.
func pollWait(poll, took time.Duration) time.Duration {
	return max(poll, PollRatio*took)
}

// Converge applies one desired state until the fleet has converged on it:
// observe, plan (package live), send every machine its set, and again,
// until a pass finds nothing to do and every wanted pod ready, or ctx ends.
// Each step is idempotent, so a Converge killed at any point is finished by
// the next one.
type Converge struct {
	Machines Machines
	Options  live.Options
	// Poll is the wait between passes while something changes
	// (DefaultPoll when zero).
	Poll time.Duration
	// Progress, when set, is told about every pass.
	Progress func(p *live.Pass)
	Logger   *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// First, when set, is what the machines reported just before Run; the
	// first pass plans from it instead of asking again (berth apply has
	// checked it against a saved plan).
	First []live.Observed
	// Verify, when set, sees the first pass before anything is sent; an
	// error ends Run with nothing sent (berth apply: the pass must send
	// what the saved plan says).
	Verify func(p *live.Pass) error

	resolver *machineResolver // made on first use
}

// Result is where Converge stopped.
type Result struct {
	// Pass is the last pass; Observed what it was planned from.
	Pass     *live.Pass
	Observed []live.Observed
	// Passes counts the passes made.
	Passes int
	// SendErrors are the machines that refused or did not take their set
	// in the last pass.
	SendErrors []error
	// NetworksSent counts the machines handed a new Network in the last
	// pass; NetworkErrors are those that refused it or report that it did
	// not apply.
	NetworksSent  int
	NetworkErrors []error
}

// Converged says whether the last pass found the fleet converged: every
// machine holds its pod set and its Network, applied, and every wanted pod
// is ready.
func (r *Result) Converged() bool {
	return r.Pass != nil && r.Pass.Converged && len(r.SendErrors) == 0
}

// Run converges the fleet on desired, starting from memory. It returns
// when the fleet has converged (Result.Pass.Converged), when ctx ends (with
// the last pass and ctx's error), or when a pass cannot be planned.
func (c *Converge) Run(ctx context.Context, desired *render.Desired, memory live.Memory) (*Result, error) {
	poll := c.Poll
	if poll == 0 {
		poll = DefaultPoll
	}
	now := c.Now
	if now == nil {
		now = time.Now
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := &Result{}
	last := map[string]*api.DesiredPods{}
	first, verify := c.First, c.Verify
	for {
		t0 := time.Now()
		if err := c.step(ctx, desired, &memory, last, res, now(), first, verify, log); err != nil {
			return res, err
		}
		first, verify = nil, nil
		p := res.Pass
		if res.Converged() {
			return res, nil
		}
		wait := pollWait(poll, time.Since(t0))
		if !p.Wake.IsZero() && p.Changes() == 0 {
			wait = min(max(p.Wake.Sub(now()), wait), 10*wait)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// step is one pass: observe, plan from *memory, send; res and *memory
// take its outcome, last the sets sent.
// A non-nil obs is used instead of observing; verify, when set, may veto
// the pass before anything is sent.
func (c *Converge) step(ctx context.Context, desired *render.Desired, memory *live.Memory, last map[string]*api.DesiredPods, res *Result, now time.Time, obs []live.Observed, verify func(*live.Pass) error, log *slog.Logger) error {
	if obs == nil {
		var err error
		if obs, err = c.Machines.Observe(ctx); err != nil {
			return fmt.Errorf("observe the fleet: %w", err)
		}
	}
	p, err := live.Plan(live.Input{Desired: desired, Observed: obs, Memory: *memory, Last: last, Now: now}, c.Options)
	if err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	if verify != nil {
		if err := verify(p); err != nil {
			return err
		}
	}
	res.Pass, res.Observed = p, obs
	res.Passes++
	res.NetworksSent, res.NetworkErrors = 0, nil
	if err := c.networks(ctx, desired, obs, p, last, res, log); err != nil {
		return err
	}
	*memory = p.Memory
	res.SendErrors = c.send(ctx, p, last, log)
	if c.Progress != nil {
		c.Progress(p)
	}
	return nil
}

// send hands every machine that has a new set its set, all at once.
func (c *Converge) send(ctx context.Context, p *live.Pass, last map[string]*api.DesiredPods, log *slog.Logger) []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, m := range p.Machines {
		if m.Send == nil {
			continue
		}
		wg.Go(func() {
			err := c.Machines.SetPods(ctx, m.Name, *m.Send)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					log.Warn("set pods", "machine", m.Name, "generation", m.Send.Generation, "err", err)
				}
				errs = append(errs, err)
				return
			}
			last[m.Name] = m.Send
			log.Info("set pods", "machine", m.Name, "generation", m.Send.Generation, "pods", len(m.Send.Pods))
		})
	}
	wg.Wait()
	return errs
}
