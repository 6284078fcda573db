// Package reconciler owns the step from desired state to running
// machines: the diff between two desired states, scheduling, the workload
// controllers (Deployment, StatefulSet, DaemonSet, Job, CronJob, HPA),
// Service endpoints, plan rendering, the apply loop and status.
//
// For now it holds the offline half of the planner: Diff compares two
// rendered revisions of a fleet repository object by object and field by
// field, marks changes Kubernetes would refuse to apply in place as
// replacements, and says in one line what each change does to running
// pods; a Plan gathers those changes and writes them as text for a
// terminal, Markdown for a pull request or JSON for tools. Everything here
// is a pure function of its inputs: no I/O other than the io.Writer given,
// no clock, no machines. Secret values never appear in a Change.
package reconciler
