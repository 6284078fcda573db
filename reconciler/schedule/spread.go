package schedule

import (
	"errors"
	"fmt"
	"math"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// spreadConstraint is a TopologySpreadConstraint, compiled.
type spreadConstraint struct {
	maxSkew    int
	key        string
	minDomains int
	// selector picks the pods that count, among those in the pod's
	// namespace; a system default constraint counts the pods of owner
	// instead.
	selector labels.Selector
	owner    string
	// Which machines' pods count: with honorAffinity only machines that
	// match the pod's nodeSelector and required node affinity (the
	// default), with honorTaints only machines whose NoSchedule and
	// NoExecute taints the pod tolerates (not the default), counting the
	// taints Kubernetes gives cordoned and not ready Nodes.
	honorAffinity, honorTaints bool
}

// System default constraints, as kube-scheduler's defaultConstraints.
var systemDefaultSpread = []struct {
	key     string
	maxSkew int
}{
	{corev1.LabelHostname, 3},
	{corev1.LabelTopologyZone, 5},
}

// compileSpread sorts the pod's topology spread constraints into hard
// (DoNotSchedule) and soft (ScheduleAnyway) ones; a pod with none that has
// an owner gets the system defaults. matchLabelKeys are merged into the
// selector with the pod's label values.
func (p *podInfo) compileSpread(cs []corev1.TopologySpreadConstraint) error {
	if len(cs) == 0 {
		if p.owner != "" {
			for _, d := range systemDefaultSpread {
				p.soft = append(p.soft, spreadConstraint{maxSkew: d.maxSkew, key: d.key, minDomains: 1, owner: p.owner, honorAffinity: true})
			}
			p.softSystem = true
		}
		return nil
	}
	var errs []error
	for i := range cs {
		c := &cs[i]
		sel, err := selectorWithKeys(c.LabelSelector, p.labels, c.MatchLabelKeys, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("topologySpreadConstraints[%d]: %w", i, err))
			continue
		}
		sc := spreadConstraint{
			maxSkew:       int(c.MaxSkew),
			key:           c.TopologyKey,
			minDomains:    1,
			selector:      sel,
			honorAffinity: c.NodeAffinityPolicy == nil || *c.NodeAffinityPolicy == corev1.NodeInclusionPolicyHonor,
			honorTaints:   c.NodeTaintsPolicy != nil && *c.NodeTaintsPolicy == corev1.NodeInclusionPolicyHonor,
		}
		switch c.WhenUnsatisfiable {
		case corev1.DoNotSchedule:
			if c.MinDomains != nil {
				sc.minDomains = int(*c.MinDomains)
			}
			p.hard = append(p.hard, sc)
		case corev1.ScheduleAnyway:
			p.soft = append(p.soft, sc)
		}
	}
	return errors.Join(errs...)
}

// counts says whether placed pod q counts for the constraint of pod p.
func (sc *spreadConstraint) counts(p, q *podInfo) bool {
	if q.key.Namespace != p.key.Namespace {
		return false
	}
	if sc.owner != "" {
		return q.owner == sc.owner
	}
	return sc.selector.Matches(q.labels)
}

func (sc *spreadConstraint) countOn(p *podInfo, m *machineState) int {
	if sc.owner != "" {
		return m.owners[ownerKey{p.key.Namespace, sc.owner}]
	}
	n := 0
	for _, q := range m.pods {
		if sc.counts(p, q) {
			n++
		}
	}
	return n
}

// ownerKey names the pods of one owner in one namespace.
type ownerKey struct{ namespace, owner string }

// includes says whether machine m's pods count for the constraint
// (nodeAffinityPolicy, nodeTaintsPolicy).
func (sc *spreadConstraint) includes(c *cycle, m *machineState) bool {
	if sc.honorAffinity && !c.nodeMatches(m) {
		return false
	}
	if sc.honorTaints && untolerated(m.conditionTaints, c.pod.tolerations, corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute) != nil {
		return false
	}
	return true
}

func hasKeys(m *machineState, cs []spreadConstraint) bool {
	for i := range cs {
		if _, ok := m.labels[cs[i].key]; !ok {
			return false
		}
	}
	return true
}

// domainCounts counts matching pods per topology value, in the order the
// values were first seen.
type domainCounts struct {
	index  map[string]int
	counts []int
}

func (d *domainCounts) slot(value string) int {
	if i, ok := d.index[value]; ok {
		return i
	}
	if d.index == nil {
		d.index = map[string]int{}
	}
	d.index[value] = len(d.counts)
	d.counts = append(d.counts, 0)
	return len(d.counts) - 1
}

// spreadState is what PodTopologySpread's filter needs, worked out once
// per pod: per hard constraint, the matching pods in each domain and the
// global minimum the skew is measured from.
type spreadState struct {
	domains []domainCounts
	minimum []int
}

func newSpreadState(c *cycle) spreadState {
	hard := c.pod.hard
	if len(hard) == 0 {
		return spreadState{}
	}
	st := spreadState{domains: make([]domainCounts, len(hard)), minimum: make([]int, len(hard))}
	// Every machine counts, ready or not and cordoned or not, as every
	// Node does in Kubernetes, unless a policy leaves it out: with
	// nodeTaintsPolicy Honor, cordoned and not ready machines drop out.
	for _, m := range c.s.machines {
		if !hasKeys(m, hard) {
			continue
		}
		for i := range hard {
			sc := &hard[i]
			if !sc.includes(c, m) {
				continue
			}
			j := st.domains[i].slot(m.labels[sc.key])
			st.domains[i].counts[j] += sc.countOn(c.pod, m)
		}
	}
	for i := range hard {
		d := &st.domains[i]
		if len(d.counts) < hard[i].minDomains || len(d.counts) == 0 {
			// Fewer domains than minDomains: the global minimum is 0.
			continue
		}
		st.minimum[i] = math.MaxInt
		for _, n := range d.counts {
			st.minimum[i] = min(st.minimum[i], n)
		}
	}
	return st
}

// spreadFilter is PodTopologySpread's filter: placing the pod on the
// machine must not make its domain exceed the global minimum by more than
// maxSkew, for every DoNotSchedule constraint.
func spreadFilter(c *cycle, m *machineState) []string {
	st := &c.spread
	for i := range c.pod.hard {
		sc := &c.pod.hard[i]
		v, ok := m.labels[sc.key]
		if !ok {
			return []string{"didn't match pod topology spread constraints (missing required label)"}
		}
		self := 0
		if sc.counts(c.pod, c.pod) {
			self = 1
		}
		n := 0
		if j, ok := st.domains[i].index[v]; ok {
			n = st.domains[i].counts[j]
		}
		if n+self-st.minimum[i] > sc.maxSkew {
			return []string{"didn't match pod topology spread constraints"}
		}
	}
	return nil
}

// spreadScore is PodTopologySpread's score for ScheduleAnyway constraints:
// machines whose domains hold fewer matching pods score higher, each
// constraint weighted by the logarithm of its number of domains. Machines
// lacking a topology key score 0, except under the system defaults, where
// a missing key is one more (empty) domain.
func spreadScore(c *cycle, feasible []*machineState, out []int64) {
	soft := c.pod.soft
	if len(soft) == 0 {
		return
	}
	requireAll := !c.pod.softSystem
	ignored := make([]bool, len(feasible))
	nIgnored := 0
	domains := make([]domainCounts, len(soft))
	for i, m := range feasible {
		if requireAll && !hasKeys(m, soft) {
			ignored[i] = true
			nIgnored++
			continue
		}
		for j := range soft {
			if soft[j].key != corev1.LabelHostname {
				domains[j].slot(m.labels[soft[j].key])
			}
		}
	}
	weights := make([]float64, len(soft))
	for j := range soft {
		size := len(domains[j].counts)
		if soft[j].key == corev1.LabelHostname {
			size = len(feasible) - nIgnored
		}
		weights[j] = math.Log(float64(size + 2))
	}
	for _, m := range c.s.machines {
		if requireAll && !hasKeys(m, soft) {
			continue
		}
		for j := range soft {
			sc := &soft[j]
			if sc.key == corev1.LabelHostname || !sc.includes(c, m) {
				continue
			}
			if k, ok := domains[j].index[m.labels[sc.key]]; ok {
				domains[j].counts[k] += sc.countOn(c.pod, m)
			}
		}
	}
	for i, m := range feasible {
		if ignored[i] {
			continue
		}
		var score float64
		for j := range soft {
			sc := &soft[j]
			v, ok := m.labels[sc.key]
			if !ok {
				continue
			}
			var n int
			if sc.key == corev1.LabelHostname {
				n = sc.countOn(c.pod, m)
			} else {
				n = domains[j].counts[domains[j].index[v]]
			}
			score += float64(n)*weights[j] + float64(sc.maxSkew-1)
		}
		out[i] = int64(math.Round(score))
	}
	// Fewer pods is better: scale so the lowest raw score gets 100.
	lo, hi := int64(math.MaxInt64), int64(0)
	for i, s := range out {
		if !ignored[i] {
			lo, hi = min(lo, s), max(hi, s)
		}
	}
	for i, s := range out {
		switch {
		case ignored[i]:
			out[i] = 0
		case hi == 0:
			out[i] = maxScore
		default:
			out[i] = maxScore * (hi + lo - s) / hi
		}
	}
}
