package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/gitsource/watch"
	nodefleet "berth.dev/berth/nodes/fleet"
	"berth.dev/berth/reconciler"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/status"
	"berth.dev/berth/render"
)

const serveHelp = `
Commit-to-deploy: follow the branch and keep the fleet converged on its
newest commit. A push to a local bare repository is noticed within a
fraction of a second (fsnotify on its refs, a poll as backstop); a remote
one is fetched every --interval, and at once when a webhook says so
(--webhook-listen; GitHub, GitLab and Gitea signatures checked against
--webhook-secret-file; the payload is only a hint to fetch).

Each new commit is rendered, admitted, planned against what the agents
report and rolled out; status goes to the status branch and a git note on
the commit, as with reconcile --once. A commit that does not apply changes
nothing: its status says why at file:line and the last good commit keeps
running until a good one comes. Stops on SIGINT or SIGTERM; pods keep
running.

Examples:
  berth serve
  berth serve --repo ssh://git@git.example.com/fleet.git --interval 30s \
      --webhook-listen 127.0.0.1:9090 --webhook-secret-file /etc/berth/webhook
`

func runServe(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "serve", "[flags]", serveHelp)
	var o machinesOpts
	fleetFlags(fs, e, &o, "`branch` to follow")
	fs.BoolVar(&o.verbose, "v", false, "also log the fleet's connection events")
	interval := fs.Duration("interval", watch.DefaultPollInterval, "how often the branch is read when no event says it moved")
	webhookListen := fs.String("webhook-listen", "", "`address` to serve the push webhook on (POST /webhook); empty: none")
	webhookSecret := fs.String("webhook-secret-file", "", "`file` holding the webhook secret (GitHub and Gitea HMAC, GitLab token)")
	statusBranch := fs.String("status-branch", "", "`branch` for status commits (default: the Cluster's spec.statusBranch, else berth/status)")
	allowEmpty := fs.Bool("allow-empty", false, "apply commits without any workload even though machines run pods (stops them all)")
	reschedule := fs.Duration("reschedule-after", defaultRescheduleAfter, "how long a machine may be unreachable before its Deployments' and Jobs' pods are started elsewhere")
	resync := fs.Duration("resync", reconciler.DefaultResync, "how often a converged fleet is looked at again")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(e.stderr, "berth serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	case o.repo == "":
		fmt.Fprintln(e.stderr, "berth serve: no fleet repository: give --repo or set BERTH_REPO")
		return exitUsage
	case *webhookListen != "" && *webhookSecret == "":
		fmt.Fprintln(e.stderr, "berth serve: --webhook-listen needs --webhook-secret-file (an unsigned webhook is refused)")
		return exitUsage
	}
	// serve is a daemon: its progress is its log (info and up; -v adds
	// the connection events of the fleet).
	log := logger(e, true)
	fleetLog := logger(e, o.verbose)

	repo, err := gitsource.OpenOrClone(ctx, o.repo, gitsource.CloneOptions{SSHKeyPath: o.sshKey, KnownHosts: o.knownHosts})
	if err != nil {
		return fail(e, "serve: %v", err)
	}
	defer repo.Close()
	head, err := repo.Resolve(o.branch)
	if err != nil {
		return fail(e, "serve: %v", err)
	}
	first, err := reconciler.LoadRevision(ctx, repo, head.Hash, reconciler.OfflineOptions{}, nil)
	if err != nil {
		return fail(e, "serve: %v", err)
	}
	branch := statusBranchOf(*statusBranch, first.Desired)
	if branch == o.branch {
		return fail(e, "serve: the status branch is the followed branch %s; choose another (--status-branch)", o.branch)
	}
	prev := readStatus(ctx, repo, branch)
	memory, running := prev.memory, prev.running

	sshc, err := sshConfig(o, fleetLog)
	if err != nil {
		return fail(e, "serve: %v", err)
	}
	fl, err := nodefleet.New(first.Desired.Machines(), nodefleet.Options{SSH: sshc, Logger: fleetLog})
	if err != nil {
		return fail(e, "serve: %v", err)
	}
	defer fl.Close()

	wopts := watch.Options{Branch: o.branch, Interval: *interval, Logger: log}
	if p := repo.Path(); p != "" && !gitsource.IsURL(o.repo) {
		wopts.Dir = p
	} else {
		wopts.Resolve = func(ctx context.Context) (string, error) {
			if err := repo.Fetch(ctx); err != nil {
				return "", err
			}
			c, err := repo.Resolve(o.branch)
			return c.Hash, err
		}
	}
	w, err := watch.New(wopts)
	if err != nil {
		return fail(e, "serve: %v", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	go func() { errc <- w.Run(ctx) }()
	if *webhookListen != "" {
		secret, err := os.ReadFile(*webhookSecret)
		if err != nil {
			return fail(e, "serve: webhook secret: %v", err)
		}
		sec := watch.Secret(strings.TrimSpace(string(secret)))
		h, err := watch.Webhook(w.Nudge, watch.WebhookOptions{GitHubSecret: sec, GitLabToken: sec, GiteaSecret: sec, Logger: log})
		if err != nil {
			return fail(e, "serve: %v", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/webhook", h)
		l, err := net.Listen("tcp", *webhookListen)
		if err != nil {
			return fail(e, "serve: webhook: %v", err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.Serve(l) }()
		defer srv.Close()
		log.Info("webhook listening", "address", l.Addr().String())
	}

	commits := make(chan string)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-w.Events():
				if ev.Commit == "" {
					log.Warn("branch deleted; the last commit keeps running", "branch", o.branch)
					continue
				}
				log.Info("branch moved", "branch", o.branch, "commit", ev.Commit, "source", ev.Source)
				select {
				case commits <- ev.Commit:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	sink := &statusSink{repo: repo, watched: o.branch, branch: branch}
	c := &reconciler.Controller{
		Converge: reconciler.Converge{
			Machines: fleetMachines{fl},
			Options:  live.Options{AllowEmpty: *allowEmpty, RescheduleAfter: *reschedule},
			Logger:   log,
		},
		Load: func(ctx context.Context, commit string) (*render.Desired, error) {
			r, err := reconciler.LoadRevision(ctx, repo, commit, reconciler.OfflineOptions{}, nil)
			if err != nil {
				return nil, err
			}
			if err := fl.Update(r.Desired.Machines()); err != nil {
				// Two Machines of one name: the commit does not apply.
				r.Desired.Diagnostics = append(r.Desired.Diagnostics, render.Diagnostic{Severity: render.SeverityError, Message: err.Error()})
			}
			return r.Desired, nil
		},
		Status: func(ctx context.Context, in status.Input) error {
			st, hash, changed, err := sink.write(ctx, in)
			if changed && st != nil {
				log.Info("status", "message", st.Message, "branch", branch, "commit", short(hash))
			}
			return err
		},
		Resync: *resync,
		Logger: log,
	}
	log.Info("serving", "repo", o.repo, "branch", o.branch, "status", branch, "machines", len(first.Desired.Machines()))
	go func() { errc <- c.Run(ctx, commits, memory, running) }()
	select {
	case <-ctx.Done():
		log.Info("stopping; pods keep running")
		return exitOK
	case err := <-errc:
		if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, http.ErrServerClosed) {
			return exitOK
		}
		return fail(e, "serve: %v", err)
	}
}
