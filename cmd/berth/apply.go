package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"berth.dev/berth/reconciler"
	"berth.dev/berth/reconciler/live"
)

const applyHelp = `
Carry out a plan saved with berth plan --out FILE, and then go on until
the fleet has converged, as reconcile --once does (status commit and note
included).

The plan is refused, and nothing is sent to any machine, when the world
it was made against has moved: the branch points at another commit, the
status branch has a newer pass, a machine reports other pods, other
readiness or another pod set than it did, or planning again would tell
any machine something else than the plan shows. Plan again and review
that plan. Further passes of a rolling update (after the first) are
planned as reconcile would plan them.

Exit status: 0 converged; 1 refused, not converged within --timeout, or
the commit could not be applied; 2 usage.

Examples:
  berth plan --out plan.json
  berth apply plan.json
`

func runApply(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "apply", "[flags] PLANFILE", applyHelp)
	var j applyJob
	fs.StringVar(&j.o.repo, "repo", "", "fleet repository: a local `path` or a URL (default: the one the plan was made from)")
	fs.StringVar(&j.o.sshKey, "ssh-key", envOr(e, "BERTH_SSH_KEY", ""), "controller's private key `file` (env BERTH_SSH_KEY; default: the ssh-agent)")
	fs.StringVar(&j.o.knownHosts, "known-hosts", envOr(e, "BERTH_KNOWN_HOSTS", ""), "known_hosts `file` for machines without a pinned spec.ssh.hostKey (env BERTH_KNOWN_HOSTS)")
	fs.BoolVar(&j.o.verbose, "v", false, "log every pass and connection event to stderr")
	fs.DurationVar(&j.timeout, "timeout", 5*time.Minute, "longest wait for the fleet to converge")
	fs.BoolVar(&j.noStatus, "no-status", false, "write no status commit or note")
	fs.StringVar(&j.output, "o", "text", "output `format`: text or json")
	fs.StringVar(&j.output, "output", "text", "same as -o")
	pos, code, stop := parseInterspersed(e, fs, args)
	if stop {
		return code
	}
	switch {
	case len(pos) != 1:
		fmt.Fprintln(e.stderr, "berth apply: give one plan file (berth plan --out FILE makes one)")
		return exitUsage
	case j.output != "text" && j.output != "json":
		fmt.Fprintf(e.stderr, "berth apply: -o must be text or json, not %q\n", j.output)
		return exitUsage
	}
	saved, err := readPlanFile(pos[0])
	if err != nil {
		return fail(e, "apply: %v", err)
	}
	if j.o.repo == "" {
		j.o.repo = saved.Repo
	}
	j.name, j.saved = "apply", saved
	j.rev = saved.Commit
	j.o.branch = saved.Rev // status is never written to the branch the plan was made from
	j.statusBranch = saved.StatusBranch
	j.opts = saved.Options
	if j.output == "text" {
		fmt.Fprintf(e.stderr, "applying the plan of %s (%s at %s), made %s\n", pos[0], saved.Rev, short(saved.Commit), saved.Created.Format(time.RFC3339))
		if saved.Pass != nil {
			live.WriteText(e.stderr, saved.Pass, false)
		}
	}
	return j.run(ctx, e)
}

func readPlanFile(path string) (*reconciler.SavedPlan, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := reconciler.ReadSavedPlan(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
