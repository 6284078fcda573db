package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"gopkg.in/yaml.v3"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/nodes/api"
	nodefleet "berth.dev/berth/nodes/fleet"
	"berth.dev/berth/reconciler"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/status"
	"berth.dev/berth/render"
)

const reconcileHelp = `
One full pass, for CI: read the branch, render and admit it, plan against
what every machine's agent reports, hand each machine its pods over SSH,
and repeat until every wanted pod is Ready or --timeout passes; then write
the outcome to the status branch (one file per workload and per machine,
a summary, and the controller's memory) and as a git note on the source
commit (git log --notes=berth).

A commit that does not render or is denied by policy changes nothing on
the machines: the status says why, at file:line, and the exit status is 1.

Exit status: 0 converged; 1 not converged within --timeout, or the commit
could not be applied; 2 usage.

Examples:
  berth reconcile --once
  berth reconcile --once --timeout 10m -o json
`

// defaultRescheduleAfter is how long a machine may be unreachable before
// its Deployments' and Jobs' pods are started elsewhere.
const defaultRescheduleAfter = 5 * time.Minute

func runReconcile(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "reconcile", "--once [flags]", reconcileHelp)
	var j applyJob
	fleetFlags(fs, e, &j.o, "`branch` to reconcile")
	fs.BoolVar(&j.o.verbose, "v", false, "log every pass and connection event to stderr")
	once := fs.Bool("once", false, "one pass, then exit (the only mode for now; berth serve watches the branch)")
	fs.DurationVar(&j.timeout, "timeout", 5*time.Minute, "longest wait for the fleet to converge")
	fs.StringVar(&j.statusBranch, "status-branch", "", "`branch` for status commits (default: the Cluster's spec.statusBranch, else berth/status)")
	fs.BoolVar(&j.noStatus, "no-status", false, "write no status commit or note")
	fs.BoolVar(&j.opts.AllowEmpty, "allow-empty", false, "apply a commit without any workload even though machines run pods (stops them all)")
	fs.DurationVar(&j.opts.RescheduleAfter, "reschedule-after", defaultRescheduleAfter, "how long a machine may be unreachable before its Deployments' and Jobs' pods are started elsewhere")
	fs.StringVar(&j.output, "o", "text", "output `format`: text or json")
	fs.StringVar(&j.output, "output", "text", "same as -o")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	switch {
	case !*once:
		fmt.Fprintln(e.stderr, "berth reconcile: --once is required (berth serve is the long-running mode)")
		return exitUsage
	case fs.NArg() > 0:
		fmt.Fprintf(e.stderr, "berth reconcile: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	case j.output != "text" && j.output != "json":
		fmt.Fprintf(e.stderr, "berth reconcile: -o must be text or json, not %q\n", j.output)
		return exitUsage
	case j.o.repo == "":
		fmt.Fprintln(e.stderr, "berth reconcile: no fleet repository: give --repo or set BERTH_REPO")
		return exitUsage
	}
	j.name, j.rev = "reconcile", j.o.branch
	return j.run(ctx, e)
}

// applyJob is one reconcile of one revision until converged: berth
// reconcile --once, and berth apply of a saved plan.
type applyJob struct {
	name string // the command, for messages
	o    machinesOpts
	// rev is the revision to apply; the status is written about it, and
	// o.branch is the branch status must never be written to.
	rev          string
	timeout      time.Duration
	statusBranch string
	noStatus     bool
	opts         live.Options
	output       string
	// saved, when set, is the plan to apply: the revision, the status
	// branch and what the machines report must be as when it was made, and
	// the first pass must send what it says.
	saved *reconciler.SavedPlan
}

func (j *applyJob) run(ctx context.Context, e *env) int {
	log := logger(e, j.o.verbose)
	start := time.Now()

	repo, err := gitsource.OpenOrClone(ctx, j.o.repo, gitsource.CloneOptions{SSHKeyPath: j.o.sshKey, KnownHosts: j.o.knownHosts})
	if err != nil {
		return fail(e, "%s: %v", j.name, err)
	}
	defer repo.Close()
	rev, err := reconciler.LoadRevision(ctx, repo, j.rev, reconciler.OfflineOptions{}, nil)
	if err != nil {
		return fail(e, "%s: %v", j.name, err)
	}
	d := rev.Desired
	branch := statusBranchOf(j.statusBranch, d)
	prev := readStatus(ctx, repo, branch)
	memory := prev.memory
	if j.saved != nil {
		// Where the planned revision (a branch, usually) points now.
		now, err := repo.Resolve(j.saved.Rev)
		if err != nil {
			return fail(e, "%s: %v", j.name, err)
		}
		if err := j.saved.CheckSource(now.Hash, prev.commit); err != nil {
			return fail(e, "%s: %v", j.name, err)
		}
	}
	rec := &reconcileRun{e: e, repo: repo, commit: rev.Commit, watched: j.o.branch, statusBranch: branch, write: !j.noStatus, running: prev.running}

	if d.Diagnostics.HasErrors() {
		problems := d.Diagnostics.ErrorLines()
		rec.finish(ctx, status.Input{Commit: rev.Commit, Problems: problems, Running: prev.running, Memory: &memory}, j.output)
		fmt.Fprintf(e.stderr, "berth: %s: %s does not apply; nothing was changed on the machines:\n", j.name, short(rev.Commit))
		for _, p := range problems {
			fmt.Fprintln(e.stderr, "  "+p)
		}
		return exitError
	}

	sshc, err := sshConfig(j.o, log)
	if err != nil {
		return fail(e, "%s: %v", j.name, err)
	}
	fl, err := nodefleet.New(d.Machines(), nodefleet.Options{SSH: sshc, Logger: log})
	if err != nil {
		return fail(e, "%s: %v", j.name, err)
	}
	defer fl.Close()

	cctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	c := &reconciler.Converge{
		Machines: fleetMachines{fl},
		Options:  j.opts,
		Progress: newProgress(e, j.output == "text"),
		Logger:   log,
	}
	if j.saved != nil {
		obs, err := c.Machines.Observe(cctx)
		if err != nil {
			return fail(e, "%s: %v", j.name, err)
		}
		if err := j.saved.CheckObserved(obs); err != nil {
			return fail(e, "%s: %v", j.name, err)
		}
		c.First, c.Verify = obs, j.saved.CheckPass
	}
	res, err := c.Run(cctx, d, memory)
	if errors.Is(err, reconciler.ErrStalePlan) {
		return fail(e, "%s: %v", j.name, err) // nothing was sent
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		var problems []string
		if res.Pass == nil {
			problems = []string{err.Error()}
		}
		rec.finish(ctx, status.Input{Commit: rev.Commit, Pass: res.Pass, Observed: res.Observed, Problems: problems, Running: prev.running}, j.output)
		return fail(e, "%s: %v", j.name, err)
	}
	st := rec.finish(ctx, status.Input{Commit: rev.Commit, Pass: res.Pass, Observed: res.Observed}, j.output)
	took := time.Since(start).Round(time.Millisecond)
	if j.output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Summary *status.Summary `json:"summary"`
			Pass    *live.Pass      `json:"pass"`
			Passes  int             `json:"passes"`
			Seconds float64         `json:"seconds"`
		}{&st.Summary, res.Pass, res.Passes, took.Seconds()})
	} else {
		fmt.Fprintf(e.stdout, "%s %s: %d/%d pods ready on %d/%d machines after %d passes, %v\n", short(rev.Commit), st.Summary.Outcome,
			st.Summary.Pods.Ready, st.Summary.Pods.Wanted, st.Summary.Machines.Reachable, st.Summary.Machines.Total, res.Passes, took)
	}
	if st.Summary.Outcome == status.Ready {
		return exitOK
	}
	fmt.Fprintf(e.stderr, "berth: %s: not converged within %v:\n", j.name, j.timeout)
	for _, l := range [][]string{st.Summary.Errors, st.Summary.Unschedulable, st.Summary.NotConverged, st.Summary.Unreachable} {
		for _, x := range l {
			fmt.Fprintln(e.stderr, "  "+x)
		}
	}
	return exitError
}

// reconcileRun writes a reconcile's status.
type reconcileRun struct {
	e                             *env
	repo                          *gitsource.Repo
	commit, watched, statusBranch string
	running                       string
	write                         bool
}

func (r *reconcileRun) finish(ctx context.Context, in status.Input, output string) *status.Status {
	sink := &statusSink{repo: r.repo, watched: r.watched, branch: r.statusBranch}
	if !r.write {
		st, err := status.Build(in)
		if err != nil {
			fmt.Fprintf(r.e.stderr, "berth: reconcile: status: %v\n", err)
			return &status.Status{}
		}
		return st
	}
	st, hash, changed, err := sink.write(ctx, in)
	if st == nil {
		st = &status.Status{}
	}
	if err != nil {
		fmt.Fprintf(r.e.stderr, "berth: reconcile: %v\n", err)
	}
	if changed && output == "text" {
		fmt.Fprintf(r.e.stderr, "%s on %s (%s)\n", st.Message, r.statusBranch, short(hash))
	}
	return st
}

// statusSink writes status to a branch of the fleet repository, and a
// note on the source commit, and pushes both when the repository is remote.
type statusSink struct {
	repo            *gitsource.Repo
	watched, branch string
}

func (s *statusSink) write(ctx context.Context, in status.Input) (st *status.Status, hash string, changed bool, err error) {
	st, err = status.Build(in)
	if err != nil {
		return nil, "", false, fmt.Errorf("status: %w", err)
	}
	author := gitsource.Signature{Name: "berth", Email: "berth@localhost", When: time.Now()}
	commitStatus := func(ctx context.Context) error {
		var err error
		hash, changed, err = s.repo.WriteStatus(ctx, gitsource.Status{Branch: s.branch, Protected: s.watched, Files: st.Files, Message: st.Message, Author: author})
		if err != nil {
			return fmt.Errorf("write status to %s: %w", s.branch, err)
		}
		if changed || st.Summary.Outcome != status.Progressing {
			if _, err := s.repo.AddNote(ctx, gitsource.DefaultNotesRef, in.Commit, st.Note, author); err != nil {
				return fmt.Errorf("note on %s: %w", short(in.Commit), err)
			}
		}
		return nil
	}
	if err := commitStatus(ctx); err != nil {
		return st, "", false, err
	}
	if changed && gitsource.IsURL(s.repo.Remote()) {
		// No URL: the remote it was cloned from, with its authentication.
		err := s.repo.Push(ctx, gitsource.PushOptions{Refs: []string{"refs/heads/" + s.branch, gitsource.DefaultNotesRef}}, commitStatus)
		if err != nil {
			return st, hash, changed, fmt.Errorf("push status: %w", err)
		}
	}
	return st, hash, changed, nil
}

// statusBranchOf is the status branch: the flag's, else the Cluster's
// spec.statusBranch, else gitsource.DefaultStatusBranch. d may be nil.
func statusBranchOf(flag string, d *render.Desired) string {
	switch {
	case flag != "":
		return flag
	case d != nil && d.Cluster != nil && d.Cluster.Spec.StatusBranch != "":
		return d.Cluster.Spec.StatusBranch
	}
	return gitsource.DefaultStatusBranch
}

// prevStatus is what the status branch says of the previous pass.
type prevStatus struct {
	// memory is the controller's memory (empty when there is none or it
	// cannot be read: a pass rebuilds what it needs from the machines).
	memory live.Memory
	// running is the commit that runs: the summary's, unless that one
	// failed, which names the one still running.
	running string
	// commit is the status branch's head ("" when there is none).
	commit string
}

// readStatus reads the status branch; nothing when there is none yet or
// it cannot be read.
func readStatus(ctx context.Context, repo *gitsource.Repo, branch string) prevStatus {
	var ps prevStatus
	snap, err := repo.RootSnapshot(ctx, branch)
	if err != nil {
		return ps
	}
	ps.commit = snap.Commit.Hash
	if b, err := fs.ReadFile(snap.FS, status.MemoryFile); err == nil {
		if json.Unmarshal(b, &ps.memory) != nil {
			ps.memory = live.Memory{}
		}
	}
	var sum struct {
		Commit  string `yaml:"commit"`
		Outcome string `yaml:"outcome"`
		Running string `yaml:"running"`
	}
	if b, err := fs.ReadFile(snap.FS, "summary.yaml"); err == nil && yaml.Unmarshal(b, &sum) == nil {
		ps.running = sum.Commit
		if sum.Outcome == status.Failed {
			ps.running = sum.Running
		}
	}
	return ps
}

func short(commit string) string {
	if len(commit) > 7 {
		return commit[:7]
	}
	return commit
}

// fleetMachines is the fleet as the apply loop sees it.
type fleetMachines struct{ f *nodefleet.Fleet }

func (m fleetMachines) Observe(ctx context.Context) ([]live.Observed, error) {
	obs, err := m.f.Observe(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]live.Observed, len(obs))
	for i, o := range obs {
		out[i] = live.Observed{Machine: o.Machine, Reachable: o.Reachable, Node: o.Node, Pods: o.Pods}
		if o.Err != nil {
			out[i].Err = o.Err.Error()
		}
	}
	return out, nil
}

func (m fleetMachines) SetPods(ctx context.Context, machine string, pods api.DesiredPods) error {
	return m.f.SetPods(ctx, machine, pods)
}

func (m fleetMachines) SetNetwork(ctx context.Context, machine string, n api.Network) error {
	return m.f.SetNetwork(ctx, machine, n)
}

// newProgress prints one line per pass on stderr: what changed, how many
// pods are ready.
func newProgress(e *env, on bool) func(*live.Pass) {
	if !on {
		return nil
	}
	n := 0
	return func(p *live.Pass) {
		n++
		starts, stops := 0, 0
		for _, a := range p.Pods {
			switch a.Action {
			case live.Start, live.Replace:
				starts++
			case live.Stop:
				stops++
			}
		}
		if p.Changes() > 0 || n == 1 {
			fmt.Fprintf(e.stderr, "pass %d: %d machines told, %d pods to start, %d to stop\n", n, p.Changes(), starts, stops)
		}
	}
}
