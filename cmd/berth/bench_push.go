package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	nodefleet "berth.dev/berth/nodes/fleet"
)

const benchPushHelp = `
'berth bench push' measures commit-to-deploy on a lab (berth lab up, then
berth machines bootstrap; . DIR/lab.env): it runs berth serve in this
process on the lab's fleet repository, then pushes image changes of the
example Deployment (berth/echo:1 and :2 in turn, both already present on
every machine after two warm-up pushes) and times each from git push, as
observed from the agents every
25 ms. It prints the median and the 90th percentile of the time to every
new pod Ready, and of the time until the old pods were gone as well.

--max-surge sets the Deployment's rolling update (maxUnavailable 0): 1 is
the example's own, one pod after another; 3 replaces all three at once.
The repository is left with the last image pushed.

Examples:
  berth bench push
  berth bench push --pushes 20 --max-surge 3
`

func runBenchPush(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "bench push", "[flags]", benchPushHelp)
	var o machinesOpts
	fs.StringVar(&o.repo, "repo", envOr(e, "BERTH_REPO", ""), "the lab's fleet repository, a local `path` (env BERTH_REPO)")
	fs.StringVar(&o.sshKey, "ssh-key", envOr(e, "BERTH_SSH_KEY", ""), "controller's private key `file` (env BERTH_SSH_KEY)")
	fs.StringVar(&o.knownHosts, "known-hosts", envOr(e, "BERTH_KNOWN_HOSTS", ""), "known_hosts `file` (env BERTH_KNOWN_HOSTS)")
	pushes := fs.Int("pushes", 10, "timed `number` of pushes")
	surge := fs.String("max-surge", "1", "the Deployment's maxSurge (`n` or n%)")
	timeout := fs.Duration("timeout", 2*time.Minute, "longest wait for one push to be ready")
	output := fs.String("o", "text", "output `format`: text or json")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	if o.repo == "" || *pushes < 1 {
		fmt.Fprintln(e.stderr, "berth bench push: needs a lab's repository (--repo or BERTH_REPO) and --pushes >= 1")
		return exitUsage
	}
	o.branch = "main"
	f, err := loadFleet(ctx, e, o)
	if err != nil {
		return fail(e, "bench push: %v", err)
	}
	fl, err := nodefleet.New(f.machines, nodefleet.Options{SSH: f.ssh})
	if err != nil {
		return fail(e, "bench push: %v", err)
	}
	defer fl.Close()

	work, err := os.MkdirTemp("", "berth-bench-push-")
	if err != nil {
		return fail(e, "bench push: %v", err)
	}
	defer os.RemoveAll(work)
	git := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=berth bench", "GIT_AUTHOR_EMAIL=bench@localhost", "GIT_COMMITTER_NAME=berth bench", "GIT_COMMITTER_EMAIL=bench@localhost")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := git("clone", "-q", "-b", "main", o.repo, "."); err != nil {
		return fail(e, "bench push: %v", err)
	}
	app := filepath.Join(work, "app.yaml")
	b, err := os.ReadFile(app)
	if err != nil {
		return fail(e, "bench push: the repository has no app.yaml (is it a lab's?): %v", err)
	}
	text := string(b)
	tag := "1"
	if strings.Contains(text, "berth/echo:2") {
		tag = "2"
	}
	if !maxSurge.MatchString(text) || !maxUnavailable.MatchString(text) {
		return fail(e, "bench push: app.yaml has no rollingUpdate maxSurge and maxUnavailable to set")
	}
	text = maxSurge.ReplaceAllString(text, "${1}maxSurge: "+*surge)
	text = maxUnavailable.ReplaceAllString(text, "${1}maxUnavailable: 0")
	push := func(next string) error {
		t := strings.ReplaceAll(text, "berth/echo:"+tag, "berth/echo:"+next)
		if err := os.WriteFile(app, []byte(t), 0o644); err != nil {
			return err
		}
		if err := git("commit", "-q", "-am", "bench: echo "+next); err != nil {
			return err
		}
		return git("push", "-q", "origin", "main")
	}

	// berth serve, in this process.
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan int, 1)
	go func() {
		se := &env{stdout: io.Discard, stderr: io.Discard, getenv: e.getenv, log: slog.New(slog.DiscardHandler)}
		served <- run(sctx, []string{"serve", "--repo", o.repo, "--resync", "1s"}, se)
	}()

	// ready waits until the Deployment runs 3 ready pods of echo:t, and
	// returns when it did and when the old pods were gone too.
	ready := func(t string) (readyAt, settledAt time.Time, err error) {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		for {
			obs, err := fl.Observe(ctx)
			if err != nil {
				return readyAt, settledAt, fmt.Errorf("echo:%s not ready within %v", t, *timeout)
			}
			n, other := 0, 0
			for _, ob := range obs {
				for _, p := range ob.Pods {
					if p.Labels["app"] != "echo" {
						continue
					}
					if p.Ready && !p.Terminating && len(p.ContainerStatuses) == 1 && strings.HasSuffix(p.ContainerStatuses[0].Image, "berth/echo:"+t) {
						n++
					} else {
						other++
					}
				}
			}
			if n == 3 && readyAt.IsZero() {
				readyAt = time.Now()
			}
			if n == 3 && other == 0 {
				return readyAt, time.Now(), nil
			}
			select {
			case <-ctx.Done():
				return readyAt, settledAt, fmt.Errorf("echo:%s not ready within %v (%d ready, %d other pods)", t, *timeout, n, other)
			case code := <-served:
				return readyAt, settledAt, fmt.Errorf("berth serve exited %d", code)
			case <-time.After(25 * time.Millisecond):
			}
		}
	}
	other := map[string]string{"1": "2", "2": "1"}
	fmt.Fprintf(e.stderr, "bench: %d machines, Deployment echo (3 replicas, maxSurge %s, maxUnavailable 0)\n", len(f.machines), *surge)
	var took, settled []time.Duration
	for i := -2; i < *pushes; i++ {
		next := other[tag]
		start := time.Now()
		if err := push(next); err != nil {
			return fail(e, "bench push: %v", err)
		}
		readyAt, settledAt, err := ready(next)
		if err != nil {
			return fail(e, "bench push: %v", err)
		}
		d, s := readyAt.Sub(start), settledAt.Sub(start)
		tag = next
		if i < 0 {
			fmt.Fprintf(e.stderr, "bench: warm-up push (echo:%s): ready after %v\n", next, d.Round(time.Millisecond))
			continue
		}
		took, settled = append(took, d), append(settled, s)
		fmt.Fprintf(e.stderr, "bench: push %d (echo:%s): new pods ready after %v, old ones gone after %v\n", i+1, next, d.Round(time.Millisecond), s.Round(time.Millisecond))
	}
	stop()
	<-served
	p50, p90 := percentiles(took)
	s50, s90 := percentiles(settled)
	if *output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(map[string]any{"pushes": len(took), "maxSurge": *surge, "p50Seconds": p50.Seconds(), "p90Seconds": p90.Seconds(),
			"settledP50Seconds": s50.Seconds(), "settledP90Seconds": s90.Seconds(), "seconds": durationsSeconds(took)})
		return exitOK
	}
	fmt.Fprintf(e.stdout, "push to ready, %d pushes (3 replicas on %d machines, maxSurge %s): p50 %v, p90 %v (old pods gone: p50 %v, p90 %v)\n",
		len(took), len(f.machines), *surge, p50.Round(time.Millisecond), p90.Round(time.Millisecond), s50.Round(time.Millisecond), s90.Round(time.Millisecond))
	return exitOK
}

// The example Deployment's rolling update settings, whatever they are now.
var (
	maxSurge       = regexp.MustCompile(`(?m)^(\s*)maxSurge: .*$`)
	maxUnavailable = regexp.MustCompile(`(?m)^(\s*)maxUnavailable: .*$`)
)

// percentiles are the median and the 90th percentile of ds.
func percentiles(ds []time.Duration) (p50, p90 time.Duration) {
	s := slices.Sorted(slices.Values(ds))
	return s[len(s)/2], s[min(len(s)-1, len(s)*9/10)]
}

func durationsSeconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}
