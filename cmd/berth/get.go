package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"berth.dev/berth/nodes/api"
	nodefleet "berth.dev/berth/nodes/fleet"
	"berth.dev/berth/reconciler/status"
)

const getHelp = `
Shows what the fleet runs, with kubectl's columns.

pods (po), machines (machine, mc), services (svc) and endpoints (ep) are
asked of every machine's agent over SSH, now (services and endpoints as the
agents route them: ClusterIPs, node ports and LoadBalancer addresses as
allocated, and the ready endpoints). Machines that cannot be reached are named on stderr, and the
command exits 1; what the others answered is still shown.

deployments (deploy), statefulsets (sts), daemonsets (ds), jobs and
cronjobs (cj) are read from the status branch that berth reconcile writes
(no SSH: fast, and works in CI): they are as of the last reconcile pass that
changed something. Labels (-l), CronJob schedules and -o wide's containers
come from the objects in git at the commit that status is about. AGE is the
time since the status branch first recorded the object (the oldest status
commit of the unbroken run holding it; past 1000 status commits it is a
lower bound), except for a Job, whose AGE is since it started. When that
status is Progressing, stderr says so; when its commit could not be applied,
the workloads shown are those of the last commit that was (it still runs),
and stderr says so.

Examples:
  berth get pods -A
  berth get pods -n shop -l app=web -o wide
  berth get machines -o yaml
  berth get svc -A
  berth get endpoints -o wide
  berth get deploy -A
  berth get cronjobs -n batch -o json
`

func runGet(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "get", "RESOURCE [flags]", getHelp)
	var o machinesOpts
	fleetFlags(fs, e, &o, "`branch` (or revision) of the fleet repository")
	fs.BoolVar(&o.verbose, "v", false, "log connection events to stderr")
	statusBranch := fs.String("status-branch", "", "`branch` holding the status, for workloads (default: the Cluster's spec.statusBranch, else berth/status)")
	ns := fs.String("n", "default", "`namespace` of the pods or workloads")
	all := fs.Bool("A", false, "every namespace")
	selector := fs.String("l", "", "label `selector` (app=web,tier!=db)")
	output := fs.String("o", "", "output `format`: wide, yaml or json (default: a table)")
	pos, code, stop := parseInterspersed(e, fs, args)
	if stop {
		return code
	}
	const resources = "pods, machines, services, endpoints, deployments, statefulsets, daemonsets, jobs, cronjobs"
	if len(pos) != 1 {
		fmt.Fprintln(e.stderr, "berth get: exactly one RESOURCE: "+resources)
		return exitUsage
	}
	kind := map[string]string{"pods": "pods", "pod": "pods", "po": "pods", "machines": "machines", "machine": "machines", "mc": "machines",
		"services": "services", "service": "services", "svc": "services", "endpoints": "endpoints", "ep": "endpoints"}[pos[0]]
	workloadKind := workloadResources[pos[0]]
	if kind == "" && workloadKind == "" {
		fmt.Fprintf(e.stderr, "berth get: unknown resource %q (%s)\n", pos[0], resources)
		return exitUsage
	}
	switch *output {
	case "", "wide", "yaml", "json":
	default:
		fmt.Fprintf(e.stderr, "berth get: -o must be wide, yaml or json, not %q\n", *output)
		return exitUsage
	}
	sel, err := labels.Parse(*selector)
	if err != nil {
		fmt.Fprintf(e.stderr, "berth get: -l %q: %v\n", *selector, err)
		return exitUsage
	}
	if o.repo == "" {
		fmt.Fprintln(e.stderr, "berth get: no fleet repository: give --repo or set BERTH_REPO")
		return exitUsage
	}
	namespace := *ns
	if *all {
		namespace = ""
	}
	now := time.Now()
	if workloadKind != "" {
		so := statusOpts{repo: o.repo, branch: o.branch, statusBranch: *statusBranch, sshKey: o.sshKey, knownHosts: o.knownHosts}
		return getWorkloads(ctx, e, so, workloadKind, namespace, sel, *output, now)
	}
	f, err := loadFleet(ctx, e, o)
	if err != nil {
		return fail(e, "get: %v", err)
	}
	fl, err := nodefleet.New(f.machines, nodefleet.Options{SSH: f.ssh, Logger: f.log})
	if err != nil {
		return fail(e, "get: %v", err)
	}
	defer fl.Close()
	obs, err := fl.Observe(ctx)
	if err != nil {
		return fail(e, "get: %v", err)
	}
	switch kind {
	case "machines":
		printMachines(e, obs, *output, now)
	case "services", "endpoints":
		if !sel.Empty() {
			fmt.Fprintf(e.stderr, "berth get: -l does not select %s (the agents hold them without labels); use -n\n", kind)
			return exitUsage
		}
		svcs, _, ok := fleetServices(ctx, fl, obs)
		if !ok {
			fmt.Fprintln(e.stderr, "berth get: no machine holds a network yet: run berth reconcile --once")
			return exitError
		}
		printServices(e, svcs, namespace, *output, kind == "endpoints")
	default:
		printPods(e, obs, namespace, sel, *output, now)
	}
	down := 0
	for _, o := range obs {
		if !o.Reachable {
			down++
			fmt.Fprintf(e.stderr, "berth: %v\n", o.Err)
		}
	}
	if down > 0 {
		return exitError
	}
	return exitOK
}

// printTable writes a header and rows in columns, aligned as kubectl
// aligns them.
func printTable(w io.Writer, header []string, rows [][]string) {
	printRows(w, append([][]string{header}, rows...))
}

func printRows(w io.Writer, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// noneFound is kubectl's message for an empty list, on stderr.
func noneFound(e *env, what, namespace string) {
	where := "in namespace " + namespace
	if namespace == "" {
		where = "in any namespace"
	}
	fmt.Fprintf(e.stderr, "No %s found %s.\n", what, where)
}

// observedPod is a pod as `get pods -o yaml|json` shows it.
type observedPod struct {
	Machine string `json:"machine"`
	api.PodStatus
}

func printPods(e *env, obs []nodefleet.Observation, namespace string, sel labels.Selector, output string, now time.Time) {
	var pods []observedPod
	for _, o := range obs {
		for _, p := range o.Pods {
			if (namespace == "" || p.Namespace == namespace) && sel.Matches(labels.Set(p.Labels)) {
				pods = append(pods, observedPod{o.Machine, p})
			}
		}
	}
	sort.Slice(pods, func(i, j int) bool {
		if pods[i].Namespace != pods[j].Namespace {
			return pods[i].Namespace < pods[j].Namespace
		}
		return pods[i].Name < pods[j].Name
	})
	if output == "json" || output == "yaml" {
		printObjects(e, pods, output)
		return
	}
	if len(pods) == 0 {
		noneFound(e, "pods", namespace)
		return
	}
	var header []string
	if namespace == "" {
		header = append(header, "NAMESPACE")
	}
	header = append(header, "NAME", "READY", "STATUS", "RESTARTS", "AGE")
	if output == "wide" {
		header = append(header, "IP", "MACHINE")
	}
	rows := make([][]string, len(pods))
	for i, p := range pods {
		var row []string
		if namespace == "" {
			row = append(row, p.Namespace)
		}
		ready, restarts := 0, int32(0)
		for _, c := range p.ContainerStatuses {
			if c.Ready {
				ready++
			}
			restarts += c.RestartCount
		}
		age := "<unknown>"
		if !p.StartedAt.IsZero() {
			age = humanDuration(now.Sub(p.StartedAt))
		}
		row = append(row, p.Name, fmt.Sprintf("%d/%d", ready, len(p.ContainerStatuses)), podStatusText(p.PodStatus), fmt.Sprint(restarts), age)
		if output == "wide" {
			ip := p.PodIP
			if ip == "" {
				ip = "<none>"
			}
			row = append(row, ip, p.Machine)
		}
		rows[i] = row
	}
	printTable(e.stdout, header, rows)
}

// podStatusText is kubectl's STATUS column: the pod's reason, or the
// reason a container waits or ended with, or the phase.
func podStatusText(p api.PodStatus) string {
	if p.Terminating {
		return "Terminating"
	}
	status := string(p.Phase)
	if p.Reason != "" {
		status = p.Reason
	}
	for i, c := range p.InitContainerStatuses {
		switch {
		case c.State.Terminated != nil && c.State.Terminated.ExitCode == 0:
			continue
		case c.State.Terminated != nil:
			return "Init:" + orDefault(c.State.Terminated.Reason, "Error")
		case c.State.Waiting != nil && c.State.Waiting.Reason != "" && c.State.Waiting.Reason != "PodInitializing":
			return "Init:" + c.State.Waiting.Reason
		default:
			return fmt.Sprintf("Init:%d/%d", i, len(p.InitContainerStatuses))
		}
	}
	for _, c := range p.ContainerStatuses {
		if w := c.State.Waiting; w != nil && w.Reason != "" {
			return w.Reason
		}
		if t := c.State.Terminated; t != nil && t.Reason != "" {
			status = t.Reason
		}
	}
	return status
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// observedMachine is a machine as `get machines -o yaml|json` shows it.
type observedMachine struct {
	Name      string        `json:"name"`
	Reachable bool          `json:"reachable"`
	Error     string        `json:"error,omitempty"`
	Node      *api.NodeInfo `json:"node,omitempty"`
}

func printMachines(e *env, obs []nodefleet.Observation, output string, now time.Time) {
	if output == "json" || output == "yaml" {
		out := make([]observedMachine, len(obs))
		for i, o := range obs {
			out[i] = observedMachine{Name: o.Machine, Reachable: o.Reachable}
			if o.Err != nil {
				out[i].Error = o.Err.Error()
			}
			if o.Reachable {
				out[i].Node = &o.Node
			}
		}
		printObjects(e, out, output)
		return
	}
	header := []string{"NAME", "STATUS", "AGE", "VERSION"}
	if output == "wide" {
		header = append(header, "PODS", "CPU", "MEMORY", "KERNEL-VERSION", "CONTAINER-RUNTIME")
	}
	rows := make([][]string, len(obs))
	for i, o := range obs {
		status, age, version := "Unreachable", "<unknown>", "<unknown>"
		n := o.Node
		if o.Reachable {
			status, age, version = "Ready", humanDuration(now.Sub(n.StartedAt)), n.AgentVersion
			if n.RuntimeError != "" {
				status = "NotReady"
			}
		}
		row := []string{o.Machine, status, age, version}
		if output == "wide" {
			if o.Reachable {
				cpu, mem := n.Capacity["cpu"], n.Capacity["memory"]
				row = append(row, fmt.Sprint(n.Pods), cpu.String(), gib(mem), n.KernelVersion, n.ContainerdVersion)
			} else {
				row = append(row, "-", "-", "-", "-", "-")
			}
		}
		rows[i] = row
	}
	printTable(e.stdout, header, rows)
}

func printObjects(e *env, v any, output string) {
	var b []byte
	var err error
	if output == "yaml" {
		b, err = status.YAML(v)
	} else {
		b, err = json.MarshalIndent(v, "", "  ")
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "berth get: %v\n", err)
		return
	}
	e.stdout.Write(b)
	if output == "json" {
		fmt.Fprintln(e.stdout)
	}
}

// humanDuration is kubectl's AGE: 45s, 12m, 5h, 3d (two units while
// short enough to matter: 2m30s, 3h5m).
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 10*time.Minute:
		m := int(d.Minutes())
		if s := int(d.Seconds()) % 60; s != 0 {
			return fmt.Sprintf("%dm%ds", m, s)
		}
		return fmt.Sprintf("%dm", m)
	case d < 3*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 8*time.Hour:
		h := int(d.Hours())
		if m := int(d.Minutes()) % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", h, m)
		}
		return fmt.Sprintf("%dh", h)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	case d < 8*24*time.Hour:
		days := int(d.Hours()) / 24
		if h := int(d.Hours()) % 24; h != 0 {
			return fmt.Sprintf("%dd%dh", days, h)
		}
		return fmt.Sprintf("%dd", days)
	default:
		return fmt.Sprintf("%dd", int(d.Hours())/24)
	}
}
