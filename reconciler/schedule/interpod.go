package schedule

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// hardPodAffinityWeight is what an existing pod's required affinity term
// that matches the incoming pod adds to the score of its domain
// (kube-scheduler's default HardPodAffinityWeight).
const hardPodAffinityWeight = 1

// topologyPair is one topology domain: a label key and its value.
type topologyPair struct{ key, value string }

// podTerm is a PodAffinityTerm, compiled for the pod that carries it.
type podTerm struct {
	selector    labels.Selector
	namespaces  map[string]bool
	nsSelector  labels.Selector // nil when the term has none
	nsLabels    map[string]labels.Set
	topologyKey string
	weight      int64 // of a preferred term
}

// matches says whether the term selects pod q: q is in one of the term's
// namespaces and its labels match.
func (t *podTerm) matches(q *podInfo) bool {
	ns := q.key.Namespace
	if !t.namespaces[ns] && (t.nsSelector == nil || !t.nsSelector.Matches(t.nsLabels[ns])) {
		return false
	}
	return t.selector.Matches(q.labels)
}

// domain returns the term's topology domain on machine m, if m has one.
func (t *podTerm) domain(m *machineState) (topologyPair, bool) {
	v, ok := m.labels[t.topologyKey]
	return topologyPair{t.topologyKey, v}, ok
}

// compilePodTerms compiles the pod (anti-)affinity of pod p.
func (p *podInfo) compilePodTerms(a *corev1.Affinity, o options) error {
	if a == nil {
		return nil
	}
	var errs []error
	compile := func(what string, terms []corev1.PodAffinityTerm, weighted []corev1.WeightedPodAffinityTerm) (req, pref []podTerm) {
		for i := range terms {
			t, err := p.compilePodTerm(&terms[i], o)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s required term %d: %w", what, i, err))
				continue
			}
			req = append(req, t)
		}
		for i := range weighted {
			t, err := p.compilePodTerm(&weighted[i].PodAffinityTerm, o)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s preferred term %d: %w", what, i, err))
				continue
			}
			t.weight = int64(weighted[i].Weight)
			pref = append(pref, t)
		}
		return req, pref
	}
	if pa := a.PodAffinity; pa != nil {
		p.affinity, p.preferredAffinity = compile("podAffinity",
			pa.RequiredDuringSchedulingIgnoredDuringExecution, pa.PreferredDuringSchedulingIgnoredDuringExecution)
	}
	if pa := a.PodAntiAffinity; pa != nil {
		p.antiAffinity, p.preferredAntiAffinity = compile("podAntiAffinity",
			pa.RequiredDuringSchedulingIgnoredDuringExecution, pa.PreferredDuringSchedulingIgnoredDuringExecution)
	}
	return errors.Join(errs...)
}

// compilePodTerm compiles one term. matchLabelKeys and mismatchLabelKeys
// are merged into the selector with the pod's own label values, as the
// Kubernetes API server does when it admits the pod. Without namespaces
// and namespaceSelector, the term covers the pod's own namespace.
func (p *podInfo) compilePodTerm(t *corev1.PodAffinityTerm, o options) (podTerm, error) {
	if t.TopologyKey == "" {
		return podTerm{}, errors.New("topologyKey is empty")
	}
	sel, err := selectorWithKeys(t.LabelSelector, p.labels, t.MatchLabelKeys, t.MismatchLabelKeys)
	if err != nil {
		return podTerm{}, err
	}
	term := podTerm{selector: sel, topologyKey: t.TopologyKey, nsLabels: o.namespaceLabels}
	term.namespaces = make(map[string]bool, max(1, len(t.Namespaces)))
	for _, ns := range t.Namespaces {
		term.namespaces[ns] = true
	}
	if t.NamespaceSelector != nil {
		if term.nsSelector, err = metav1.LabelSelectorAsSelector(t.NamespaceSelector); err != nil {
			return podTerm{}, fmt.Errorf("namespaceSelector: %w", err)
		}
	} else if len(t.Namespaces) == 0 {
		term.namespaces[p.key.Namespace] = true
	}
	return term, nil
}

// selectorWithKeys converts a label selector and adds, for each of
// matchKeys the pod has, "key in (pod's value)" and for each of
// mismatchKeys "key notin (pod's value)".
func selectorWithKeys(ls *metav1.LabelSelector, podLabels labels.Set, matchKeys, mismatchKeys []string) (labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, fmt.Errorf("labelSelector: %w", err)
	}
	for _, k := range []struct {
		keys []string
		op   selection.Operator
	}{{matchKeys, selection.In}, {mismatchKeys, selection.NotIn}} {
		for _, key := range k.keys {
			v, ok := podLabels[key]
			if !ok {
				continue
			}
			r, err := labels.NewRequirement(key, k.op, []string{v})
			if err != nil {
				return nil, fmt.Errorf("label key %q: %w", key, err)
			}
			sel = sel.Add(*r)
		}
	}
	return sel, nil
}

// interPodState is what InterPodAffinity's filter needs to know about the
// pods already placed, worked out once per pod.
type interPodState struct {
	// existingAnti lists the domains where a placed pod's required
	// anti-affinity rejects the incoming pod.
	existingAnti []topologyPair
	// affinityCounts counts, per domain of each required affinity term,
	// the placed pods that match all of the incoming pod's terms;
	// antiCounts, per domain, the placed pods matching an anti-affinity
	// term.
	affinityCounts map[topologyPair]int
	antiCounts     map[topologyPair]int
}

func newInterPodState(s *state, p *podInfo) interPodState {
	var st interPodState
	for _, q := range s.withTerms {
		for i := range q.antiAffinity {
			t := &q.antiAffinity[i]
			if d, ok := t.domain(q.machine); ok && t.matches(p) {
				st.existingAnti = append(st.existingAnti, d)
			}
		}
	}
	if len(p.affinity) > 0 {
		st.affinityCounts = map[topologyPair]int{}
		for _, q := range s.pods {
			if !matchesAll(p.affinity, q) {
				continue
			}
			for i := range p.affinity {
				if d, ok := p.affinity[i].domain(q.machine); ok {
					st.affinityCounts[d]++
				}
			}
		}
	}
	if len(p.antiAffinity) > 0 {
		st.antiCounts = map[topologyPair]int{}
		for _, q := range s.pods {
			for i := range p.antiAffinity {
				t := &p.antiAffinity[i]
				if d, ok := t.domain(q.machine); ok && t.matches(q) {
					st.antiCounts[d]++
				}
			}
		}
	}
	return st
}

func matchesAll(terms []podTerm, q *podInfo) bool {
	for i := range terms {
		if !terms[i].matches(q) {
			return false
		}
	}
	return true
}

// interPodFilter is InterPodAffinity's filter: the pod's required affinity
// must find a matching pod in the machine's domain, its required
// anti-affinity must find none, and no placed pod's required anti-affinity
// may reject it there.
func interPodFilter(c *cycle, m *machineState) []string {
	p, st := c.pod, &c.interPod
	if len(p.affinity) > 0 {
		found := true
		for i := range p.affinity {
			d, ok := p.affinity[i].domain(m)
			if !ok {
				return []string{"didn't match pod affinity rules (missing topology label)"}
			}
			if st.affinityCounts[d] == 0 {
				found = false
			}
		}
		// The first pod of a group with affinity to itself may go
		// anywhere its topology keys exist, or it could never start.
		if !found && (len(st.affinityCounts) > 0 || !matchesAll(p.affinity, p)) {
			return []string{"didn't match pod affinity rules"}
		}
	}
	for i := range p.antiAffinity {
		if d, ok := p.antiAffinity[i].domain(m); ok && st.antiCounts[d] > 0 {
			return []string{"didn't match pod anti-affinity rules"}
		}
	}
	for _, d := range st.existingAnti {
		if v, ok := m.labels[d.key]; ok && v == d.value {
			return []string{"didn't satisfy existing pods' anti-affinity rules"}
		}
	}
	return nil
}

// interPodScore is InterPodAffinity's score. Each placed pod adds to or
// takes from the score of every machine in its domain: by the weight of
// each preferred affinity (anti-affinity) term of the incoming pod it
// matches, and by the weight of each of its own preferred affinity
// (anti-affinity) terms, or hardPodAffinityWeight for each of its required
// affinity terms, that match the incoming pod. Scores are then scaled
// between the lowest (0) and the highest (100).
func interPodScore(c *cycle, feasible []*machineState, out []int64) {
	p := c.pod
	incoming := len(p.preferredAffinity)+len(p.preferredAntiAffinity) > 0
	if !incoming && len(c.s.withTerms) == 0 {
		return
	}
	scores := map[topologyPair]int64{}
	// add adds sign times the weight (or fixed) of each term that selects
	// target, to the term's domain on machine m.
	add := func(terms []podTerm, m *machineState, target *podInfo, sign, fixed int64) {
		for i := range terms {
			t := &terms[i]
			d, ok := t.domain(m)
			if !ok || !t.matches(target) {
				continue
			}
			w := t.weight
			if fixed != 0 {
				w = fixed
			}
			scores[d] += sign * w
		}
	}
	if incoming {
		// The incoming pod's preferred terms against every placed pod,
		// machine by machine so each domain is looked up once per term.
		for _, m := range c.s.machines {
			for _, terms := range [2]struct {
				terms []podTerm
				sign  int64
			}{{p.preferredAffinity, 1}, {p.preferredAntiAffinity, -1}} {
				for i := range terms.terms {
					t := &terms.terms[i]
					d, ok := t.domain(m)
					if !ok {
						continue
					}
					for _, q := range m.pods {
						if t.matches(q) {
							scores[d] += terms.sign * t.weight
						}
					}
				}
			}
		}
	}
	for _, q := range c.s.withTerms {
		add(q.affinity, q.machine, p, 1, hardPodAffinityWeight)
		add(q.preferredAffinity, q.machine, p, 1, 0)
		add(q.preferredAntiAffinity, q.machine, p, -1, 0)
	}
	if len(scores) == 0 {
		return
	}
	keys := make([]string, 0, 4)
	for d := range scores {
		if !slices.Contains(keys, d.key) {
			keys = append(keys, d.key)
		}
	}
	slices.SortFunc(keys, strings.Compare)
	for i, m := range feasible {
		for _, k := range keys {
			if v, ok := m.labels[k]; ok {
				out[i] += scores[topologyPair{k, v}]
			}
		}
	}
	normalizeMinMax(out)
}
