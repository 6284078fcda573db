package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/agent/httpapi"
	"berth.dev/berth/nodes/agent/network"
	"berth.dev/berth/nodes/runtime"
	"berth.dev/berth/render/api/v1alpha1"
)

const agentHelp = `
Run the node agent: the daemon on each machine that runs exactly the pods
the controller assigns to it, under containerd, and keeps them running,
probed and restarted while the controller is away. 'berth machines
bootstrap' installs it (as a systemd unit where systemd runs); there is
seldom a reason to start it by hand.

It listens on nothing but its unix socket (mode 0600, root's); the
controller reaches that socket through SSH. It refuses to start while
another agent serves the socket. The desired pods are kept under
--state-dir, so an agent that restarts adopts the containers it left
running instead of restarting them.

The controller also sets the machine's network: the agent then attaches
new pods to a bridge (berth0) with the standard CNI plugins
(/usr/lib/cni), routes the other machines' pod CIDRs, writes Service
routing and NetworkPolicies into the nftables table "berth", serves the
cluster DNS on port 53 of the pod gateway, and holds LoadBalancer
addresses. Until it does, pods have loopback only.

On SIGTERM or SIGINT it stops taking requests, lets those in progress
finish (up to 10s), and exits. Pods keep running while no agent is there.

Examples:
  berth agent
  berth agent --node-name lab1 --log-format json
`

func runAgent(ctx context.Context, e *env, args []string) int {
	hostname, _ := os.Hostname()
	fs := newFlags(e, "agent", "[flags]", agentHelp)
	var cfg agentConfig
	fs.StringVar(&cfg.stateDir, "state-dir", "/var/lib/berth", "`directory` for the agent's state: desired pods, pod directories, network namespaces")
	fs.StringVar(&cfg.socket, "socket", "/run/berth/agent.sock", "unix socket `path` to serve the agent API on (made 0600)")
	fs.StringVar(&cfg.containerd, "containerd-address", "/run/containerd/containerd.sock", "containerd's socket `path`")
	fs.StringVar(&cfg.logDir, "log-dir", "/var/log/berth/pods", "`directory` for container logs")
	fs.StringVar(&cfg.namespace, "namespace", runtime.DefaultNamespace, "containerd `namespace` of the agent's containers (one per agent sharing a containerd)")
	fs.StringVar(&cfg.nodeName, "node-name", hostname, "the machine's `name` as the agent reports it")
	fs.StringVar(&cfg.registries, "registries", "", "JSON `file` with the Cluster document's registries (plain HTTP hosts, mirrors, CA files): [{\"host\": \"...\", \"plainHTTP\": true}]")
	logFormat := fs.String("log-format", "text", "log `format` on stderr: text or json")
	logLevel := fs.String("log-level", "info", "least `level` logged: debug, info, warn or error")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "berth agent: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(e.stderr, "berth agent: --log-level must be debug, info, warn or error, not %q\n", *logLevel)
		return exitUsage
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch *logFormat {
	case "text":
		cfg.log = slog.New(slog.NewTextHandler(e.stderr, hopts))
	case "json":
		cfg.log = slog.New(slog.NewJSONHandler(e.stderr, hopts))
	default:
		fmt.Fprintf(e.stderr, "berth agent: --log-format must be text or json, not %q\n", *logFormat)
		return exitUsage
	}
	for _, p := range []struct{ flag, path string }{{"state-dir", cfg.stateDir}, {"socket", cfg.socket}, {"log-dir", cfg.logDir}} {
		if !filepath.IsAbs(p.path) {
			fmt.Fprintf(e.stderr, "berth agent: --%s must be an absolute path, not %q\n", p.flag, p.path)
			return exitUsage
		}
	}
	if cfg.nodeName == "" {
		fmt.Fprintln(e.stderr, "berth agent: --node-name is required (the hostname is unknown)")
		return exitUsage
	}

	if err := serveAgent(ctx, cfg); err != nil {
		return fail(e, "agent: %v", err)
	}
	return exitOK
}

type agentConfig struct {
	stateDir, socket, containerd, logDir, namespace, nodeName, registries string
	log                                                                   *slog.Logger
}

// serveAgent runs the pod manager and serves it on the socket until ctx
// ends, then stops both; the pods keep running.
func serveAgent(ctx context.Context, cfg agentConfig) error {
	var registries []v1alpha1.Registry
	if cfg.registries != "" {
		b, err := os.ReadFile(cfg.registries)
		if err != nil {
			return fmt.Errorf("registries: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&registries); err != nil {
			return fmt.Errorf("registries %s: %w", cfg.registries, err)
		}
	}

	// The socket first: its lock keeps a second agent from driving the
	// same pods.
	l, err := httpapi.ListenUnix(cfg.socket)
	if err != nil {
		return err
	}
	defer l.Close()

	rt, err := runtime.New(ctx, runtime.Options{
		Address:    cfg.containerd,
		Namespace:  cfg.namespace,
		StateDir:   cfg.stateDir,
		Registries: registries,
		Logger:     cfg.log,
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	runcVersion, err := runtime.RuncVersion(ctx)
	if err != nil {
		cfg.log.Warn("runc version unknown", "err", err)
	}
	netw, err := network.New(network.Options{
		Pods:     rt,
		StateDir: filepath.Join(cfg.stateDir, "network"),
		Logger:   cfg.log,
	})
	if err != nil {
		return err
	}
	defer netw.Close()
	ing := network.NewIngress(cfg.log)
	defer ing.Close()
	m, err := agent.New(agent.Options{
		Network:      agent.NetworkAppliers{netw, ing},
		RuncVersion:  runcVersion,
		Runtime:      rt,
		StateDir:     cfg.stateDir,
		LogDir:       cfg.logDir,
		NodeName:     cfg.nodeName,
		Logger:       cfg.log,
		AgentVersion: version,
	})
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(m.Metrics().Collectors()...)
	h := httpapi.NewHandler(m, httpapi.Options{
		Logger:   cfg.log.With("component", "api"),
		Registry: reg,
		Version:  version,
	})

	cfg.log.Info("agent listening", "socket", cfg.socket, "node", cfg.nodeName, "version", version,
		"containerd", cfg.containerd, "namespace", cfg.namespace, "stateDir", cfg.stateDir)
	// Either failing stops the other. The API stops first on a signal:
	// both see ctx end, and Serve returns once requests have finished.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var runErr, serveErr error
	wg.Go(func() {
		defer cancel()
		if runErr = m.Run(ctx); runErr != nil {
			runErr = fmt.Errorf("pod manager: %w", runErr)
		}
	})
	wg.Go(func() {
		defer cancel()
		serveErr = httpapi.Serve(ctx, l, h)
	})
	wg.Wait()
	cfg.log.Info("agent stopped")
	return errors.Join(runErr, serveErr)
}
