package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"berth.dev/berth/nodes/logs"
)

// Exit codes shared by every command.
const (
	exitOK      = 0
	exitError   = 1
	exitChanges = 2 // plan --detailed-exitcode: the plan has changes
	exitUsage   = 64
)

// env is what a command may touch of the process: streams, environment
// and whether output goes to a terminal. Tests build their own.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// tty reports whether stdout is a terminal (colour, progress).
	tty bool
	log *slog.Logger
}

func newEnv(stdout, stderr *os.File) *env {
	return &env{
		stdout: stdout,
		stderr: stderr,
		getenv: os.Getenv,
		tty:    isTerminal(stdout) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb",
		log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) int
}

func commands() []command {
	return []command{
		{"agent", "run the node agent (on each machine; bootstrap starts it)", runAgent},
		{"apply", "carry out a plan saved with plan --out, if the fleet is still as planned", runApply},
		{"bench", "measure the agent against podman (bench agent), and push to ready on a lab (bench push)", runBench},
		{"exec", "run a command in a pod's container, wherever it runs", runExec},
		{"get", "show pods, machines and workloads, with kubectl's columns", runGet},
		{"lab", "make a local lab of machines on this host (up, down, status)", runLab},
		{"logs", "print a pod's container log, wherever it runs", runLogs},
		{"machines", "install and inspect the agent on the fleet's machines over SSH (bootstrap, status, uninstall)", runMachines},
		{"plan", "show what a commit would change", runPlan},
		{"reconcile", "apply the branch to the machines until converged, and write status (reconcile --once)", runReconcile},
		{"status", "show what the last reconcile did, from the status branch (exit 0 when Ready)", runStatus},
		{"validate", "check manifests for errors, offline (for pre-commit hooks and CI lint)", runValidate},
		{"serve", "follow the branch: every push rolled out, status written (commit-to-deploy)", runServe},
		{"version", "print berth's version", runVersion},
	}
}

func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 {
			return run(ctx, []string{args[1], "--help"}, e)
		}
		usage(e.stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	if args[0] == logs.DriverCommand {
		// Hidden: containerd's shim runs the binary so as a container's
		// log driver.
		return runLogDriver(ctx, e, args[1:])
	}
	fmt.Fprintf(e.stderr, "berth: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `berth %s: GitOps for bare-metal fleets.

Usage: berth <command> [flags]

Commands:
`, version)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'berth <command> --help' for a command's flags.
`)
}

// newFlags makes a FlagSet whose --help prints the command's usage, its
// description and its flags to stdout.
func newFlags(e *env, name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: berth %s %s\n\n%s\n\nFlags:\n", name, synopsis, strings.TrimSpace(description))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; it returns a non-negative exit code when the command
// must stop (help asked for, or a usage error). Help goes to stdout; a
// usage error and the usage go to stderr.
func parse(e *env, fs *flag.FlagSet, args []string) (int, bool) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(e.stdout)
			fs.Usage()
			return exitOK, true
		}
	}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) { // -h=true and the like
		return exitOK, true
	}
	if err != nil {
		return exitUsage, true
	}
	return 0, false
}

func fail(e *env, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "berth: "+format+"\n", args...)
	return exitError
}

func runVersion(_ context.Context, e *env, args []string) int {
	fs := newFlags(e, "version", "", "Print the version of this berth binary.")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	fmt.Fprintf(e.stdout, "berth %s\n", version)
	return exitOK
}

// envOr returns the flag default taken from an environment variable.
func envOr(e *env, name, def string) string {
	if v := e.getenv(name); v != "" {
		return v
	}
	return def
}
