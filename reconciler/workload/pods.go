package workload

import (
	"cmp"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// suffixAlphabet is the alphabet Kubernetes uses for generated name
// suffixes: no vowels (no words), no 0/1/3 (no confusion with o, l, e).
const suffixAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// suffix derives five characters from key: the deterministic stand-in for
// Kubernetes' random pod name suffix, so that a pass run twice (or by a
// controller that crashed in between) names the same pod the same way.
func suffix(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	v := h.Sum64()
	var b [5]byte
	for i := range b {
		b[i] = suffixAlphabet[v%uint64(len(suffixAlphabet))]
		v /= uint64(len(suffixAlphabet))
	}
	return string(b[:])
}

// obs is an observed pod with what every controller asks of it worked out
// once.
type obs struct {
	*Pod
	hash string
	// lost: its machine is no longer in the fleet; the pod is gone for
	// every purpose but the stop list.
	lost    bool
	lostWhy string
	// expired: frozen for longer than Options.RescheduleAfter.
	expired bool
	// frozen: its machine is unreachable; the pod is kept and counted as
	// unavailable, never stopped or replaced.
	frozen   bool
	terminal bool // Succeeded or Failed
	ready    bool // Running, Ready, reachable, not terminating
	// readyAt is when it became ready (zero unless ready).
	readyAt  time.Time
	restarts int32
}

func (p *pass) observe(pod *Pod) *obs {
	o := &obs{Pod: pod, hash: pod.TemplateHash}
	if o.hash == "" {
		o.hash = cmp.Or(pod.Labels[LabelPodTemplateHash], pod.Labels[LabelControllerRevision])
	}
	if pod.Machine != "" {
		m, ok := p.machines[pod.Machine]
		switch {
		case !ok:
			o.lost, o.lostWhy = true, "machine "+pod.Machine+" is no longer in the fleet"
		case !m.Reachable:
			o.frozen = true
			if g := p.opts.RescheduleAfter; g > 0 && !m.UnreachableSince.IsZero() {
				if at := m.UnreachableSince.Add(g); p.now.Before(at) {
					p.wakeAt(at)
				} else {
					o.expired = true
				}
			}
		}
	}
	o.terminal = pod.Phase == corev1.PodSucceeded || pod.Phase == corev1.PodFailed
	o.ready = pod.Ready && pod.Phase == corev1.PodRunning && !pod.Terminating && !o.frozen && !o.lost
	if o.ready {
		o.readyAt = pod.ReadySince
		if o.readyAt.IsZero() {
			o.readyAt = cmp.Or(pod.StartedAt, pod.Created)
		}
	}
	for _, c := range pod.Containers {
		o.restarts += c.RestartCount
	}
	return o
}

// available: ready for at least minReady. When it is not yet, the pass
// asks to wake up when it will be.
func (p *pass) available(o *obs, minReady int32) bool {
	if !o.ready {
		return false
	}
	at := o.readyAt.Add(time.Duration(minReady) * time.Second)
	if at.After(p.now) {
		p.wakeAt(at)
		return false
	}
	return true
}

// active: counts as a pod that is there (not stopping, not finished, not
// on a machine that left the fleet).
func (o *obs) active() bool { return !o.Terminating && !o.terminal && !o.lost }

// deleteFirst orders pods the way Kubernetes picks pods to remove when
// scaling down (controller.ActivePods): unplaced before placed, pending
// before running, not ready before ready, ready for less time before
// longer, more restarts before fewer, newer before older; then by name so
// that the order is total.
func deleteFirst(a, b *obs) int {
	if c := cmp.Compare(boolInt(a.Machine != ""), boolInt(b.Machine != "")); c != 0 {
		return c
	}
	if c := cmp.Compare(phaseRank(a.Phase), phaseRank(b.Phase)); c != 0 {
		return c
	}
	if c := cmp.Compare(boolInt(a.ready), boolInt(b.ready)); c != 0 {
		return c
	}
	if a.ready && b.ready && !a.readyAt.Equal(b.readyAt) {
		return -a.readyAt.Compare(b.readyAt)
	}
	if a.restarts != b.restarts {
		return -cmp.Compare(a.restarts, b.restarts)
	}
	if !a.Created.Equal(b.Created) {
		return -a.Created.Compare(b.Created)
	}
	return cmp.Compare(a.Name, b.Name)
}

func phaseRank(p corev1.PodPhase) int {
	switch p {
	case corev1.PodPending, "":
		return 0
	case corev1.PodUnknown:
		return 1
	}
	return 2
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// betterCopy says which of two observed copies of one pod a pass looks
// at: one that can be reached and is not stopping, then the one Kubernetes
// would keep (the reverse of deleteFirst), then the first machine by name.
func betterCopy(a, b *obs) bool {
	rank := func(o *obs) int { return boolInt(o.lost)*4 + boolInt(o.frozen)*2 + boolInt(o.Terminating) }
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra < rb
	}
	if c := deleteFirst(a, b); c != 0 {
		return c > 0 // b goes first: a is better
	}
	return a.Machine < b.Machine
}

// removable filters out pods a pass may not choose to stop (frozen on an
// unreachable machine) and sorts the rest in deleteFirst order.
func removable(pods []*obs) []*obs {
	out := make([]*obs, 0, len(pods))
	for _, o := range pods {
		if !o.frozen {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, deleteFirst)
	return out
}

// stamp copies a template and adds labels and annotations.
func stamp(t *corev1.PodTemplateSpec, labels, annotations map[string]string) *corev1.PodTemplateSpec {
	c := t.DeepCopy()
	if c.Labels == nil {
		c.Labels = make(map[string]string, len(labels))
	}
	maps.Copy(c.Labels, labels)
	if len(annotations) > 0 {
		if c.Annotations == nil {
			c.Annotations = make(map[string]string, len(annotations))
		}
		maps.Copy(c.Annotations, annotations)
	}
	return c
}

func ownerLabels(o Owner) map[string]string {
	return map[string]string{LabelOwnerKind: o.Kind, LabelOwnerName: o.Name}
}

// scaled resolves an int-or-percent of total, rounding up or down as
// Kubernetes does (surge up, unavailable down).
func scaled(v *intOrPercent, total int32, roundUp bool) int32 {
	if v == nil {
		return 0
	}
	if !v.percent {
		return v.n
	}
	x := int64(v.n) * int64(total)
	if roundUp {
		return int32((x + 99) / 100)
	}
	return int32(x / 100)
}

type intOrPercent struct {
	n       int32
	percent bool
}

func itoa[T ~int | ~int32 | ~int64](v T) string { return strconv.FormatInt(int64(v), 10) }

// setCondition returns conds with c set, keeping the previous transition
// time when the status did not change.
func setCondition(prev []Condition, now time.Time, c Condition) Condition {
	c.LastTransitionTime = now
	for _, p := range prev {
		if p.Type == c.Type && p.Status == c.Status {
			c.LastTransitionTime = p.LastTransitionTime
		}
	}
	return c
}
