// Package schedule owns pod placement: given the machines of a fleet, the
// pods already running on them and the pods that still need a machine, it
// decides which machine each new pod goes to, or says per machine why none
// can take it.
//
// It follows kube-scheduler's default profile so that manifests written for
// Kubernetes land where their authors expect:
//
//   - Filters, in kube-scheduler's order: machine readiness, NodeUnschedulable,
//     TaintToleration (NoSchedule and NoExecute), NodeAffinity (nodeSelector and
//     required node affinity), NodePorts, NodeResourcesFit, PodTopologySpread
//     (DoNotSchedule) and InterPodAffinity (required affinity, required
//     anti-affinity, and the anti-affinity of pods already placed). A machine
//     is rejected by the first filter that fails, and that filter's reasons
//     are what the pod's FitError counts.
//   - Scores, each normalised to 0..100 and weighted as kube-scheduler's
//     defaults: TaintToleration (PreferNoSchedule) 3, NodeAffinity (preferred
//     terms) 2, PodTopologySpread (ScheduleAnyway) 2, InterPodAffinity
//     (preferred terms, both directions) 2, NodeResourcesFit (least allocated)
//     1 and NodeResourcesBalancedAllocation 1.
//
// Pods are placed one at a time in the order given, and each placement is
// part of the state the next pod sees (resources, host ports, topology
// spread counts, affinity). A pod with spec.nodeName is not scheduled: it is
// admitted to that machine the way a kubelet admits such a pod (readiness,
// node affinity, host ports, resources and NoExecute taints), or refused
// with the reason.
//
// Everything here is a pure, deterministic function of its inputs: no I/O,
// no clock, no randomness, and no map is iterated where its order could
// leak into a result. Machines are considered in name order whatever order
// they come in. Where kube-scheduler picks at random among machines with the
// same best score, this package picks the machine with the smallest FNV-1a
// hash of pod key and machine name: like the random pick it spreads ties
// across machines instead of piling them onto the first name in the
// alphabet, but the same inputs always give the same plan, and a pod keeps
// its machine from one plan to the next while scores do not change. Two
// machines with equal hashes fall back to name order.
//
// Machines get the well-known labels kubernetes.io/hostname (their name)
// and kubernetes.io/os (linux) unless they set them, because manifests
// written for Kubernetes use them as topology keys and node selectors. Pods
// that carry an Owner and no topologySpreadConstraints of their own are
// spread by kube-scheduler's system default constraints (maxSkew 3 across
// hostnames, 5 across zones, ScheduleAnyway) among the pods of the same
// owner, the way Kubernetes spreads the replicas of a ReplicaSet.
package schedule
