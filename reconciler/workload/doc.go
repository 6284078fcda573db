// Package workload owns berth's workload controllers — bare Pods,
// Deployments, StatefulSets, DaemonSets, Jobs and CronJobs — as one pure
// function, Compute. A pass takes the desired objects, the machines, the
// pods the agents report and the controllers' memory from the previous
// pass, and returns, for every workload, the pods that should exist now
// (kept, created or replaced), the pods to stop, each with a one-line
// reason, the workload's status, and the memory for the next pass.
//
// Compute does no I/O and reads no clock (Input.Now is the time). It is
// level-triggered, like Kubernetes' controllers and Nomad's
// AllocReconciler: a pass looks only at what is desired and what is
// observed, takes the next safe step, and is run again after its output
// was applied (or when Result.Wake comes). A pass over a converged state
// has nothing to do (Result.Changes is 0).
//
// Pod names are deterministic, so a controller killed half way through
// applying a pass, or one that lost its memory, names the same pods again
// instead of duplicating them:
//
//   - Deployment: <name>-<template hash>-<5 characters derived from the
//     slot>; a revision is the set of pods carrying one pod-template-hash.
//   - StatefulSet: <name>-<ordinal>.
//   - DaemonSet: <name>-<5 characters derived from the machine> (a surge
//     pod derives them from the machine and the template hash).
//   - Job: <job>-<index> for an Indexed Job (<job>-<index>-<attempt> for
//     retries), <job>-<5 characters derived from the attempt> otherwise.
//   - CronJob: its Jobs are <cronjob>-<scheduled time in minutes since the
//     epoch>, as in Kubernetes.
//   - Pod: its own name.
//
// Pods carry berth.dev/owner-kind and berth.dev/owner labels (plus the
// usual Kubernetes labels: pod-template-hash, controller-revision-hash,
// statefulset.kubernetes.io/pod-name, job-name), from which the next pass
// knows who owns an observed pod; pods whose owner left the repository are
// returned as Result.Orphans.
//
// Placement is not decided here: a new pod is unbound (the scheduler
// places it) unless it must run on one machine (a DaemonSet's pod, a Pod
// with spec.nodeName) or replaces a pod that is already bound. Pods on an
// unreachable machine are neither stopped nor replaced and count as
// unavailable, so rollouts pause until the machine is back; pods on a
// machine that left the fleet are gone.
//
// Where berth differs from Kubernetes, it is because git is the control
// plane: there are no ReplicaSet objects and no old templates, only the
// current one, so a paused Deployment does not scale old revisions up, a
// StatefulSet pod below the partition that is missing is recreated from
// the current template, and rollback is a git revert (which, as in
// Kubernetes, makes the old template the newest revision again). A
// Deployment whose progress deadline passed stops advancing until
// something changes (a pod becomes ready, a new commit).
package workload
