package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"text/tabwriter"
	"time"

	"berth.dev/berth/nodes/agent/bench"
)

const benchHelp = `
Benchmark berth on this machine. 'berth bench agent' measures how long the
node agent takes to bring N pods of the echo test image to Running and
Ready, and, in the same invocation, how long 'podman kube play' takes for
the same N pods; it prints both medians and the ratio.

It needs root. It starts a private containerd (under /run/berth-bench-XXXX,
CRI plugin disabled) and a private docker-registry on 127.0.0.1 holding
berth/echo:1, and runs the agent's pod manager in this process on that
containerd. The echo image is compiled with the go command, so run it
from the berth checkout with Go installed. Both contenders start with
the image already present (pulled once, not timed). Everything is
removed afterwards, also on Ctrl-C.

Podman needs default_ulimits on this kind of machine: when
/etc/containers/containers.conf lacks it, podman is given a copy with it
through CONTAINERS_CONF; /etc is not modified. kube play's infra
containers need Debian's catatonit package.

Time to ready: for berth, until the agent reports every pod Ready by its
readiness probe (httpGet /readyz, periodSeconds 1); for podman 4.3, which
runs no readiness probes, until every container runs and /readyz answers
200 inside every pod's network namespace, polled every 50 ms.

Examples:
  berth bench agent
  berth bench agent --pods 20 --runs 1 --peer none -o json
`

func runBench(ctx context.Context, e *env, args []string) int {
	if len(args) > 0 && args[0] == "push" {
		return runBenchPush(ctx, e, args[1:])
	}
	if len(args) == 0 || args[0] != "agent" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintf(e.stdout, "Usage: berth bench agent|push [flags]\n%s%s", benchHelp, benchPushHelp)
			return exitOK
		}
		fmt.Fprintf(e.stderr, "Usage: berth bench agent|push [flags]\n%s%s", benchHelp, benchPushHelp)
		return exitUsage
	}
	fs := newFlags(e, "bench agent", "[flags]", benchHelp)
	var opts bench.Options
	fs.IntVar(&opts.Pods, "pods", 50, "`number` of pods per run")
	fs.IntVar(&opts.Runs, "runs", 3, "`number` of runs per contender (medians are reported)")
	fs.StringVar(&opts.Peer, "peer", bench.PeerPodman, "what to compare with: podman or none")
	fs.BoolVar(&opts.Keep, "keep", false, "keep the temporary directory (logs, state) afterwards")
	fs.IntVar(&opts.BasePort, "base-port", 18080, "`port` of the first pod; pod i listens on 127.0.0.1:port+i in its own network namespace")
	fs.DurationVar(&opts.Timeout, "timeout", 5*time.Minute, "longest wait for one run's pods")
	output := fs.String("o", "text", "output `format`: text or json")
	verbose := fs.Bool("v", false, "log the agent's warnings on stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (the agent side) to `file`")
	if code, stop := parse(e, fs, args[1:]); stop {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "berth bench agent: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(e.stderr, "berth bench agent: -o must be text or json, not %q\n", *output)
		return exitUsage
	}
	if opts.Pods < 1 || opts.Runs < 1 {
		fmt.Fprintln(e.stderr, "berth bench agent: --pods and --runs must be at least 1")
		return exitUsage
	}
	if opts.Peer != bench.PeerPodman && opts.Peer != bench.PeerNone {
		fmt.Fprintf(e.stderr, "berth bench agent: --peer must be podman or none, not %q\n", opts.Peer)
		return exitUsage
	}
	opts.Progress = func(format string, a ...any) {
		fmt.Fprintf(e.stderr, "bench: "+format+"\n", a...)
	}
	if *verbose {
		opts.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fail(e, "bench agent: %v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(e, "bench agent: cpu profile: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench.Bench(ctx, opts)
	if res != nil && *output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else if res != nil && len(res.Berth.Runs) > 0 {
		printBench(e, res)
	}
	if err != nil {
		return fail(e, "bench agent: %v", err)
	}
	return exitOK
}

func printBench(e *env, res *bench.Result) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	fmt.Fprintf(e.stdout, "%d pods of %s, %d run(s) each, medians\n", res.Pods, res.Image, res.Runs)
	fmt.Fprintf(e.stdout, "image: %s\n\n", res.ImageNote)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTENDER\tALL RUNNING\tALL READY\tPER POD (READY)\tTEARDOWN")
	row := func(c *bench.Contender) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, ms(c.MedianRunning), ms(c.MedianReady),
			ms(c.MedianReady/time.Duration(res.Pods)), ms(c.MedianTeardown))
	}
	row(&res.Berth)
	if res.Podman != nil && len(res.Podman.Runs) > 0 {
		row(res.Podman)
	}
	tw.Flush()
	fmt.Fprintf(e.stdout, "\nberth ready:  %s\n", res.Berth.ReadyMeans)
	if res.Podman != nil {
		fmt.Fprintf(e.stdout, "podman ready: %s\n", res.Podman.ReadyMeans)
	}
	if res.Ratio > 0 {
		fmt.Fprintf(e.stdout, "\nratio (podman / berth, time to all ready): %.2fx\n", res.Ratio)
	}
	if res.Dir != "" {
		fmt.Fprintf(e.stdout, "kept: %s\n", res.Dir)
	}
}
