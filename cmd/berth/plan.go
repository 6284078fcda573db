package main

import (
	"context"
	"fmt"
	"path/filepath"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/reconciler"
)

const planHelp = `
Show what a change to the fleet repository would do, object by object and
field by field, with what follows from it (a rolling update of N pods,
which workloads see a changed ConfigMap). --from and --to are revisions of
the repository (a branch, tag, commit, HEAD~1); both are read from git and
no machine is contacted. --from empty plans everything as new.

Secret values never appear in any output. Validation errors and policy
denials in the --to revision are errors.

Exit status: 0 success; with --detailed-exitcode, 0 no changes, 2 changes,
1 error, as Terraform does.

Examples:
  berth plan --from main --to HEAD
  berth plan --repo https://git.example.com/fleet.git --from v1.4 --to main -o markdown
  berth plan --repo . --path examples/quickstart --from empty
`

func runPlan(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "plan", "--from REV [--to REV] [--repo PATH|URL] [--path DIR] [-o text|markdown|json] [--detailed-exitcode]", planHelp)
	repoArg := fs.String("repo", envOr(e, "BERTH_REPO", "."), "fleet repository: a local `path` or a URL (env BERTH_REPO)")
	path := fs.String("path", "", "`directory` of the repository that holds the fleet (default: all of it)")
	from := fs.String("from", "", "`revision` to compare from, or \"empty\"")
	to := fs.String("to", "HEAD", "`revision` to compare to")
	output := fs.String("o", "text", "output `format`: text, markdown or json")
	fs.StringVar(output, "output", "text", "same as -o")
	detailed := fs.Bool("detailed-exitcode", false, "exit 0 when nothing changes, 2 when something does, 1 on errors")
	sshKey := fs.String("ssh-key", envOr(e, "BERTH_SSH_KEY", ""), "private key `file` for an ssh:// repository (env BERTH_SSH_KEY; default: ssh-agent)")
	knownHosts := fs.String("known-hosts", envOr(e, "BERTH_KNOWN_HOSTS", ""), "known_hosts `file` for an ssh:// repository (env BERTH_KNOWN_HOSTS)")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "berth plan: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *from == "" {
		fmt.Fprintln(e.stderr, "berth plan: --from is required (a revision, or \"empty\"); comparing against the machines comes with the reconciler")
		return exitUsage
	}
	switch *output {
	case "text", "markdown", "json":
	default:
		fmt.Fprintf(e.stderr, "berth plan: -o must be text, markdown or json, not %q\n", *output)
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
