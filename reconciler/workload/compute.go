package workload

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// pass is the state of one Compute call.
type pass struct {
	opts     Options
	now      time.Time
	machines map[string]Machine
	// machineList is sorted by name.
	machineList []Machine
	prev        map[string]*WorkloadMemory
	next        map[string]*WorkloadMemory
	wake        time.Time
	// byOwner groups the observed pods.
	byOwner map[Owner][]*obs
	// claimed marks owners whose pods a workload looked at.
	claimed map[Owner]bool
}

// Compute runs every workload controller once over the desired objects
// and the observed pods. It is pure: the result depends only on its
// arguments, and the input (Memory included) is not modified.
func Compute(in Input, opts Options) (Result, error) {
	if err := opts.Validate(); err != nil {
		return Result{}, err
	}
	p := &pass{
		opts:     opts,
		now:      in.Now,
		machines: make(map[string]Machine, len(in.Machines)),
		prev:     in.Memory.Workloads,
		next:     make(map[string]*WorkloadMemory),
		byOwner:  make(map[Owner][]*obs),
		claimed:  make(map[Owner]bool),
	}
	for _, m := range in.Machines {
		p.machines[m.Name] = m
	}
	p.machineList = slices.Clone(in.Machines)
	slices.SortFunc(p.machineList, func(a, b Machine) int { return cmp.Compare(a.Name, b.Name) })
	// One pod, one name: of copies of a pod on several machines the pass
	// looks at the best one; the caller stops the others, since the pod
	// is wanted on one machine only.
	best := make(map[string]*obs, len(in.Pods))
	for i := range in.Pods {
		o := p.observe(&in.Pods[i])
		key := o.Namespace + "/" + o.Name
		if cur, ok := best[key]; !ok || betterCopy(o, cur) {
			best[key] = o
		}
	}
	for _, key := range slices.Sorted(maps.Keys(best)) {
		o := best[key]
		pod := o.Pod
		owner := pod.Owner
		if owner == (Owner{}) {
			var ok bool
			if owner, ok = OwnerFromLabels(pod.Namespace, pod.Labels); !ok {
				// Not made by a controller: a bare pod of that name.
				owner = Owner{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name}
			}
		}
		if o.expired && (owner.Kind == "Deployment" || owner.Kind == "Job") {
			// Replaceable elsewhere: the pod is given up for lost. Pods
			// with an identity (StatefulSet, DaemonSet, bare Pod) wait.
			o.frozen, o.lost = false, true
			o.lostWhy = fmt.Sprintf("machine %s unreachable for more than %s; rescheduled", o.Machine, opts.RescheduleAfter)
		}
		p.byOwner[owner] = append(p.byOwner[owner], o)
	}
	for _, pods := range p.byOwner {
		slices.SortFunc(pods, func(a, b *obs) int { return cmp.Compare(a.Name, b.Name) })
	}

	var res Result
	for _, obj := range in.Objects {
		var w []Workload
		switch v := obj.Obj.(type) {
		case *corev1.Pod:
			w = append(w, p.barePod(v, obj.Namespace, obj.Name))
		case *appsv1.Deployment:
			w = append(w, p.deployment(v, obj.Namespace, obj.Name))
		case *appsv1.StatefulSet:
			w = append(w, p.statefulSet(v, obj.Namespace, obj.Name))
		case *appsv1.DaemonSet:
			w = append(w, p.daemonSet(v, obj.Namespace, obj.Name))
		case *batchv1.Job:
			w = append(w, p.job(&v.Spec, Owner{Kind: "Job", Namespace: obj.Namespace, Name: obj.Name}, nil, nil))
		case *batchv1.CronJob:
			w = p.cronJob(v, obj.Namespace, obj.Name)
		default:
			continue
		}
		res.Workloads = append(res.Workloads, w...)
	}
	slices.SortFunc(res.Workloads, func(a, b Workload) int {
		return cmp.Or(cmp.Compare(a.Owner.Kind, b.Owner.Kind), cmp.Compare(a.Owner.Namespace, b.Owner.Namespace), cmp.Compare(a.Owner.Name, b.Owner.Name))
	})

	for owner, pods := range p.byOwner {
		if p.claimed[owner] {
			continue
		}
		for _, o := range pods {
			if o.Terminating {
				continue
			}
			gone := owner
			if cj := o.Labels[LabelCronJob]; cj != "" && owner.Kind == "Job" {
				gone = Owner{Kind: "CronJob", Namespace: owner.Namespace, Name: cj}
			}
			res.Orphans = append(res.Orphans, Stop{
				Namespace: o.Namespace, Name: o.Name, Owner: owner, Machine: o.Machine,
				Reason: gone.String() + " is no longer in the repository",
			})
		}
	}
	slices.SortFunc(res.Orphans, func(a, b Stop) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	res.Memory = Memory{Workloads: p.next}
	res.Wake = p.wake
	return res, nil
}

// wakeAt asks for a pass no later than t (if t is in the future).
func (p *pass) wakeAt(t time.Time) {
	if !t.After(p.now) {
		return
	}
	if p.wake.IsZero() || t.Before(p.wake) {
		p.wake = t
	}
}

// start begins a workload: its observed pods, its memory and a builder.
func (p *pass) start(owner Owner) (Owner, []*obs, *WorkloadMemory, *builder) {
	return owner, p.pods(owner), p.memory(owner), newBuilder(owner)
}

// pods returns the observed pods of owner and marks them as looked at.
func (p *pass) pods(owner Owner) []*obs {
	p.claimed[owner] = true
	return p.byOwner[owner]
}

// memory returns the previous memory of owner (never nil; a copy) and
// records it as the next one: a controller edits it in place.
func (p *pass) memory(owner Owner) *WorkloadMemory {
	key := owner.String()
	m := &WorkloadMemory{}
	if prev := p.prev[key]; prev != nil {
		m.Revisions = slices.Clone(prev.Revisions)
		if prev.Progress != nil {
			pr := *prev.Progress
			m.Progress = &pr
		}
		if prev.Job != nil {
			j := *prev.Job
			m.Job = &j
		}
		if prev.CronJob != nil {
			c := *prev.CronJob
			c.Runs = slices.Clone(c.Runs)
			m.CronJob = &c
		}
		m.Conditions = slices.Clone(prev.Conditions)
	}
	p.next[key] = m
	return m
}

// conditions sets the workload's conditions, keeping transition times.
func (p *pass) conditions(m *WorkloadMemory, cs ...Condition) []Condition {
	out := make([]Condition, len(cs))
	for i, c := range cs {
		out[i] = setCondition(m.Conditions, p.now, c)
	}
	m.Conditions = out
	return slices.Clone(out)
}

// builder collects one workload's wanted pods and stops.
type builder struct {
	w       Workload
	wanted  map[string]bool
	stopWhy map[string]string
}

func newBuilder(owner Owner) *builder {
	return &builder{w: Workload{Owner: owner}, wanted: map[string]bool{}, stopWhy: map[string]string{}}
}

// keep wants an observed pod as it is. tmpl is its current template when
// the pod runs the current revision (nil otherwise).
func (b *builder) keep(o *obs, tmpl *corev1.PodTemplateSpec, reason string) {
	b.wanted[o.Name] = true
	b.w.Pods = append(b.w.Pods, WantedPod{
		Namespace: o.Namespace, Name: o.Name, Owner: b.w.Owner, Hash: o.hash,
		Template: tmpl, Machine: o.Machine, Action: Keep, Reason: reason,
	})
}

// add wants a new pod (Create) or a new incarnation of an observed one
// (Replace, when old is not nil).
func (b *builder) add(name, hash string, tmpl *corev1.PodTemplateSpec, machine string, old *obs, reason string) {
	b.wanted[name] = true
	a := Create
	if old != nil {
		a = Replace
		if machine == "" {
			machine = old.Machine
		}
	}
	b.w.Pods = append(b.w.Pods, WantedPod{
		Namespace: b.w.Owner.Namespace, Name: name, Owner: b.w.Owner, Hash: hash,
		Template: tmpl, Machine: machine, Action: a, Reason: reason,
	})
}

// stop records why an observed pod goes; pods neither kept nor given a
// reason go with a generic one.
func (b *builder) stop(o *obs, reason string) { b.stopWhy[o.Name] = reason }

// finish lists the observed pods not wanted as stops and sorts.
func (b *builder) finish(pods []*obs, reason string) Workload {
	for _, o := range pods {
		if b.wanted[o.Name] || o.Terminating {
			continue
		}
		why := b.stopWhy[o.Name]
		if why == "" {
			why = "not wanted by " + b.w.Owner.String()
			if o.lost {
				why = o.lostWhy
			}
		}
		b.w.Stop = append(b.w.Stop, Stop{Namespace: o.Namespace, Name: o.Name, Owner: b.w.Owner, Machine: o.Machine, Reason: why})
	}
	slices.SortFunc(b.w.Pods, func(a, b WantedPod) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(b.w.Stop, func(a, b Stop) int { return cmp.Compare(a.Name, b.Name) })
	b.w.Reason = reason
	return b.w
}

// invalid is the result for a workload whose spec cannot be acted on: its
// pods are kept as they are.
func (b *builder) invalid(pods []*obs, err error) Workload {
	for _, o := range pods {
		if !o.Terminating {
			b.keep(o, nil, "kept: spec is invalid")
		}
	}
	b.w.Status.Conditions = []Condition{{Type: "ReconcileError", Status: corev1.ConditionTrue, Reason: "InvalidSpec", Message: err.Error()}}
	return b.finish(pods, "not reconciled: "+err.Error())
}

// bounds resolves a rolling update's maxSurge and maxUnavailable against
// total with Kubernetes' rounding (surge up, unavailable down) and
// defaults for unset values. Both may not be 0; when both round down to
// 0, one pod may be unavailable, so that the rollout can move (as
// Kubernetes' fenceposts).
func bounds(surge, unav *intstr.IntOrString, defSurge, defUnav intOrPercent, total int32) (maxSurge, maxUnav int32, err error) {
	s, err := parseIntOrPercent(surge, "maxSurge")
	if err != nil {
		return 0, 0, err
	}
	u, err := parseIntOrPercent(unav, "maxUnavailable")
	if err != nil {
		return 0, 0, err
	}
	s, u = cmp.Or(s, &defSurge), cmp.Or(u, &defUnav)
	if s.n == 0 && u.n == 0 {
		return 0, 0, errors.New("maxSurge and maxUnavailable may not both be 0")
	}
	maxSurge, maxUnav = scaled(s, total, true), scaled(u, total, false)
	if maxSurge == 0 && maxUnav == 0 {
		maxUnav = 1
	}
	return maxSurge, maxUnav, nil
}

// parseIntOrPercent reads maxSurge/maxUnavailable.
func parseIntOrPercent(v *intstr.IntOrString, field string) (*intOrPercent, error) {
	if v == nil {
		return nil, nil
	}
	if v.Type == intstr.Int {
		if v.IntVal < 0 {
			return nil, fmt.Errorf("%s: %d is negative", field, v.IntVal)
		}
		return &intOrPercent{n: v.IntVal}, nil
	}
	s, ok := strings.CutSuffix(v.StrVal, "%")
	var n int
	if ok {
		var err error
		n, err = strconv.Atoi(s)
		ok = err == nil && n >= 0 && n <= 100
	}
	if !ok {
		return nil, fmt.Errorf("%s: %q is neither an integer nor a percentage", field, v.StrVal)
	}
	return &intOrPercent{n: int32(n), percent: true}, nil
}

// names lists pod names for messages: at most three, then a count.
func names(pods []*obs) string {
	var b strings.Builder
	for i, o := range pods {
		if i == 3 {
			fmt.Fprintf(&b, " and %d more", len(pods)-3)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(o.Name)
	}
	return b.String()
}

func replicasOf(r *int32) int32 {
	if r == nil {
		return 1
	}
	return max(*r, 0)
}
