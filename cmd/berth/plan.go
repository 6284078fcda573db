package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/nodes/api"
	nodefleet "berth.dev/berth/nodes/fleet"
	"berth.dev/berth/reconciler"
	"berth.dev/berth/reconciler/live"
)

const planHelp = `
Show what a change to the fleet repository would do, object by object and
field by field, with what follows from it (a rolling update of N pods,
which workloads see a changed ConfigMap). --from and --to are revisions of
the repository (a branch, tag, commit, HEAD~1); both are read from git and
no machine is contacted. --from empty plans everything as new.

Without --from, the plan is against the machines: every agent is asked
over SSH what it runs (--ssh-key, --known-hosts), and the plan lists what
each machine would be told, pod by pod, with why (a rolling update step,
a pod pruned, one that fits nowhere and why). Nothing is changed.
--out FILE also saves that plan; berth apply FILE carries it out only if
the branch, the status branch and what every machine runs are still as
they were when it was made.

Secret values never appear in any output. Validation errors and policy
denials in the --to revision are errors.

Exit status: 0 success; with --detailed-exitcode, 0 no changes, 2 changes,
1 error, as Terraform does.

Examples:
  berth plan --from main --to HEAD
  berth plan --repo https://git.example.com/fleet.git --from v1.4 --to main -o markdown
  berth plan --repo . --path examples/quickstart --from empty
  berth plan                      # against the machines of $BERTH_REPO
  berth plan --out plan.json && berth apply plan.json
`

func runPlan(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "plan", "[--from REV] [--to REV] [--repo PATH|URL] [--path DIR] [-o text|markdown|json] [--out FILE] [--detailed-exitcode]", planHelp)
	repoArg := fs.String("repo", envOr(e, "BERTH_REPO", "."), "fleet repository: a local `path` or a URL (env BERTH_REPO)")
	path := fs.String("path", "", "`directory` of the repository that holds the fleet (default: all of it)")
	from := fs.String("from", "", "`revision` to compare from, or \"empty\"")
	to := fs.String("to", "HEAD", "`revision` to compare to")
	output := fs.String("o", "text", "output `format`: text, markdown or json")
	fs.StringVar(output, "output", "text", "same as -o")
	detailed := fs.Bool("detailed-exitcode", false, "exit 0 when nothing changes, 2 when something does, 1 on errors")
	out := fs.String("out", "", "also save the plan against the machines to `file`, for berth apply")
	sshKey := fs.String("ssh-key", envOr(e, "BERTH_SSH_KEY", ""), "private key `file` for an ssh:// repository (env BERTH_SSH_KEY; default: ssh-agent)")
	knownHosts := fs.String("known-hosts", envOr(e, "BERTH_KNOWN_HOSTS", ""), "known_hosts `file` for an ssh:// repository (env BERTH_KNOWN_HOSTS)")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "berth plan: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	switch *output {
	case "text", "markdown", "json":
	default:
		fmt.Fprintf(e.stderr, "berth plan: -o must be text, markdown or json, not %q\n", *output)
		return exitUsage
	}
	if *from == "" {
		if *path != "" {
			fmt.Fprintln(e.stderr, "berth plan: --path needs --from (a plan against the machines reads the whole repository)")
			return exitUsage
		}
		return planLive(ctx, e, *repoArg, *to, *sshKey, *knownHosts, *output, *out, *detailed)
	}
	if *out != "" {
		fmt.Fprintln(e.stderr, "berth plan: --out saves a plan against the machines; it cannot be used with --from")
		return exitUsage
	}

	repo, err := gitsource.OpenOrClone(ctx, *repoArg, gitsource.CloneOptions{SSHKeyPath: *sshKey, KnownHosts: *knownHosts})
	if err != nil {
		return fail(e, "plan: %v", err)
	}
	defer repo.Close()
	p, err := reconciler.PlanRevisions(ctx, repo, *from, *to, reconciler.OfflineOptions{Path: filepath.ToSlash(*path)})
	if err != nil {
		return fail(e, "plan: %v", err)
	}
	switch *output {
	case "json":
		err = p.WriteJSON(e.stdout)
	case "markdown":
		err = p.WriteMarkdown(e.stdout)
	default:
		err = p.WriteText(e.stdout, e.tty)
	}
	if err != nil {
		return fail(e, "plan: write: %v", err)
	}
	switch {
	case p.Diagnostics.HasErrors():
		return exitError
	case *detailed && p.HasChanges():
		return exitChanges
	}
	return exitOK
}

// planLive plans revision rev against what the machines report.
func planLive(ctx context.Context, e *env, repoArg, rev, sshKey, knownHosts, output, out string, detailed bool) int {
	repo, err := gitsource.OpenOrClone(ctx, repoArg, gitsource.CloneOptions{SSHKeyPath: sshKey, KnownHosts: knownHosts})
	if err != nil {
		return fail(e, "plan: %v", err)
	}
	defer repo.Close()
	r, err := reconciler.LoadRevision(ctx, repo, rev, reconciler.OfflineOptions{}, nil)
	if err != nil {
		return fail(e, "plan: %v", err)
	}
	d := r.Desired
	if d.Diagnostics.HasErrors() {
		for _, diag := range d.Diagnostics {
			fmt.Fprintln(e.stderr, diag)
		}
		return exitError
	}
	statusBranch := statusBranchOf("", d)
	prev := readStatus(ctx, repo, statusBranch)
	sshc, err := sshConfig(machinesOpts{sshKey: sshKey, knownHosts: knownHosts}, logger(e, false))
	if err != nil {
		return fail(e, "plan: %v", err)
	}
	fl, err := nodefleet.New(d.Machines(), nodefleet.Options{SSH: sshc})
	if err != nil {
		return fail(e, "plan: %v", err)
	}
	defer fl.Close()
	obs, err := fleetMachines{fl}.Observe(ctx)
	if err != nil {
		return fail(e, "plan: %v", err)
	}
	opts := live.Options{RescheduleAfter: defaultRescheduleAfter}
	p, err := live.Plan(live.Input{Desired: d, Observed: obs, Memory: prev.memory, Now: time.Now()}, opts)
	if err != nil {
		return fail(e, "plan: %v", err)
	}
	nr, err := reconciler.Networks(d, obs, p, nil, reconciler.ResolveMachines(ctx, d))
	if err != nil {
		return fail(e, "plan: %v", err)
	}
	netSends := reconciler.NetworkSends(obs, nr)
	if len(netSends) > 0 {
		p.Converged = false // the machines are told something: not "no changes"
	}
	if out != "" {
		repoRec := repoArg
		if !gitsource.IsURL(repoArg) {
			if abs, err := filepath.Abs(repoArg); err == nil {
				repoRec = abs
			}
		}
		saved := reconciler.NewSavedPlan(repoRec, rev, r.Commit, statusBranch, prev.commit, obs, opts, p)
		if err := writeFileAtomic(out, saved); err != nil {
			return fail(e, "plan: save: %v", err)
		}
	}
	switch output {
	case "json":
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(struct {
			*live.Pass
			Networks []networkSend `json:"networks,omitempty"`
		}{p, networkSendsOf(netSends)})
	case "markdown":
		fmt.Fprintf(e.stdout, "### berth plan: %s against the machines\n\n```\n", short(r.Commit))
		err = live.WriteText(e.stdout, p, false)
		fmt.Fprintln(e.stdout, "```")
	default:
		err = live.WriteText(e.stdout, p, false)
	}
	if err != nil {
		return fail(e, "plan: write: %v", err)
	}
	if output != "json" {
		writeNetworkSends(e, netSends)
	}
	if out != "" && output == "text" {
		fmt.Fprintf(e.stdout, "\nSaved to %s. To apply exactly this plan: berth apply %s\n", out, out)
	}
	if detailed && (p.Changes() > 0 || len(p.Unschedulable) > 0 || len(netSends) > 0) {
		return exitChanges
	}
	return exitOK
}

// writeFileAtomic writes v as indented JSON to a temporary file next to
// path and renames it into place, so a plan file is whole or absent.
func writeFileAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// networkSend summarises a Network a plan would send (no Secret data: the
// Ingress's certificates stay out).
type networkSend struct {
	Machine        string       `json:"machine"`
	Generation     int64        `json:"generation"`
	PodCIDR        netip.Prefix `json:"podCIDR"`
	Services       int          `json:"services"`
	ReadyEndpoints int          `json:"readyEndpoints"`
	Routes         int          `json:"routes"`
	Policies       int          `json:"policies"`
	IngressRules   int          `json:"ingressRules,omitempty"`
	HeldIPs        []netip.Addr `json:"heldIPs,omitempty"`
}

func networkSendsOf(sends map[string]api.Network) []networkSend {
	var out []networkSend
	for _, m := range slices.Sorted(maps.Keys(sends)) {
		n := sends[m]
		ns := networkSend{Machine: m, Generation: n.Generation, PodCIDR: n.PodCIDR, Services: len(n.Services),
			Routes: len(n.Routes), Policies: len(n.Policies), HeldIPs: n.HeldIPs}
		for _, s := range n.Services {
			for _, ep := range s.Endpoints {
				if ep.Ready && !ep.Terminating {
					ns.ReadyEndpoints++
				}
			}
		}
		if n.Ingress != nil {
			ns.IngressRules = len(n.Ingress.Rules)
		}
		out = append(out, ns)
	}
	return out
}

// writeNetworkSends says which machines would be handed a new Network, and
// what it holds.
func writeNetworkSends(e *env, sends map[string]api.Network) {
	for _, n := range networkSendsOf(sends) {
		extra := ""
		if n.IngressRules > 0 {
			extra += fmt.Sprintf(", ingress (%d rules)", n.IngressRules)
		}
		if len(n.HeldIPs) > 0 {
			extra += fmt.Sprintf(", holds %v", n.HeldIPs)
		}
		fmt.Fprintf(e.stdout, "%s  ~ network  pod CIDR %s, %d Services with %d ready endpoints, %d routes, %d policies%s\n",
			n.Machine, n.PodCIDR, n.Services, n.ReadyEndpoints, n.Routes, n.Policies, extra)
	}
}
