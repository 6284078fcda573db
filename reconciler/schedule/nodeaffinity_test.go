package schedule

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

func TestNodeAffinityFilter(t *testing.T) {
	machines := []Machine{
		machine("a", labelled("disk", "ssd", "cores", "16")),
		machine("b", labelled("disk", "hdd", "cores", "8")),
		machine("c", labelled("cores", "many")),
	}
	const no = "didn't match node selector/affinity"
	tests := []struct {
		name string
		pod  Pod
		want map[string]string // machines that fail; others pass
	}{
		{"nodeSelector", pod("p", nodeSelector("disk", "ssd")), map[string]string{"b": no, "c": no}},
		{"nodeSelector on the well-known hostname label", pod("p", nodeSelector(corev1.LabelHostname, "b")), map[string]string{"a": no, "c": no}},
		{"In", pod("p", requiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", corev1.NodeSelectorOpIn, "ssd", "nvme")}})), map[string]string{"b": no, "c": no}},
		{"NotIn matches a missing label", pod("p", requiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", corev1.NodeSelectorOpNotIn, "ssd")}})), map[string]string{"a": no}},
		{"Exists", pod("p", requiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", corev1.NodeSelectorOpExists)}})), map[string]string{"c": no}},
		{"DoesNotExist", pod("p", requiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", corev1.NodeSelectorOpDoesNotExist)}})), map[string]string{"a": no, "b": no}},
		{"Gt compares integers, a non-integer never matches", pod("p", requiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("cores", corev1.NodeSelectorOpGt, "8")}})), map[string]string{"b": no, "c": no}},
		{"Lt", pod("p", requiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("cores", corev1.NodeSelectorOpLt, "16")}})), map[string]string{"a": no, "c": no}},
		{"matchFields on the machine name", pod("p", requiredNodeTerms(corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{expr("metadata.name", corev1.NodeSelectorOpIn, "c")}})), map[string]string{"a": no, "b": no}},
		{"expressions of a term are ANDed", pod("p", requiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
			expr("disk", corev1.NodeSelectorOpExists), expr("cores", corev1.NodeSelectorOpIn, "8"),
		}})), map[string]string{"a": no, "c": no}},
		{"terms are ORed", pod("p", requiredNodeTerms(
			corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", corev1.NodeSelectorOpIn, "ssd")}},
			corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("cores", corev1.NodeSelectorOpIn, "many")}},
		)), map[string]string{"b": no}},
		{"an empty term matches nothing", pod("p", requiredNodeTerms(corev1.NodeSelectorTerm{})), map[string]string{"a": no, "b": no, "c": no}},
		{"no terms matches nothing", pod("p", requiredNodeTerms()), map[string]string{"a": no, "b": no, "c": no}},
		{"nodeSelector and affinity both apply", pod("p", nodeSelector("disk", "ssd"), requiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", corev1.NodeSelectorOpIn, "hdd")}})), map[string]string{"a": no, "b": no, "c": no}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := run(t, machines, nil, tt.pod)
			if diff := cmp.Diff(failing(c, tt.want), filterResults(c, nodeAffinityFilter)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNodeAffinityInvalidTerm(t *testing.T) {
	p := pod("p", requiredNodeTerms(
		corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("cores", corev1.NodeSelectorOpGt, "many")}},
		corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", corev1.NodeSelectorOpExists)}},
	))
	res := Schedule([]Machine{machine("a", labelled("disk", "ssd"))}, nil, []Pod{p})
	fe := res.Unschedulable[p.Key()]
	if fe == nil {
		t.Fatalf("pod with an invalid node selector term was placed on %q", res.Placements[p.Key()])
	}
	if want := "cannot schedule pod default/p: nodeAffinity required term 0: "; !strings.HasPrefix(fe.Message, want) {
		t.Errorf("message = %q, want it to start with %q", fe.Message, want)
	}
}

func TestNodeAffinityScore(t *testing.T) {
	machines := []Machine{
		machine("a", labelled("disk", "ssd", "net", "10g")),
		machine("b", labelled("disk", "ssd")),
		machine("c"),
	}
	p := pod("p", affinity(func(a *corev1.Affinity) {
		a.NodeAffinity = &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{
			{Weight: 30, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", corev1.NodeSelectorOpIn, "ssd")}}},
			{Weight: 10, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("net", corev1.NodeSelectorOpExists)}}},
			{Weight: 50, Preference: corev1.NodeSelectorTerm{}}, // matches nothing
		}}
	}))
	c := run(t, machines, nil, p)
	if diff := cmp.Diff(map[string]int64{"a": 100, "b": 75, "c": 0}, scoreResults(c, nodeAffinityScore)); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}
}
