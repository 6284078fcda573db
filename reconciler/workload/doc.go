// Package workload owns berth's workload controllers — bare Pods,
// Deployments, StatefulSets, DaemonSets, Jobs and CronJobs — as one pure
// function, Compute. A pass takes the desired objects, the machines, the
// pods the agents report and the controllers' memory from the previous
// pass, and returns, for every workload, the pods that should exist now
// (kept, created or replaced), the pods to stop, each with a one-line
// reason, the workload's status and conditions, the memory for the next
// pass, and when to wake up if nothing else happens (Result.Wake).
//
// # A pass
//
// Compute does no I/O and reads no clock (Input.Now is the time; the only
// file it may read is a CronJob's time zone). It is level-triggered, like
// Kubernetes' controllers and Nomad's AllocReconciler: a pass looks only
// at what is desired and what is observed, takes the next safe step, and
// is run again after its output was applied, when something is observed
// to change, or at Result.Wake. A pass over a converged state has nothing
// to do (Result.Changes is 0), and applying it changes nothing.
//
// Workload.Pods is the whole set a workload wants; an observed pod not in
// it is listed in Workload.Stop with the reason it goes. Templates in the
// output may be shared between pods and must be treated as read-only. A
// kept pod of an older revision has no template: its template is no
// longer in git, and it keeps running what it runs.
//
// # Names and owners
//
// Pod names are deterministic, so a controller killed half way through
// applying a pass, or one that lost its memory, names the same pods again
// instead of duplicating them:
//
//   - Deployment: <name>-<template hash>-<5 characters derived from the
//     slot>; a revision is the set of pods carrying one pod-template-hash.
//   - StatefulSet: <name>-<ordinal>.
//   - DaemonSet: <name>-<5 characters derived from the machine>; a surge
//     pod, started while the old one still runs, derives them from the
//     machine and the template hash.
//   - Job: <job>-<index> for an Indexed Job (<job>-<index>-<n> for its
//     retries), <job>-<5 characters derived from the attempt> otherwise.
//   - CronJob: its Jobs are <cronjob>-<scheduled time in minutes since the
//     epoch>, as in Kubernetes.
//   - Pod: its own name.
//
// Pods carry berth.dev/owner-kind and berth.dev/owner labels (plus the
// Kubernetes ones: pod-template-hash, controller-revision-hash,
// statefulset.kubernetes.io/pod-name, apps.kubernetes.io/pod-index,
// job-name, batch.kubernetes.io/job-name and job-completion-index), from
// which the next pass knows who owns an observed pod; an unlabelled pod
// belongs to the bare Pod of its name. Pods whose owner left the
// repository are returned as Result.Orphans. Copies of one pod observed
// on several machines count as one, the best copy (reachable, not
// stopping, the one Kubernetes would keep); the pod is wanted on that
// copy's machine, and stopping the others is left to the caller.
//
// # Machines
//
// Placement is not decided here: a new pod is unbound (the scheduler
// places it) unless it must run on one machine: a DaemonSet's pod (whose
// eligibility the caller decides with Options.Eligible, the scheduler's
// filters), a Pod with spec.nodeName, or the new incarnation of a pod
// that is replaced in place (a StatefulSet's, a DaemonSet's, a bare
// Pod's), which keeps its machine. Pods on an unreachable machine are
// neither stopped nor replaced and count as unavailable, so rollouts
// pause until the machine is back; after Options.RescheduleAfter, the
// pods of Deployments and Jobs there are given up and replaced elsewhere
// (pods with an identity wait). Pods on a machine that left the fleet are
// gone.
//
// # Memory
//
// Memory is what the reconciler keeps in the status branch between
// passes: a Deployment's revision numbers, its last progress, a Job's
// start, end and outcome, a CronJob's last schedule and the Jobs it ran,
// and condition transition times. It is plain JSON. Every controller
// recovers from its loss using the observed pods alone: a Deployment
// numbers the revisions it sees afresh and restarts its progress
// deadline; a Job counts its finished pods again (they are kept until the
// Job ends and its ttlSecondsAfterFinished passes); a CronJob finds its
// Jobs through their pods and resumes from the newest one's schedule.
// What cannot be recovered errs on the side of doing nothing twice: a
// CronJob that has no Job left and lost its memory does not run the
// schedules it missed, and a Job whose pods were cleaned up after its TTL
// would run again.
//
// # Strategies
//
// Deployments follow Kubernetes' rolling update: the new revision scales
// up while the Deployment has at most replicas+maxSurge pods (counting
// pods still stopping), old revisions scale down (unavailable ones first,
// oldest revision first, then the pods Kubernetes would pick) while
// replicas-maxUnavailable stay available; surge rounds up, unavailable
// down. Recreate stops every old pod and starts new ones once they are
// gone. A pod is available once it has been ready for minReadySeconds.
// When progressDeadlineSeconds pass without a change in the counts, the
// Deployment is Progressing=False (ProgressDeadlineExceeded) and stops
// advancing until something changes (a pod becomes ready, a new commit).
//
// StatefulSets, DaemonSets and Jobs follow their Kubernetes controllers
// too (see each function). Where berth differs, it is because git is the
// control plane: there are no ReplicaSet or ControllerRevision objects
// and no old templates, only the current one, so a paused Deployment does
// not scale old revisions, a StatefulSet pod below the partition that is
// missing is recreated from the current template, and rollback is a git
// revert (which, as in Kubernetes, makes the old template the newest
// revision again). A Job's template is immutable in Kubernetes; here a
// changed template reaches only the pods a Job starts afterwards. Not
// implemented: a Job's podFailurePolicy and backoffLimitPerIndex, a
// StatefulSet's maxUnavailable, and volume claims (a StatefulSet pod
// keeps its machine, and with it its hostPath data).
package workload
