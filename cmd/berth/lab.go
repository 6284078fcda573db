package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"berth.dev/berth/nodes/lab"
)

const labHelp = `
Turn this Linux host into a fleet of bare-metal-like machines for trying
berth, for its end-to-end tests and benchmarks. Needs root.

  berth lab up [--nodes N] [--dir DIR]   make machines lab1..labN
  berth lab down [--dir DIR]             remove everything up made
  berth lab status [--dir DIR]           say what is running

Each machine is a network namespace (berth-lab1, ...) on the bridge
berth-lab0 (198.18.0.1/24), with its own address (198.18.0.11, .12, ...),
pod range (198.18.64.0/24, 198.18.65.0/24, ...), sshd and containerd. A
registry at 198.18.0.1:5000 holds berth/echo:1 and :2, and DIR/fleet.git
holds examples/quickstart with the lab's machines, host keys pinned. Source
DIR/lab.env to point berth at it (BERTH_REPO, BERTH_SSH_KEY,
BERTH_KNOWN_HOSTS).

down removes namespaces, links, processes, mounts and files, also after a
crash or a half-finished up, and may be run twice.
`

func runLab(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs := newFlags(e, "lab", "up|down|status [flags]", labHelp)
		if code, stop := parse(e, fs, args); stop {
			return code
		}
		fs.Usage()
		return exitUsage
	}
	verb, args := args[0], args[1:]
	fs := newFlags(e, "lab "+verb, "[flags]", labHelp)
	dir := fs.String("dir", lab.DefaultDir, "`directory` that holds the lab's files")
	var nodes *int
	if verb == "up" {
		nodes = fs.Int("nodes", 3, "number of `machines`")
	}
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "berth lab %s: unexpected argument %q\n", verb, fs.Arg(0))
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	switch verb {
	case "up":
		if missing := lab.Missing(); len(missing) > 0 {
			return fail(e, "lab up: missing: %s (make test, run as root, installs them)", strings.Join(missing, ", "))
		}
		l, err := lab.Up(ctx, lab.Options{Nodes: *nodes, Dir: *dir, Logger: log})
		if err != nil {
			if errors.Is(err, lab.ErrExists) {
				return fail(e, "lab up: %v", err)
			}
			return fail(e, "lab up: %v (what was made has been removed)", err)
		}
		fmt.Fprintf(e.stdout, "lab up: %d machines, registry %s, repository %s\n", len(l.Machines), l.Registry, l.Repo)
		for _, m := range l.Machines {
			fmt.Fprintf(e.stdout, "  %s  %s  pods %s\n", m.Name, m.Address.Addr(), m.PodCIDR)
		}
		fmt.Fprintf(e.stdout, "Point berth at it with:  . %s\n", l.Env)
		return exitOK
	case "down":
		r, err := lab.Down(ctx, *dir, lab.WithLogger(log))
		if err != nil {
			return fail(e, "lab down: %v", err)
		}
		fmt.Fprintf(e.stdout, "lab down: removed %d processes, %d namespaces, %d links, %d mounts in %v\n",
			r.Processes, len(r.Namespaces), len(r.Links), r.Mounts, r.Took.Round(1e6))
		return exitOK
	case "status":
		r, err := lab.Status(ctx, *dir)
		if err != nil {
			return fail(e, "lab status: %v", err)
		}
		if err := r.WriteText(e.stdout); err != nil {
			return fail(e, "lab status: %v", err)
		}
		if !r.Healthy() {
			return exitError
		}
		return exitOK
	}
	fmt.Fprintf(e.stderr, "berth lab: unknown subcommand %q (up, down or status)\n", verb)
	return exitUsage
}
