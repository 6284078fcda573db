package schedule

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// nodeMatcher is a pod's nodeSelector and node affinity, compiled.
type nodeMatcher struct {
	selector labels.Selector // nodeSelector; nil when the pod has none
	// required holds the terms of requiredDuringSchedulingIgnoredDuringExecution,
	// any one of which must match; hasRequired tells an absent affinity
	// from one whose terms all failed to parse.
	required    []nodeTerm
	hasRequired bool
	preferred   []nodeTerm
}

// nodeTerm is a NodeSelectorTerm: all its requirements must hold. A term
// without requirements, or with one that does not parse, matches no
// machine, as in Kubernetes.
type nodeTerm struct {
	labels   labels.Requirements
	names    []nameRequirement // matchFields on metadata.name
	matchNot bool              // empty or invalid: matches nothing
	weight   int64             // of a preferred term
}

// nameRequirement is a matchFields requirement; Kubernetes supports only
// the field metadata.name, with In or NotIn and a single value.
type nameRequirement struct {
	name string
	in   bool
}

func compileNodeMatcher(spec *corev1.PodSpec) (nodeMatcher, error) {
	var nm nodeMatcher
	if len(spec.NodeSelector) > 0 {
		nm.selector = labels.SelectorFromSet(labels.Set(spec.NodeSelector))
	}
	a := spec.Affinity
	if a == nil || a.NodeAffinity == nil {
		return nm, nil
	}
	var errs []error
	if r := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution; r != nil {
		nm.hasRequired = true
		for i, t := range r.NodeSelectorTerms {
			term, err := compileNodeTerm(t)
			if err != nil {
				errs = append(errs, fmt.Errorf("nodeAffinity required term %d: %w", i, err))
			}
			nm.required = append(nm.required, term)
		}
	}
	for i, p := range a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		if p.Weight == 0 {
			continue
		}
		term, err := compileNodeTerm(p.Preference)
		if err != nil {
			errs = append(errs, fmt.Errorf("nodeAffinity preferred term %d: %w", i, err))
		}
		term.weight = int64(p.Weight)
		nm.preferred = append(nm.preferred, term)
	}
	return nm, errors.Join(errs...)
}

var nodeSelectorOps = map[corev1.NodeSelectorOperator]selection.Operator{
	corev1.NodeSelectorOpIn:           selection.In,
	corev1.NodeSelectorOpNotIn:        selection.NotIn,
	corev1.NodeSelectorOpExists:       selection.Exists,
	corev1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
	corev1.NodeSelectorOpGt:           selection.GreaterThan,
	corev1.NodeSelectorOpLt:           selection.LessThan,
}

// compileNodeTerm turns a NodeSelectorTerm into requirements. An invalid
// term is returned as one that matches nothing, with the error.
func compileNodeTerm(t corev1.NodeSelectorTerm) (nodeTerm, error) {
	if len(t.MatchExpressions)+len(t.MatchFields) == 0 {
		return nodeTerm{matchNot: true}, nil
	}
	var term nodeTerm
	for _, e := range t.MatchExpressions {
		op, ok := nodeSelectorOps[e.Operator]
		if !ok {
			return nodeTerm{matchNot: true}, fmt.Errorf("%q is not a valid node selector operator", e.Operator)
		}
		r, err := labels.NewRequirement(e.Key, op, e.Values)
		if err != nil {
			return nodeTerm{matchNot: true}, err
		}
		term.labels = append(term.labels, *r)
	}
	for _, f := range t.MatchFields {
		if f.Key != "metadata.name" {
			return nodeTerm{matchNot: true}, fmt.Errorf("matchFields supports only metadata.name, not %q", f.Key)
		}
		if len(f.Values) != 1 || (f.Operator != corev1.NodeSelectorOpIn && f.Operator != corev1.NodeSelectorOpNotIn) {
			return nodeTerm{matchNot: true}, fmt.Errorf("matchFields on metadata.name needs operator In or NotIn and exactly one value")
		}
		term.names = append(term.names, nameRequirement{name: f.Values[0], in: f.Operator == corev1.NodeSelectorOpIn})
	}
	return term, nil
}

func (t *nodeTerm) matches(m *machineState) bool {
	if t.matchNot {
		return false
	}
	for i := range t.labels {
		if !t.labels[i].Matches(m.labels) {
			return false
		}
	}
	for _, n := range t.names {
		if (m.name == n.name) != n.in {
			return false
		}
	}
	return true
}

// matches says whether a machine satisfies the pod's nodeSelector and
// required node affinity.
func (nm *nodeMatcher) matches(m *machineState) bool {
	if nm.selector != nil && !nm.selector.Matches(m.labels) {
		return false
	}
	if !nm.hasRequired {
		return true
	}
	for i := range nm.required {
		if nm.required[i].matches(m) {
			return true
		}
	}
	return false
}

// nodeAffinityFilter is NodeAffinity's filter.
func nodeAffinityFilter(c *cycle, m *machineState) []string {
	if !c.nodeMatches(m) {
		return []string{"didn't match node selector/affinity"}
	}
	return nil
}

// nodeAffinityScore is NodeAffinity's score: the weights of the preferred
// terms a machine matches, scaled so the best machine scores 100.
func nodeAffinityScore(c *cycle, feasible []*machineState, out []int64) {
	pref := c.pod.node.preferred
	if len(pref) == 0 {
		return
	}
	for i, m := range feasible {
		for j := range pref {
			if pref[j].matches(m) {
				out[i] += pref[j].weight
			}
		}
	}
	normalize(out, false)
}
