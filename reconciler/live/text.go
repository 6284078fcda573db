package live

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

var symbols = map[Action]string{Start: "+", Stop: "-", Replace: "-/+", Update: "~", Keep: " "}

// WriteText writes the pass the way `berth plan` shows it against live
// machines: one line per pod action with its reason, machines that cannot
// be reached or are held, pods no machine takes, errors with their place in
// the repository, and a summary line. Kept pods are left out unless
// verbose. Nothing of a pod's resolved content (which may hold Secret
// data) is written.
func WriteText(w io.Writer, p *Pass, verbose bool) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	counts := map[Action]int{}
	for _, a := range p.Pods {
		counts[a.Action]++
		if a.Action == Keep && !verbose {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t(%s)\n", a.Machine, symbols[a.Action], a.Action, a.Key(), a.Reason)
	}
	tw.Flush()
	for _, m := range p.Machines {
		switch {
		case !m.InRepository:
			fmt.Fprintf(&b, "%s  ! not in the repository: left as it is\n", m.Name)
		case !m.Reachable:
			fmt.Fprintf(&b, "%s  ! unreachable since %s: %s; told nothing, its pods wait\n",
				m.Name, m.UnreachableSince.UTC().Format("2006-01-02T15:04:05Z"), m.Err)
		case m.Held != "":
			fmt.Fprintf(&b, "%s  ! held: %s\n", m.Name, m.Held)
		}
	}
	for _, u := range p.Unschedulable {
		fmt.Fprintf(&b, "pending  %s/%s  (%s): %s\n", u.Namespace, u.Name, u.Owner, u.Message)
	}
	for _, e := range p.Errors {
		fmt.Fprintf(&b, "error: %s\n", e)
	}
	for _, wn := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", wn)
	}
	send := p.Changes()
	switch {
	case p.Converged:
		b.WriteString("No changes. The fleet matches the repository.\n")
	case send == 0 && len(p.Unschedulable) == 0 && len(p.Errors) == 0:
		fmt.Fprintf(&b, "No machine to tell; waiting for %d pods to become ready.\n", waiting(p))
	default:
		fmt.Fprintf(&b, "Plan: %d to start, %d to replace, %d to update, %d to stop on %d machines; %d pending, %d errors.\n",
			counts[Start], counts[Replace], counts[Update], counts[Stop], send, len(p.Unschedulable), len(p.Errors))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// waiting counts workloads' pods not yet ready.
func waiting(p *Pass) int {
	n := 0
	for _, w := range p.Workloads {
		if d := w.Status.Replicas - w.Status.ReadyReplicas; d > 0 {
			n += int(d)
		}
	}
	return n
}
