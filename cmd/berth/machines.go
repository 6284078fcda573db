package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/sshx"
	"berth.dev/berth/render/api/v1alpha1"
)

const machinesHelp = `
Install, inspect and remove berth's agent on the fleet's machines, over SSH.
The machines are the Machine documents of the fleet repository (--repo) at
--branch; the Cluster document's registries are handed to the agents.

Subcommands:
  bootstrap [NAME...]    install, start or upgrade the agent (all machines by
                         default); new installs run in parallel, upgrades of a
                         running agent one machine at a time, pods running on
  status [-o json]       agent version, uptime, containerd, capacity and pods
                         of every machine; unreachable ones are listed
  import-image FILE [NAME...]
                         import an image archive into the machines' containerd
                         (all machines by default), for machines with no registry
  uninstall NAME         stop the agent and remove what bootstrap installed;
                         --purge also stops its pods and removes its state

Host keys are pinned by the Machine's spec.ssh.hostKey or --known-hosts; an
unknown key is refused unless --accept-new-host-keys, which records it.

Exit status: 0 ok, 1 a machine failed or is unhealthy, 64 usage.

Examples:
  . /tmp/lab/lab.env && berth machines bootstrap
  berth machines status -o json
  berth machines uninstall lab2 --purge
`

// machinesOpts are the flags every machines subcommand takes.
type machinesOpts struct {
	repo, branch, sshKey, knownHosts, binary string
	acceptNew, purge, verbose                bool
	output                                   string
}

func runMachines(ctx context.Context, e *env, args []string) int {
	sub := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	if sub == "import-image" {
		return runImportImage(ctx, e, args)
	}
	synopsis := map[string]string{
		"bootstrap": "[flags] [NAME...]",
		"status":    "[flags] [-o text|json]",
		"uninstall": "[flags] NAME [--purge]",
	}
	if sub == "" {
		fs := newFlags(e, "machines", "bootstrap|status|uninstall [flags]", machinesHelp)
		if code, stop := parse(e, fs, args); stop {
			return code
		}
		fmt.Fprintln(e.stderr, "berth machines: a subcommand is needed: bootstrap, status or uninstall")
		fs.Usage()
		return exitUsage
	}
	if _, ok := synopsis[sub]; !ok {
		fmt.Fprintf(e.stderr, "berth machines: unknown subcommand %q (bootstrap, status, uninstall)\n", sub)
		return exitUsage
	}
	fs := newFlags(e, "machines "+sub, synopsis[sub], machinesHelp)
	var o machinesOpts
	fleetFlags(fs, e, &o, "`branch` (or revision) of the fleet repository")
	fs.BoolVar(&o.acceptNew, "accept-new-host-keys", false, "accept host keys no pin or known host vouches for, and record them in --known-hosts")
	fs.BoolVar(&o.verbose, "v", false, "log every step and connection event to stderr (default: warnings only)")
	switch sub {
	case "bootstrap":
		fs.StringVar(&o.binary, "binary", "", "berth `binary` to install (default: this executable)")
	case "status":
		fs.StringVar(&o.output, "o", "text", "output `format`: text or json")
		fs.StringVar(&o.output, "output", "text", "same as -o")
	case "uninstall":
		fs.BoolVar(&o.purge, "purge", false, "also stop the agent's pods and remove its state and pod logs")
	}
	names, code, stop := parseInterspersed(e, fs, args)
	if stop {
		return code
	}
	if o.repo == "" {
		fmt.Fprintf(e.stderr, "berth machines %s: no fleet repository: give --repo or set BERTH_REPO\n", sub)
		return exitUsage
	}
	if o.acceptNew && o.knownHosts == "" {
		fmt.Fprintf(e.stderr, "berth machines %s: --accept-new-host-keys needs --known-hosts to record them in\n", sub)
		return exitUsage
	}
	switch sub {
	case "status":
		if o.output != "text" && o.output != "json" {
			fmt.Fprintf(e.stderr, "berth machines status: -o must be text or json, not %q\n", o.output)
			return exitUsage
		}
		if len(names) > 0 {
			fmt.Fprintln(e.stderr, "berth machines status: no arguments expected")
			return exitUsage
		}
	case "uninstall":
		if len(names) != 1 {
			fmt.Fprintln(e.stderr, "berth machines uninstall: exactly one machine NAME")
			return exitUsage
		}
	}

	f, err := loadFleet(ctx, e, o)
	if err != nil {
		return fail(e, "machines %s: %v", sub, err)
	}
	machines, err := f.pick(names)
	if err != nil {
		fmt.Fprintf(e.stderr, "berth machines %s: %v\n", sub, err)
		return exitUsage
	}
	switch sub {
	case "bootstrap":
		return machinesBootstrap(ctx, e, f, machines, o)
	case "status":
		return machinesStatus(ctx, e, f, machines, o)
	default:
		return machinesUninstall(ctx, e, f, machines[0], o)
	}
}

// fleetFlags are the flags of every command that reads the fleet and
// reaches its machines: --repo, --branch (described by branchUsage),
// --ssh-key and --known-hosts, with their BERTH_* environment defaults.
func fleetFlags(fs *flag.FlagSet, e *env, o *machinesOpts, branchUsage string) {
	fs.StringVar(&o.repo, "repo", envOr(e, "BERTH_REPO", ""), "fleet repository: a local `path` or a URL (env BERTH_REPO)")
	fs.StringVar(&o.branch, "branch", "main", branchUsage)
	fs.StringVar(&o.sshKey, "ssh-key", envOr(e, "BERTH_SSH_KEY", ""), "controller's private key `file` (env BERTH_SSH_KEY; default: the ssh-agent)")
	fs.StringVar(&o.knownHosts, "known-hosts", envOr(e, "BERTH_KNOWN_HOSTS", ""), "known_hosts `file` for machines without a pinned spec.ssh.hostKey (env BERTH_KNOWN_HOSTS)")
}

// parseInterspersed parses flags that may come after the positional
// arguments (berth machines uninstall lab1 --purge) and returns those.
func parseInterspersed(e *env, fs *flag.FlagSet, args []string) ([]string, int, bool) {
	if code, stop := parse(e, fs, args); stop {
		return nil, code, true
	}
	var pos []string
	for rest := fs.Args(); len(rest) > 0; rest = fs.Args() {
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		if err := fs.Parse(rest[1:]); err != nil {
			return nil, exitUsage, true
		}
	}
	return pos, 0, false
}

// logger is the command's logger: e's, with its debug and info records
// dropped unless verbose.
func logger(e *env, verbose bool) *slog.Logger {
	if e.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	if verbose {
		return e.log
	}
	return slog.New(minLevel{e.log.Handler(), slog.LevelWarn})
}

// minLevel drops the records of h below level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}

// fleet is what the machines commands read of the repository.
type fleet struct {
	machines   []*v1alpha1.Machine
	registries []v1alpha1.Registry
	ssh        sshx.Config
	log        *slog.Logger
}

func loadFleet(ctx context.Context, e *env, o machinesOpts) (*fleet, error) {
	d, err := loadRevision(ctx, o.repo, o.branch, ".")
	if err != nil {
		return nil, fmt.Errorf("read fleet: %w", err)
	}
	f := &fleet{machines: d.Machines(), log: logger(e, o.verbose)}
	if len(f.machines) == 0 {
		if d.Diagnostics.HasErrors() {
			for _, diag := range d.Diagnostics {
				fmt.Fprintln(e.stderr, diag)
			}
		}
		return nil, fmt.Errorf("%s at %s has no Machine documents", o.repo, o.branch)
	}
	if d.Cluster != nil {
		f.registries = d.Cluster.Spec.Registries
	}
	if f.ssh, err = sshConfig(o, f.log); err != nil {
		return nil, err
	}
	return f, nil
}

// sshConfig is how the command reaches machines: the controller's key
// (--ssh-key or the ssh-agent), --known-hosts, --accept-new-host-keys.
func sshConfig(o machinesOpts, log *slog.Logger) (sshx.Config, error) {
	auth, err := sshx.AuthFrom(o.sshKey)
	if err != nil {
		return sshx.Config{}, err
	}
	c := sshx.Config{Auth: auth, KnownHostsFile: o.knownHosts, AcceptUnknown: o.acceptNew, Logger: log}
	return c, c.Validate()
}

// pick returns the named machines, or all when names is empty.
func (f *fleet) pick(names []string) ([]*v1alpha1.Machine, error) {
	if len(names) == 0 {
		return f.machines, nil
	}
	var out []*v1alpha1.Machine
	for _, n := range names {
		i := slices.IndexFunc(f.machines, func(m *v1alpha1.Machine) bool { return m.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("no machine %q in the fleet", n)
		}
		if !slices.Contains(out, f.machines[i]) {
			out = append(out, f.machines[i])
		}
	}
	return out, nil
}

func agentSocket(m *v1alpha1.Machine) string {
	if s := m.Spec.Agent.Socket; s != "" {
		return s
	}
	return v1alpha1.DefaultSocket
}

func agentBinary(m *v1alpha1.Machine) string {
	if s := m.Spec.Agent.BinaryPath; s != "" {
		return s
	}
	return sshx.DefaultBinaryPath
}

// hostKeyHint is what to pin for a machine whose key was refused as
// unknown: the key for spec.ssh.hostKey and a known_hosts line.
func hostKeyHint(err error) string {
	var he *sshx.HostKeyError
	if !errors.As(err, &he) || !errors.Is(err, sshx.ErrUnknownHost) || he.Offered == nil {
		return ""
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(he.Offered)))
	return fmt.Sprintf("  to trust it, pin in Machine %s:  spec.ssh.hostKey: %s\n  or add to known_hosts:  %s\n",
		he.Machine, key, knownhosts.Line([]string{knownhosts.Normalize(he.Address)}, he.Offered))
}

// bootstrapResult is one machine's bootstrap.
type bootstrapResult struct {
	rep sshx.Report
	err error
}

func machinesBootstrap(ctx context.Context, e *env, f *fleet, machines []*v1alpha1.Machine, o machinesOpts) int {
	bin := o.binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return fail(e, "machines bootstrap: find this executable: %v", err)
		}
	}
	sum, err := fileSHA256(bin)
	if err != nil {
		return fail(e, "machines bootstrap: %v", err)
	}
	start := time.Now()
	conns := make([]*sshx.Conn, len(machines))
	for i, m := range machines {
		c, err := sshx.New(m, f.ssh)
		if err != nil {
			closeAll(conns)
			return fail(e, "machines bootstrap: %v", err)
		}
		conns[i] = c
	}
	defer closeAll(conns)

	results := make([]bootstrapResult, len(machines))
	var mu sync.Mutex // serializes output lines
	one := func(i int) {
		opts := sshx.BootstrapOptions{
			Machine:    machines[i],
			BinaryPath: bin,
			Version:    version,
			Namespace:  machines[i].Spec.Agent.Namespace,
			Registries: f.registries,
			Logger:     f.log,
		}
		rep, err := sshx.Bootstrap(ctx, conns[i], opts)
		results[i] = bootstrapResult{rep, err}
		mu.Lock()
		defer mu.Unlock()
		printBootstrap(e.stdout, machines[i].Name, rep, err)
	}

	// A running agent whose binary differs is upgraded, one machine at a
	// time, so that a bad release stops at the first machine; the others
	// (new installs, restarts, checks) go in parallel.
	upgrade := make([]bool, len(machines))
	var wg sync.WaitGroup
	for i := range machines {
		wg.Go(func() { upgrade[i] = runningOther(ctx, conns[i], machines[i], sum) })
	}
	wg.Wait()
	for i := range machines {
		if !upgrade[i] {
			wg.Go(func() { one(i) })
		}
	}
	wg.Wait()
	stopped := false
	for i := range machines {
		if !upgrade[i] {
			continue
		}
		if stopped {
			results[i].err = errors.New("not upgraded: an earlier upgrade failed")
			fmt.Fprintf(e.stdout, "%-12s skipped  (an earlier upgrade failed)\n", machines[i].Name)
			continue
		}
		one(i)
		stopped = results[i].err != nil
	}

	counts := map[string]int{}
	failed := 0
	for _, r := range results {
		if r.err != nil {
			failed++
			continue
		}
		counts[r.rep.Action]++
	}
	var parts []string
	for _, a := range []string{"installed", "upgraded", "restarted", "started", "unchanged"} {
		if counts[a] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[a], a))
		}
	}
	if failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", failed))
	}
	noun := "machines"
	if len(machines) == 1 {
		noun = "machine"
	}
	fmt.Fprintf(e.stdout, "%d %s: %s in %v\n", len(machines), noun, strings.Join(parts, ", "), time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		return exitError
	}
	return exitOK
}

func printBootstrap(w io.Writer, name string, rep sshx.Report, err error) {
	if err != nil {
		fmt.Fprintf(w, "%-12s failed   after %v: %v\n", name, rep.Duration.Round(time.Millisecond), err)
		fmt.Fprint(w, hostKeyHint(err))
		return
	}
	from := ""
	if rep.Action == "upgraded" && rep.PreviousVersion != "" {
		from = " (from " + rep.PreviousVersion + ")"
	}
	fmt.Fprintf(w, "%-12s %-9s version %s%s, took %v\n", name, rep.Action, rep.AgentVersion, from, rep.Duration.Round(time.Millisecond))
}

// runningOther says whether the machine runs an agent that answers and
// whose installed binary is not the one with sha256 sum: bootstrapping
// it is an upgrade. Anything unknown (unreachable, no agent) is not.
func runningOther(ctx context.Context, c *sshx.Conn, m *v1alpha1.Machine, sum string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ac := agentclient.New(c.UnixDialer(agentSocket(m)), agentclient.Options{MaxConns: 1})
	defer ac.Close()
	if _, err := ac.Version(ctx); err != nil {
		return false
	}
	out, _, code, err := c.Run(ctx, "sha256sum "+sshx.Quote(agentBinary(m)), nil)
	if err != nil || code != 0 {
		return true // it answers, but its binary is unreadable: be careful
	}
	fields := strings.Fields(string(out))
	return len(fields) == 0 || fields[0] != sum
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func closeAll(conns []*sshx.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// machineStatus is one machine in `berth machines status`.
type machineStatus struct {
	Machine   string        `json:"machine"`
	Address   string        `json:"address"`
	Reachable bool          `json:"reachable"`
	Healthy   bool          `json:"healthy"`
	Error     string        `json:"error,omitempty"`
	Node      *api.NodeInfo `json:"node,omitempty"`
	// hint says how to pin an unknown host key.
	hint string
}

func machinesStatus(ctx context.Context, e *env, f *fleet, machines []*v1alpha1.Machine, o machinesOpts) int {
	out := make([]machineStatus, len(machines))
	var wg sync.WaitGroup
	for i, m := range machines {
		wg.Go(func() { out[i] = statusOf(ctx, f, m) })
	}
	wg.Wait()
	unhealthy := 0
	for _, s := range out {
		if !s.Healthy {
			unhealthy++
		}
	}
	if o.output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fail(e, "machines status: %v", err)
		}
	} else {
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MACHINE\tADDRESS\tREACHABLE\tAGENT\tUPTIME\tCONTAINERD\tCPU\tMEMORY\tPODS")
		for _, s := range out {
			reach := "no"
			if s.Reachable {
				reach = "yes"
			}
			agent, uptime, cd, cpu, mem, pods := "down", "-", "-", "-", "-", "-"
			if n := s.Node; n != nil {
				agent, cd, pods = n.AgentVersion, n.ContainerdVersion, fmt.Sprint(n.Pods)
				if n.RuntimeError != "" {
					cd = "down"
				}
				uptime = time.Since(n.StartedAt).Round(time.Second).String()
				if q, ok := n.Capacity["cpu"]; ok {
					cpu = q.String()
				}
				if q, ok := n.Capacity["memory"]; ok {
					mem = gib(q)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Machine, s.Address, reach, agent, uptime, cd, cpu, mem, pods)
		}
		tw.Flush()
		for _, s := range out {
			if s.Error != "" {
				fmt.Fprintf(e.stderr, "%s: %s\n%s", s.Machine, s.Error, s.hint)
			}
		}
	}
	if unhealthy > 0 {
		fmt.Fprintf(e.stderr, "berth: %d of %d machines unhealthy\n", unhealthy, len(out))
		return exitError
	}
	return exitOK
}

func gib(q resource.Quantity) string {
	return fmt.Sprintf("%.1fGi", float64(q.Value())/(1<<30))
}

// statusOf reaches one machine and asks its agent about the node.
func statusOf(ctx context.Context, f *fleet, m *v1alpha1.Machine) machineStatus {
	s := machineStatus{Machine: m.Name, Address: m.Spec.Address}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := sshx.New(m, f.ssh)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		s.Error, s.hint = err.Error(), hostKeyHint(err)
		return s
	}
	s.Reachable = true
	// MaxConns 4 leaves channels of the connection for commands.
	ac := agentclient.New(c.UnixDialer(agentSocket(m)), agentclient.Options{MaxConns: 4})
	defer ac.Close()
	n, err := ac.Node(ctx)
	if err != nil {
		s.Error = "agent: " + err.Error()
		return s
	}
	s.Node, s.Healthy = &n, n.RuntimeError == ""
	if !s.Healthy {
		s.Error = "containerd: " + n.RuntimeError
	}
	return s
}

func machinesUninstall(ctx context.Context, e *env, f *fleet, m *v1alpha1.Machine, o machinesOpts) int {
	c, err := sshx.New(m, f.ssh)
	if err != nil {
		return fail(e, "machines uninstall: %v", err)
	}
	defer c.Close()
	rep, err := sshx.Uninstall(ctx, c, m, sshx.UninstallOptions{Purge: o.purge, Logger: f.log})
	for _, w := range rep.Warnings {
		fmt.Fprintf(e.stderr, "%s: warning: %s\n", m.Name, w)
	}
	if err != nil {
		fmt.Fprint(e.stderr, hostKeyHint(err))
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "%s: agent %s", m.Name, rep.Stopped)
	if o.purge {
		fmt.Fprintf(e.stdout, ", %d pods stopped", rep.PodsStopped)
	}
	fmt.Fprintf(e.stdout, ", %d paths removed\n", len(rep.Removed))
	return exitOK
}
