package live

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
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
	for _, a := range p.Pods {
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
			wait := "its pods wait for it"
			switch {
			case m.RescheduleAt.IsZero():
			case p.Now.Before(m.RescheduleAt):
				wait = "its pods wait; Deployment and Job pods are replaced elsewhere from " + stamp(m.RescheduleAt)
			default:
				wait = "Deployment and Job pods replaced elsewhere, others wait"
			}
			fmt.Fprintf(&b, "%s  ! unreachable since %s: %s; told nothing, %s\n", m.Name, stamp(m.UnreachableSince), m.Err, wait)
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
	if p.Converged {
		b.WriteString("No changes. The fleet matches the repository.\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	for _, wl := range p.Workloads {
		if verbose || wl.Changes > 0 || !settled(wl) {
			fmt.Fprintf(&b, "%s: %s\n", wl.Owner, wl.Reason)
		}
	}
	sum := p.Summary
	if sum.Machines == 0 && sum.Pending == 0 && sum.Errors == 0 {
		b.WriteString("No machine to tell now; waiting for the fleet to catch up.\n")
	} else {
		fmt.Fprintf(&b, "Plan: %d to start, %d to replace, %d to update, %d to stop; %s to tell; %d pending, %d errors.\n",
			sum.Start, sum.Replace, sum.Update, sum.Stop, plural(sum.Machines, "machine"), sum.Pending, sum.Errors)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// settled: the workload has what it wants (its pods up to date and
// ready, or a Job or CronJob that is not running anything).
func settled(w WorkloadStatus) bool {
	st := w.Status
	switch w.Owner.Kind {
	case "Job", "CronJob":
		return st.Active == 0 && len(st.ActiveJobs) == 0
	case "DaemonSet":
		return st.UpdatedReplicas == st.DesiredNumberScheduled && st.ReadyReplicas == st.DesiredNumberScheduled && st.NumberMisscheduled == 0
	}
	return st.UnavailableReplicas == 0 && st.Replicas == st.UpdatedReplicas && st.Replicas == st.ReadyReplicas
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
