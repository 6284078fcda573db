package schedule

import (
	"hash/fnv"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Well-known machine labels every machine carries, set from the machine
// itself when its declaration does not.
const (
	// LabelHostname is the topology key of a single machine; its value
	// defaults to the machine's name.
	LabelHostname = corev1.LabelHostname
	// LabelOS is the operating system label; berth's machines run Linux.
	LabelOS = corev1.LabelOSStable
)

// Machine is a machine pods can be placed on, as the reconciler knows it
// from git (name, labels, taints, cordon) and from its agent (allocatable,
// readiness).
type Machine struct {
	// Name identifies the machine; names are unique in a fleet. Should two
	// machines share a name, only the first one given is used.
	Name string
	// Labels play the part of a Kubernetes Node's labels.
	Labels map[string]string
	// Taints repel pods that do not tolerate them.
	Taints []corev1.Taint
	// Unschedulable is a cordon: no new pod is scheduled here, unless it
	// tolerates the node.kubernetes.io/unschedulable:NoSchedule taint. Pods
	// naming the machine in spec.nodeName still run, as on Kubernetes.
	Unschedulable bool
	// Allocatable is what the machine offers to pods: cpu, memory, pods,
	// ephemeral-storage and any extended resource. A resource that is
	// missing offers nothing, as on a Kubernetes Node, so a machine without
	// a "pods" entry takes no pod.
	Allocatable corev1.ResourceList
	// Ready says the machine's agent is reachable and healthy. Machines that
	// are not ready take no new pod; their pods still count for resources,
	// ports, spreading and affinity.
	Ready bool
}

// Pod is a pod as the scheduler sees it. Pods waiting for a machine are
// given as Pods; pods already running somewhere as BoundPods.
type Pod struct {
	// Namespace and Name identify the pod.
	Namespace, Name string
	// Labels are matched by label selectors of affinity terms and topology
	// spread constraints.
	Labels map[string]string
	// Owner optionally names the workload the pod belongs to (for example
	// "Deployment/web"). Pods of one owner in one namespace that have no
	// topologySpreadConstraints are spread by the system default
	// constraints, as Kubernetes spreads the replicas of one ReplicaSet.
	Owner string
	// Spec supplies everything else: resources, overhead, host ports,
	// nodeSelector, affinity, tolerations, topology spread constraints and
	// nodeName. A nil Spec is an empty one.
	Spec *corev1.PodSpec
}

// Key returns the pod's namespace and name.
func (p *Pod) Key() PodKey { return PodKey{Namespace: p.Namespace, Name: p.Name} }

// BoundPod is a pod already placed on a machine. Only pods that hold their
// resources belong here: leave out pods that have finished (Succeeded or
// Failed).
type BoundPod struct {
	Pod
	// Machine is the name of the machine the pod is on. Pods on machines
	// not given to Schedule are ignored.
	Machine string
}

// PodKey identifies a pod by namespace and name.
type PodKey struct {
	Namespace, Name string
}

// String returns "namespace/name".
func (k PodKey) String() string { return k.Namespace + "/" + k.Name }

// Result is the outcome of one call to Schedule: every pending pod is
// either in Placements or in Unschedulable.
type Result struct {
	// Placements maps each placed pod to the name of its machine.
	Placements map[PodKey]string
	// Unschedulable maps each pod that could not be placed to the reason.
	Unschedulable map[PodKey]*FitError
}

// An Option changes how Schedule works.
type Option func(*options)

type options struct {
	namespaceLabels map[string]labels.Set
}

// WithNamespaceLabels gives the labels of each namespace, which pod
// (anti-)affinity terms with a namespaceSelector are matched against.
// Without it a namespaceSelector selects no namespace, except the empty
// selector, which selects all of them.
func WithNamespaceLabels(ns map[string]map[string]string) Option {
	return func(o *options) {
		o.namespaceLabels = make(map[string]labels.Set, len(ns))
		for name, l := range ns {
			o.namespaceLabels[name] = labels.Set(l)
		}
	}
}

// Schedule places the pending pods, one at a time in the order given, on
// the machines, counting the bound pods and every placement already made.
// The order of machines and of bound pods does not matter; the order of
// pending pods does, as it does for a scheduling queue. A pending pod that
// is also a bound pod is unschedulable ("already runs on machine ..."); a
// pending pod listed twice is scheduled once, for its first entry.
func Schedule(machines []Machine, bound []BoundPod, pending []Pod, opts ...Option) Result {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := newState(machines, bound, o)
	res := Result{
		Placements:    make(map[PodKey]string, len(pending)),
		Unschedulable: make(map[PodKey]*FitError),
	}
	for i := range pending {
		pod := &pending[i]
		key := pod.Key()
		if on, dup := s.seen[key]; dup {
			if on != "" {
				res.Unschedulable[key] = &FitError{Pod: key, Message: "pod " + key.String() + " already runs on machine " + on}
			}
			continue
		}
		s.seen[key] = ""
		p, err := newPodInfo(pod, s.opts)
		if err != nil {
			res.Unschedulable[key] = &FitError{Pod: key, Message: "cannot schedule pod " + key.String() + ": " + err.Error()}
			continue
		}
		var m *machineState
		var fe *FitError
		if p.nodeName != "" {
			m, fe = s.admit(p)
		} else {
			m, fe = s.schedule(p)
		}
		if fe != nil {
			res.Unschedulable[key] = fe
			continue
		}
		s.place(p, m)
		res.Placements[key] = m.name
	}
	return res
}

// schedule runs the filters and scores for one pod and returns the chosen
// machine, or why there is none.
func (s *state) schedule(p *podInfo) (*machineState, *FitError) {
	c := newCycle(s, p)
	feasible := make([]*machineState, 0, len(s.machines))
	perMachine := map[string][]string{}
	for _, m := range s.machines {
		if reasons := c.filter(m); len(reasons) > 0 {
			perMachine[m.name] = reasons
			continue
		}
		feasible = append(feasible, m)
	}
	if len(feasible) == 0 {
		return nil, newFitError(p.key, len(s.machines), perMachine)
	}
	if len(feasible) == 1 {
		return feasible[0], nil
	}
	total := c.score(feasible)
	best := 0
	bestHash := tieHash(p.key, feasible[0].name)
	for i := 1; i < len(feasible); i++ {
		switch {
		case total[i] > total[best]:
		case total[i] < total[best]:
			continue
		default:
			h := tieHash(p.key, feasible[i].name)
			// Machines are in name order, so on equal hashes the earlier
			// name stays.
			if h >= bestHash {
				continue
			}
		}
		best, bestHash = i, tieHash(p.key, feasible[i].name)
	}
	return feasible[best], nil
}

// admit checks a pod that names its machine in spec.nodeName the way a
// kubelet admits it: the scheduler's cordon, spreading and inter-pod
// affinity do not apply, NoSchedule taints do not either.
func (s *state) admit(p *podInfo) (*machineState, *FitError) {
	m := s.byName[p.nodeName]
	if m == nil {
		return nil, &FitError{
			Pod:     p.key,
			Message: "machine " + p.nodeName + " named in spec.nodeName does not exist",
		}
	}
	c := newCycle(s, p)
	for _, f := range []filter{readyFilter, noExecuteFilter, nodeAffinityFilter, portsFilter, resourcesFilter} {
		if reasons := f(c, m); len(reasons) > 0 {
			return nil, &FitError{
				Pod:        p.key,
				Message:    "machine " + m.name + " named in spec.nodeName cannot run the pod: " + strings.Join(reasons, ", ") + ".",
				PerMachine: map[string][]string{m.name: reasons},
			}
		}
	}
	return m, nil
}

// tieHash orders machines that share the best score for a pod: FNV-1a of
// "namespace/name", a NUL byte and the machine name.
func tieHash(k PodKey, machine string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(k.Namespace))
	h.Write([]byte{'/'})
	h.Write([]byte(k.Name))
	h.Write([]byte{0})
	h.Write([]byte(machine))
	return h.Sum64()
}

// state is the fleet as the next pod sees it.
type state struct {
	opts     options
	machines []*machineState // by name
	byName   map[string]*machineState
	// pods holds every placed pod, bound ones first, then placements in
	// order; withTerms those of them with pod (anti-)affinity terms.
	pods      []*podInfo
	withTerms []*podInfo
	// seen maps the pods known so far to their machine: bound pods to
	// theirs, pending ones to "".
	seen map[PodKey]string
}

// machineState is a machine and what is placed on it.
type machineState struct {
	index  int // in state.machines
	name   string
	labels labels.Set
	taints []corev1.Taint
	// conditionTaints are taints plus those Kubernetes would put on a
	// cordoned or not ready Node, which nodeTaintsPolicy Honor heeds.
	conditionTaints []corev1.Taint
	unschedulable   bool
	ready           bool
	allocatable     amounts
	allowedPods     int64
	requested       amounts // effective requests of its pods
	nonZeroCPU      int64   // requests with kube-scheduler's defaults for
	nonZeroMemory   int64   // containers that set none, for scoring
	pods            []*podInfo
	ports           []hostPort
	owners          map[ownerKey]int // pods per owner, for system default spreading
}

func newState(machines []Machine, bound []BoundPod, o options) *state {
	s := &state{
		opts:   o,
		byName: make(map[string]*machineState, len(machines)),
		seen:   make(map[PodKey]string, len(bound)),
	}
	for i := range machines {
		in := &machines[i]
		if _, dup := s.byName[in.Name]; dup {
			continue
		}
		l := make(labels.Set, len(in.Labels)+2)
		for k, v := range in.Labels {
			l[k] = v
		}
		if _, ok := l[LabelHostname]; !ok {
			l[LabelHostname] = in.Name
		}
		if _, ok := l[LabelOS]; !ok {
			l[LabelOS] = "linux"
		}
		alloc := amountsOf(in.Allocatable)
		m := &machineState{
			name:          in.Name,
			labels:        l,
			taints:        in.Taints,
			unschedulable: in.Unschedulable,
			ready:         in.Ready,
			allocatable:   alloc,
			allowedPods:   alloc.other[corev1.ResourcePods],
		}
		m.conditionTaints = in.Taints
		if in.Unschedulable || !in.Ready {
			m.conditionTaints = slices.Clone(in.Taints)
			if in.Unschedulable {
				m.conditionTaints = append(m.conditionTaints, unschedulableTaint)
			}
			if !in.Ready {
				m.conditionTaints = append(m.conditionTaints, notReadyTaint)
			}
		}
		s.byName[in.Name] = m
		s.machines = append(s.machines, m)
	}
	slices.SortFunc(s.machines, func(a, b *machineState) int { return strings.Compare(a.name, b.name) })
	for i, m := range s.machines {
		m.index = i
	}
	// Bound pods are added in key order, so that their order in the input
	// cannot change anything.
	order := make([]int, len(bound))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ka, kb := bound[a].Key(), bound[b].Key()
		if c := strings.Compare(ka.Namespace, kb.Namespace); c != 0 {
			return c
		}
		return strings.Compare(ka.Name, kb.Name)
	})
	for _, i := range order {
		b := &bound[i]
		m := s.byName[b.Machine]
		if m == nil {
			continue
		}
		s.seen[b.Key()] = m.name
		// A bound pod runs whether or not its terms parse; what could be
		// compiled still counts.
		p, _ := newPodInfo(&b.Pod, o)
		s.place(p, m)
	}
	return s
}

// place records p as running on m.
func (s *state) place(p *podInfo, m *machineState) {
	p.machine = m
	m.pods = append(m.pods, p)
	m.ports = append(m.ports, p.ports...)
	m.requested.add(p.requests)
	m.nonZeroCPU += p.nonZeroCPU
	m.nonZeroMemory += p.nonZeroMemory
	if p.owner != "" {
		if m.owners == nil {
			m.owners = map[ownerKey]int{}
		}
		m.owners[ownerKey{p.key.Namespace, p.owner}]++
	}
	s.pods = append(s.pods, p)
	if p.hasTerms() {
		s.withTerms = append(s.withTerms, p)
	}
}
