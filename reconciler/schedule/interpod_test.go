package schedule

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestInterPodFilter(t *testing.T) {
	machines := []Machine{
		machine("a1", zone("a")), machine("a2", zone("a")),
		machine("b1", zone("b")),
		machine("x"), // no zone label
	}
	web := podLabels("app", "web")
	db := podLabels("app", "db")
	const (
		anti     = "didn't match pod anti-affinity rules"
		aff      = "didn't match pod affinity rules"
		affLabel = "didn't match pod affinity rules (missing topology label)"
		existing = "didn't satisfy existing pods' anti-affinity rules"
	)
	tests := []struct {
		name  string
		bound []BoundPod
		pod   Pod
		opts  []Option
		want  map[string]string // machines that fail
	}{
		{
			name:  "required anti-affinity keeps replicas off a machine",
			bound: []BoundPod{bound("w0", "a1", web)},
			pod:   pod("w1", web, requiredAnti(term(corev1.LabelHostname, selectLabels("app", "web")))),
			want:  map[string]string{"a1": anti},
		},
		{
			name:  "required anti-affinity by zone; machines without the key pass",
			bound: []BoundPod{bound("w0", "a1", web)},
			pod:   pod("w1", web, requiredAnti(term(corev1.LabelTopologyZone, selectLabels("app", "web")))),
			want:  map[string]string{"a1": anti, "a2": anti},
		},
		{
			name:  "a placed pod's anti-affinity rejects the incoming pod",
			bound: []BoundPod{bound("d0", "b1", db, requiredAnti(term(corev1.LabelTopologyZone, selectLabels("app", "web"))))},
			pod:   pod("w1", web),
			want:  map[string]string{"b1": existing},
		},
		{
			name:  "anti-affinity in another namespace does not apply",
			bound: []BoundPod{bound("w0", "a1", web, inNamespace("other"))},
			pod:   pod("w1", web, requiredAnti(term(corev1.LabelHostname, selectLabels("app", "web")))),
		},
		{
			name:  "anti-affinity naming the namespace applies",
			bound: []BoundPod{bound("w0", "a1", web, inNamespace("other"))},
			pod: pod("w1", web, requiredAnti(corev1.PodAffinityTerm{
				TopologyKey: corev1.LabelHostname, LabelSelector: selectLabels("app", "web"), Namespaces: []string{"other"},
			})),
			want: map[string]string{"a1": anti},
		},
		{
			name:  "namespaceSelector picks namespaces by their labels",
			bound: []BoundPod{bound("w0", "a1", web, inNamespace("team-a")), bound("w1", "b1", web, inNamespace("team-b"))},
			pod: pod("w2", web, requiredAnti(corev1.PodAffinityTerm{
				TopologyKey: corev1.LabelHostname, LabelSelector: selectLabels("app", "web"), NamespaceSelector: selectLabels("tier", "front"),
			})),
			opts: []Option{WithNamespaceLabels(map[string]map[string]string{"team-a": {"tier": "front"}, "team-b": {"tier": "back"}})},
			want: map[string]string{"a1": anti},
		},
		{
			name:  "an empty namespaceSelector covers every namespace",
			bound: []BoundPod{bound("w0", "a1", web, inNamespace("team-a")), bound("w1", "b1", web, inNamespace("team-b"))},
			pod: pod("w2", web, requiredAnti(corev1.PodAffinityTerm{
				TopologyKey: corev1.LabelHostname, LabelSelector: selectLabels("app", "web"), NamespaceSelector: &metav1.LabelSelector{},
			})),
			want: map[string]string{"a1": anti, "b1": anti},
		},
		{
			name: "mismatchLabelKeys excludes pods of the same value",
			bound: []BoundPod{
				bound("t0", "a1", podLabels("app", "web", "tenant", "acme")),
				bound("t1", "b1", podLabels("app", "web", "tenant", "other")),
			},
			pod: pod("t2", podLabels("app", "web", "tenant", "acme"), requiredAnti(corev1.PodAffinityTerm{
				TopologyKey: corev1.LabelTopologyZone, LabelSelector: selectLabels("app", "web"), MismatchLabelKeys: []string{"tenant"},
			})),
			want: map[string]string{"b1": anti},
		},
		{
			name:  "required affinity needs a matching pod in the domain",
			bound: []BoundPod{bound("d0", "a2", db)},
			pod:   pod("w1", web, requiredAffinity(term(corev1.LabelTopologyZone, selectLabels("app", "db")))),
			want:  map[string]string{"b1": aff, "x": affLabel},
		},
		{
			name: "required affinity with no matching pod anywhere",
			pod:  pod("w1", web, requiredAffinity(term(corev1.LabelTopologyZone, selectLabels("app", "db")))),
			want: map[string]string{"a1": aff, "a2": aff, "b1": aff, "x": affLabel},
		},
		{
			name: "the first pod of a self-affine group may go where the key exists",
			pod:  pod("w1", web, requiredAffinity(term(corev1.LabelTopologyZone, selectLabels("app", "web")))),
			want: map[string]string{"x": affLabel},
		},
		{
			name:  "matchLabelKeys narrows affinity to pods of the same value",
			bound: []BoundPod{bound("w0", "a1", podLabels("app", "web", "rev", "1")), bound("w1", "b1", podLabels("app", "web", "rev", "2"))},
			pod: pod("w2", podLabels("app", "web", "rev", "2"), requiredAffinity(corev1.PodAffinityTerm{
				TopologyKey: corev1.LabelTopologyZone, LabelSelector: selectLabels("app", "web"), MatchLabelKeys: []string{"rev"},
			})),
			want: map[string]string{"a1": aff, "a2": aff, "x": affLabel},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := run(t, machines, tt.bound, tt.pod, tt.opts...)
			if diff := cmp.Diff(failing(c, tt.want), filterResults(c, interPodFilter)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInterPodScore(t *testing.T) {
	machines := []Machine{machine("a1", zone("a")), machine("a2", zone("a")), machine("b1", zone("b")), machine("c1", zone("c"))}
	cache := podLabels("app", "cache")
	tests := []struct {
		name  string
		bound []BoundPod
		pod   Pod
		want  map[string]int64
	}{
		{
			name:  "preferred affinity draws to the zone of a match",
			bound: []BoundPod{bound("c0", "a1", cache)},
			pod:   pod("w", preferredAffinity(10, term(corev1.LabelTopologyZone, selectLabels("app", "cache")))),
			want:  map[string]int64{"a1": 100, "a2": 100, "b1": 0, "c1": 0},
		},
		{
			name:  "preferred anti-affinity pushes away, scaled between lowest and highest",
			bound: []BoundPod{bound("c0", "a1", cache), bound("c1", "a2", cache), bound("c2", "b1", cache)},
			pod:   pod("w", preferredAnti(10, term(corev1.LabelTopologyZone, selectLabels("app", "cache")))),
			// zone a: -20, zone b: -10, zone c: 0.
			want: map[string]int64{"a1": 0, "a2": 0, "b1": 50, "c1": 100},
		},
		{
			name:  "a placed pod's preferred anti-affinity pushes the incoming pod away",
			bound: []BoundPod{bound("c0", "b1", cache, preferredAnti(5, term(corev1.LabelHostname, selectLabels("app", "web"))))},
			pod:   pod("w", podLabels("app", "web")),
			want:  map[string]int64{"a1": 100, "a2": 100, "b1": 0, "c1": 100},
		},
		{
			name:  "a placed pod's required affinity draws the incoming pod",
			bound: []BoundPod{bound("c0", "c1", cache, requiredAffinity(term(corev1.LabelTopologyZone, selectLabels("app", "web"))))},
			pod:   pod("w", podLabels("app", "web")),
			want:  map[string]int64{"a1": 0, "a2": 0, "b1": 0, "c1": 100},
		},
		{
			name:  "no terms anywhere: all equal",
			bound: []BoundPod{bound("c0", "a1", cache)},
			pod:   pod("w"),
			want:  map[string]int64{"a1": 0, "a2": 0, "b1": 0, "c1": 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := run(t, machines, tt.bound, tt.pod)
			if diff := cmp.Diff(tt.want, scoreResults(c, interPodScore)); diff != "" {
				t.Errorf("scores (-want +got):\n%s", diff)
			}
		})
	}
}
