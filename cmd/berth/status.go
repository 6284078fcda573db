package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/reconciler"
	"berth.dev/berth/reconciler/status"
)

const statusHelp = `
Shows in one screen what the last reconcile did, as the status branch in git
records it (no machine is asked): the source commit the status is about, its
outcome (Ready, Progressing or Failed), pods ready of wanted, machines
reachable of total, and what is wrong: problems of the commit, workloads not
converged, pods no machine can take, machines not reached. Then the last
status commits, newest first.

The status branch is --status-branch, else the Cluster's spec.statusBranch at
--branch, else berth/status. When --branch has moved past the commit the
status is about, the output says so: that commit is not reconciled yet.

When the newest commit could not be applied (Failed), Running names the last
commit that was, which the machines still run.

Exit status: 0 when the outcome is Ready; 1 when it is not, or there is no
status yet; 64 usage.

Output (text):
  Commit:    3f2a1c9e...
  Outcome:   Progressing
  Pods:      5/6 ready
  Machines:  2/3 reachable

  Not converged:
    Deployment shop/web: rolling update: 2 of 3 updated, waiting for readiness

  Unreachable machines:
    lab3: ssh: connect to 198.18.0.13:22: connection refused

  Status commits on berth/status:
    9b1c2d3   2m ago    status: 3f2a1c9 Progressing - 5/6 pods ready
    77aa010   3h5m ago  status: 0c4f7e2 Ready - 6/6 pods ready

Examples:
  berth status
  berth status --repo ssh://git@git.example.com/fleet.git -o json
  berth status && echo converged
`

func runStatus(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "status", "[flags]", statusHelp)
	var o statusOpts
	o.register(e, fs)
	output := fs.String("o", "text", "output `format`: text or json")
	fs.StringVar(output, "output", "text", "same as -o")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(e.stderr, "berth status: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	case *output != "text" && *output != "json":
		fmt.Fprintf(e.stderr, "berth status: -o must be text or json, not %q\n", *output)
		return exitUsage
	case o.repo == "":
		fmt.Fprintln(e.stderr, "berth status: no fleet repository: give --repo or set BERTH_REPO")
		return exitUsage
	}
	st, err := openStatus(ctx, e, o)
	if err != nil {
		return fail(e, "status: %v", err)
	}
	defer st.Close()
	report := statusReport{
		StatusBranch: st.branch,
		StatusCommit: st.head.Hash,
		Branch:       o.branch,
		BranchCommit: st.source.Commit,
		Summary:      st.summary,
	}
	report.Reconciled = st.source.Commit == "" || st.source.Commit == st.summary.Commit
	report.History, err = statusHistory(ctx, st.store, st.head.Hash, 5)
	if err != nil {
		return fail(e, "status: %v", err)
	}
	if *output == "json" {
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return fail(e, "status: %v", err)
		}
		fmt.Fprintf(e.stdout, "%s\n", b)
	} else {
		printStatus(e.stdout, report, time.Now())
	}
	if st.summary.Outcome != status.Ready {
		return exitError
	}
	return exitOK
}

// statusOpts are the flags of the commands that read the status branch.
type statusOpts struct {
	repo, branch, statusBranch, sshKey, knownHosts string
}

func (o *statusOpts) register(e *env, fs *flag.FlagSet) {
	fs.StringVar(&o.repo, "repo", envOr(e, "BERTH_REPO", ""), "fleet repository: a local `path` or a URL (env BERTH_REPO)")
	fs.StringVar(&o.branch, "branch", "main", "`branch` the fleet is reconciled from")
	fs.StringVar(&o.statusBranch, "status-branch", "", "`branch` holding the status (default: the Cluster's spec.statusBranch, else berth/status)")
	fs.StringVar(&o.sshKey, "ssh-key", envOr(e, "BERTH_SSH_KEY", ""), "private key `file` for an ssh:// repository (env BERTH_SSH_KEY; default: the ssh-agent)")
	fs.StringVar(&o.knownHosts, "known-hosts", envOr(e, "BERTH_KNOWN_HOSTS", ""), "known_hosts `file` for an ssh:// repository (env BERTH_KNOWN_HOSTS)")
}

// statusView is the status branch's newest commit, read.
type statusView struct {
	// fleet reads the fleet's files: a sub-folder of a worktree when
	// --repo names one. store reads the status branch, whose files are
	// at the repository's root; it is fleet when that is the root.
	fleet, store *gitsource.Repo

	branch  string
	head    gitsource.Commit
	snap    *gitsource.Snapshot
	summary status.Summary
	// source is the fleet at --branch; its Desired is nil when it could
	// not be read (the status is still shown).
	source reconciler.Revision
}

// errNoStatus: the status branch does not exist yet.
var errNoStatus = errors.New("no status yet")

// openStatus opens the fleet repository and reads its status; the caller
// closes the view.
func openStatus(ctx context.Context, e *env, o statusOpts) (*statusView, error) {
	v := &statusView{branch: o.statusBranch}
	var err error
	v.fleet, err = gitsource.OpenOrClone(ctx, o.repo, gitsource.CloneOptions{SSHKeyPath: o.sshKey, KnownHosts: o.knownHosts})
	if err != nil {
		return nil, err
	}
	v.store = v.fleet
	if sub := v.fleet.Subdir(); sub != "." {
		root, ok := strings.CutSuffix(filepath.Clean(v.fleet.Path()), filepath.FromSlash(sub))
		if !ok || (root != "" && !strings.HasSuffix(root, string(filepath.Separator))) {
			v.fleet.Close()
			return nil, fmt.Errorf("open the root of the repository holding %s: cannot tell it from %s", sub, v.fleet.Path())
		}
		if v.store, err = gitsource.Open(ctx, filepath.Clean(root+".")); err != nil {
			v.fleet.Close()
			return nil, err
		}
	}
	if err := v.load(ctx, e, o); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// Close closes the repositories.
func (v *statusView) Close() {
	if v.store != v.fleet {
		v.store.Close()
	}
	v.fleet.Close()
}

// load finds the status branch (flag, Cluster, default) and reads its
// summary.
func (v *statusView) load(ctx context.Context, e *env, o statusOpts) error {
	rev, err := reconciler.LoadRevision(ctx, v.fleet, o.branch, reconciler.OfflineOptions{}, nil)
	if err != nil {
		// A broken fleet is when status matters most: go on with the
		// default branch, but say why the Cluster was not read.
		fmt.Fprintf(e.stderr, "berth: warning: read %s: %v\n", o.branch, err)
	} else {
		v.source = rev
	}
	v.branch = statusBranchOf(v.branch, v.source.Desired)
	snap, err := v.store.RootSnapshot(ctx, v.branch)
	if errors.Is(err, gitsource.ErrUnknownRevision) {
		return fmt.Errorf("%w on %s: run berth reconcile --once", errNoStatus, v.branch)
	}
	if err != nil {
		return fmt.Errorf("read status branch %s: %w", v.branch, err)
	}
	v.snap, v.head = snap, snap.Commit
	if v.summary, err = readSummary(snap); err != nil {
		return fmt.Errorf("read status branch %s: %w", v.branch, err)
	}
	return nil
}

// readSummary reads summary.yaml of a status commit.
func readSummary(snap *gitsource.Snapshot) (status.Summary, error) {
	var s status.Summary
	b, err := fs.ReadFile(snap.FS, "summary.yaml")
	if err != nil {
		return s, err
	}
	if err := unmarshalYAML(b, &s); err != nil {
		return s, fmt.Errorf("summary.yaml of %s: %w", snap.Commit.Short, err)
	}
	return s, nil
}

// unmarshalYAML reads YAML written with JSON field names (as the status
// package writes it) into v.
func unmarshalYAML(b []byte, v any) error {
	var generic any
	if err := yaml.Unmarshal(b, &generic); err != nil {
		return err
	}
	j, err := json.Marshal(generic)
	if err != nil {
		return err
	}
	return json.Unmarshal(j, v)
}

// statusReport is what `berth status` shows.
type statusReport struct {
	StatusBranch string `json:"statusBranch"`
	StatusCommit string `json:"statusCommit"`
	Branch       string `json:"branch"`
	// BranchCommit is where --branch is now ("" when it could not be read).
	BranchCommit string `json:"branchCommit,omitempty"`
	// Reconciled: the status is about BranchCommit.
	Reconciled bool           `json:"reconciled"`
	Summary    status.Summary `json:"summary"`
	History    []statusEntry  `json:"history"`
}

// statusEntry is one commit of the status branch.
type statusEntry struct {
	Commit  string    `json:"commit"`
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
}

// statusHistory walks the status branch's first parents from head, newest
// first, at most n commits.
func statusHistory(ctx context.Context, repo *gitsource.Repo, head string, n int) ([]statusEntry, error) {
	var out []statusEntry
	rev := head
	for len(out) < n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := repo.Resolve(rev)
		if errors.Is(err, gitsource.ErrUnknownRevision) && len(out) > 0 {
			break // the root commit, or a shallow clone's boundary
		}
		if err != nil {
			return nil, fmt.Errorf("status history: %w", err)
		}
		out = append(out, statusEntry{Commit: c.Hash, Time: c.Time, Message: c.Subject})
		rev = c.Hash + "^"
	}
	return out, nil
}

func printStatus(w io.Writer, r statusReport, now time.Time) {
	s := r.Summary
	fmt.Fprintf(w, "Commit:    %s\n", s.Commit)
	fmt.Fprintf(w, "Outcome:   %s\n", s.Outcome)
	if s.Outcome == status.Failed && s.Running != "" {
		fmt.Fprintf(w, "Running:   %s (the last commit that applied)\n", s.Running)
	}
	fmt.Fprintf(w, "Pods:      %d/%d ready\n", s.Pods.Ready, s.Pods.Wanted)
	fmt.Fprintf(w, "Machines:  %d/%d reachable\n", s.Machines.Reachable, s.Machines.Total)
	if !r.Reconciled {
		fmt.Fprintf(w, "\n%s is at %s: not reconciled yet; this status is about %s.\n", r.Branch, short(r.BranchCommit), short(s.Commit))
	}
	for _, l := range []struct {
		title string
		lines []string
	}{
		{"Problems", s.Problems},
		{"Errors", s.Errors},
		{"Not converged", s.NotConverged},
		{"Unschedulable", s.Unschedulable},
		{"Unreachable machines", s.Unreachable},
	} {
		if len(l.lines) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", l.title)
		for _, x := range l.lines {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(x, "\n", "\n  "))
		}
	}
	fmt.Fprintf(w, "\nStatus commits on %s:\n", r.StatusBranch)
	rows := make([][]string, len(r.History))
	for i, h := range r.History {
		rows[i] = []string{"  " + short(h.Commit), humanDuration(now.Sub(h.Time)) + " ago", h.Message}
	}
	printRows(w, rows)
}
