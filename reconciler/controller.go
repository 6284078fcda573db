package reconciler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/status"
	"berth.dev/berth/render"
)

// Defaults of a Controller.
const (
	DefaultResync        = 2 * time.Second
	DefaultStatusEvery   = 5 * time.Second
	DefaultLoadRetryWait = 5 * time.Second
)

// Controller is berth serve's loop: it follows the commits of the watched
// branch and keeps the fleet converged on the newest one that applies. A
// commit that does not render or is denied is reported (status Failed, at
// file:line) while the last good one keeps running; the next good commit
// proceeds. Passes run while the fleet changes, every Resync once it has
// converged (machines may fail), and at the planner's wake time (CronJobs).
type Controller struct {
	Converge Converge
	// Load renders and admits one commit of the branch.
	Load func(ctx context.Context, commit string) (*render.Desired, error)
	// Status records the outcome for a commit (status branch and note).
	Status func(ctx context.Context, in status.Input) error
	// Resync is the pass interval once converged (DefaultResync): how soon
	// a pod that stops being ready leaves the endpoints, or a machine that
	// fails gives up its LoadBalancer addresses.
	Resync time.Duration
	// StatusEvery bounds how often status is written while a commit rolls
	// out (DefaultStatusEvery); the outcome changing is written at once.
	StatusEvery time.Duration
	Logger      *slog.Logger
}

// Run follows commits until ctx ends. memory and running are what the
// status branch held (the previous controller's memory and the commit it
// ran).
func (c *Controller) Run(ctx context.Context, commits <-chan string, memory live.Memory, running string) error {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cv := c.Converge
	poll := cv.Poll
	if poll == 0 {
		poll = DefaultPoll
	}
	now := cv.Now
	if now == nil {
		now = time.Now
	}
	resync, every := c.Resync, c.StatusEvery
	if resync == 0 {
		resync = DefaultResync
	}
	if every == 0 {
		every = DefaultStatusEvery
	}

	var (
		desired *render.Desired
		current string // the commit being applied
		failed  string // the last commit that did not apply
		// failedProblems are failed's problems while it is the newest
		// commit seen: the status keeps saying it failed while the running
		// commit's passes go on (a rollout still finishing, say).
		failedProblems []string
		keepFailure    bool   // the commit being loaded is the fallback for failed
		pending        string // the newest commit seen, not yet loaded
		last           = map[string]*api.DesiredPods{}
		res            = &Result{}
		outcome        string
		written        time.Time
		loadRetry      <-chan time.Time
	)
	for {
		if pending != "" && pending != current && pending != failed {
			d, err := c.Load(ctx, pending)
			switch {
			case err != nil && ctx.Err() != nil:
				return nil
			case err != nil:
				// Not the commit's fault (the repository could not be
				// read): try again.
				log.Warn("load commit", "commit", pending, "err", err)
				loadRetry = time.After(DefaultLoadRetryWait)
			case d.Diagnostics.HasErrors():
				problems := d.Diagnostics.ErrorLines()
				log.Warn("commit does not apply; the last good one keeps running", "commit", pending, "running", current, "problems", len(problems))
				// The running commit's last pass and the memory stay in
				// the status beside the failure.
				c.writeStatus(ctx, status.Input{Commit: pending, Problems: problems, Running: current, Pass: res.Pass, Observed: res.Observed, Memory: &memory}, log)
				failed, failedProblems = pending, problems
				pending = ""
				if desired == nil && running != "" && running != failed {
					// A restarted controller whose branch is broken carries
					// on with the commit the status says ran.
					pending, running = running, ""
					keepFailure = true
					continue
				}
			default:
				log.Info("applying commit", "commit", pending, "previous", current)
				desired, current, pending = d, pending, ""
				if !keepFailure {
					failedProblems = nil
				}
				keepFailure = false
				outcome, written = "", time.Time{}
			}
		}

		wait := resync
		if desired != nil {
			t0 := time.Now()
			if err := cv.step(ctx, desired, &memory, last, res, now(), nil, nil, log); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, live.ErrEmptyRender) {
					// Refused as a whole, like a commit that does not render.
					c.writeStatus(ctx, status.Input{Commit: current, Problems: []string{err.Error()}, Running: "", Memory: &memory}, log)
					failed, desired = current, nil
					continue
				}
				log.Warn("pass", "err", err)
				wait = poll * 4
			} else {
				p := res.Pass
				st := status.Progressing
				if res.Converged() {
					st = status.Ready
				}
				if st != outcome || now().Sub(written) >= every {
					in := status.Input{Commit: current, Pass: p, Observed: res.Observed}
					if failedProblems != nil {
						// The newest commit failed: its status stands,
						// with the running commit's pass beside it.
						in = status.Input{Commit: failed, Problems: failedProblems, Running: current, Pass: p, Observed: res.Observed}
					}
					c.writeStatus(ctx, in, log)
					outcome, written = st, now()
				}
				pw := pollWait(poll, time.Since(t0))
				wait = max(wait, pw)
				if st == status.Progressing {
					wait = pw
				}
				if !p.Wake.IsZero() {
					wait = min(wait, max(p.Wake.Sub(now()), pw))
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case commit, ok := <-commits:
			if !ok {
				return nil
			}
			pending = commit
		case <-loadRetry:
			loadRetry = nil
		case <-time.After(wait):
		}
	}
}

func (c *Controller) writeStatus(ctx context.Context, in status.Input, log *slog.Logger) {
	if c.Status == nil {
		return
	}
	if err := c.Status(ctx, in); err != nil && ctx.Err() == nil {
		log.Warn("write status", "commit", in.Commit, "err", err)
	}
}
