// Package live owns one reconciler pass against live machines: a pure
// function from what git wants (a rendered repository), what every
// machine's agent reported, what the controller remembers from its previous
// pass and the time, to what each machine should be told, with a reason for
// every pod that starts, stops, is replaced or is updated in place.
//
// A pass chains the reconciler's pure parts: the workload controllers
// (package workload) decide which pods should exist, the scheduler (package
// schedule) places the new ones, package resolve turns each pod into what
// the agent runs, and the pass groups them into one api.DesiredPods per
// machine. A machine whose agent already holds that set (its DesiredDigest)
// is told nothing, so planning, applying and planning again has nothing to
// do. Plan does no I/O and reads no clock; the caller observes the fleet,
// sends each MachinePlan.Send, keeps Pass.Memory (it is plain JSON with no
// Secret data, meant for the status branch) and runs the next pass when
// something is observed to change or at Pass.Wake.
//
// # Crashes and lost memory
//
// Pod names and UIDs are deterministic (a UID is derived from the pod's
// namespace, name and template hash, or kept from what the agent reports),
// so a controller killed half way through sending a pass, and one that lost
// its memory, names and identifies the same pods again. Memory holds the pod
// templates of the pods it placed, so that a pod of an older revision whose
// template has left git can still be described to its agent while a
// rollout keeps it; failing that, the set this process last sent
// (Input.Last, never persisted since it carries Secret data) gives the pod
// exactly; when both are lost, the pod is described by its workload's
// current template under its old UID and hash, which the agent takes as
// "keep what runs" (a warning says so), until the rollout replaces it.
//
// A pod name reaches the controllers once: copies of one pod on two
// machines (one was unreachable while its pod was replaced elsewhere) are
// resolved in favour of the machine the previous pass placed it on, and
// the other copy is stopped.
//
// # Unreachable machines
//
// A machine whose agent did not answer is told nothing and named in the pass.
// Its pods, as remembered, count as running but unavailable: rollouts
// pause, and only after Options.RescheduleAfter are the pods of Deployments
// and Jobs there replaced elsewhere.
package live
