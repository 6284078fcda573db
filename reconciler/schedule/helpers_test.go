package schedule

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Builders for test fixtures: a machine with 4 cores, 8 GiB and room for
// 110 pods unless changed, and pods in namespace "default".

func machine(name string, opts ...func(*Machine)) Machine {
	m := Machine{
		Name:  name,
		Ready: true,
		Allocatable: corev1.ResourceList{
			corev1.ResourceCPU:              resource.MustParse("4"),
			corev1.ResourceMemory:           resource.MustParse("8Gi"),
			corev1.ResourcePods:             resource.MustParse("110"),
			corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		},
	}
	for _, o := range opts {
		o(&m)
	}
	return m
}

// setPairs sets key, value pairs in *m, making the map if needed.
func setPairs(m *map[string]string, kv []string) {
	if *m == nil {
		*m = map[string]string{}
	}
	for i := 0; i < len(kv); i += 2 {
		(*m)[kv[i]] = kv[i+1]
	}
}

func labelled(kv ...string) func(*Machine) {
	return func(m *Machine) { setPairs(&m.Labels, kv) }
}

func zone(z string) func(*Machine) { return labelled(corev1.LabelTopologyZone, z) }

func tainted(key, value string, effect corev1.TaintEffect) func(*Machine) {
	return func(m *Machine) {
		m.Taints = append(m.Taints, corev1.Taint{Key: key, Value: value, Effect: effect})
	}
}

func allocatable(name corev1.ResourceName, q string) func(*Machine) {
	return func(m *Machine) { m.Allocatable[name] = resource.MustParse(q) }
}

func cordoned(m *Machine) { m.Unschedulable = true }
func notReady(m *Machine) { m.Ready = false }

func pod(name string, opts ...func(*Pod)) Pod {
	p := Pod{Namespace: "default", Name: name, Spec: &corev1.PodSpec{
		Containers: []corev1.Container{{Name: "app"}},
	}}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func bound(name, machine string, opts ...func(*Pod)) BoundPod {
	return BoundPod{Pod: pod(name, opts...), Machine: machine}
}

func inNamespace(ns string) func(*Pod) { return func(p *Pod) { p.Namespace = ns } }

func podLabels(kv ...string) func(*Pod) {
	return func(p *Pod) { setPairs(&p.Labels, kv) }
}

func owned(owner string) func(*Pod) { return func(p *Pod) { p.Owner = owner } }

// requesting sets the first container's requests, as name, quantity pairs.
func requesting(kv ...string) func(*Pod) {
	return func(p *Pod) {
		rl := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			rl[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		p.Spec.Containers[0].Resources.Requests = rl
	}
}

func hostPorts(ports ...int32) func(*Pod) {
	return func(p *Pod) {
		for _, port := range ports {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: port, HostPort: port})
		}
	}
}

func tolerating(t corev1.Toleration) func(*Pod) {
	return func(p *Pod) { p.Spec.Tolerations = append(p.Spec.Tolerations, t) }
}

func nodeSelector(kv ...string) func(*Pod) {
	return func(p *Pod) { setPairs(&p.Spec.NodeSelector, kv) }
}

func nodeName(n string) func(*Pod) { return func(p *Pod) { p.Spec.NodeName = n } }

func affinity(f func(a *corev1.Affinity)) func(*Pod) {
	return func(p *Pod) {
		if p.Spec.Affinity == nil {
			p.Spec.Affinity = &corev1.Affinity{}
		}
		f(p.Spec.Affinity)
	}
}

func requiredNodeTerms(terms ...corev1.NodeSelectorTerm) func(*Pod) {
	return affinity(func(a *corev1.Affinity) {
		a.NodeAffinity = &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}
	})
}

func expr(key string, op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorRequirement {
	return corev1.NodeSelectorRequirement{Key: key, Operator: op, Values: values}
}

func selectLabels(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	setPairs(&s.MatchLabels, kv)
	return s
}

func term(key string, sel *metav1.LabelSelector) corev1.PodAffinityTerm {
	return corev1.PodAffinityTerm{TopologyKey: key, LabelSelector: sel}
}

// podTerms adds required and preferred terms to the pod's affinity, or
// with anti to its anti-affinity.
func podTerms(anti bool, required []corev1.PodAffinityTerm, preferred ...corev1.WeightedPodAffinityTerm) func(*Pod) {
	return affinity(func(a *corev1.Affinity) {
		if anti {
			if a.PodAntiAffinity == nil {
				a.PodAntiAffinity = &corev1.PodAntiAffinity{}
			}
			r, p := &a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution, &a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
			*r, *p = append(*r, required...), append(*p, preferred...)
			return
		}
		if a.PodAffinity == nil {
			a.PodAffinity = &corev1.PodAffinity{}
		}
		r, p := &a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution, &a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution
		*r, *p = append(*r, required...), append(*p, preferred...)
	})
}

func requiredAnti(terms ...corev1.PodAffinityTerm) func(*Pod)     { return podTerms(true, terms) }
func requiredAffinity(terms ...corev1.PodAffinityTerm) func(*Pod) { return podTerms(false, terms) }

func preferredAffinity(weight int32, t corev1.PodAffinityTerm) func(*Pod) {
	return podTerms(false, nil, corev1.WeightedPodAffinityTerm{Weight: weight, PodAffinityTerm: t})
}

func preferredAnti(weight int32, t corev1.PodAffinityTerm) func(*Pod) {
	return podTerms(true, nil, corev1.WeightedPodAffinityTerm{Weight: weight, PodAffinityTerm: t})
}

func spreading(cs ...corev1.TopologySpreadConstraint) func(*Pod) {
	return func(p *Pod) { p.Spec.TopologySpreadConstraints = append(p.Spec.TopologySpreadConstraints, cs...) }
}

func spreadBy(key string, maxSkew int32, when corev1.UnsatisfiableConstraintAction, sel *metav1.LabelSelector) corev1.TopologySpreadConstraint {
	return corev1.TopologySpreadConstraint{MaxSkew: maxSkew, TopologyKey: key, WhenUnsatisfiable: when, LabelSelector: sel}
}

// run compiles pod p against the machines and bound pods, for tests of a
// single filter or scorer.
func run(t *testing.T, machines []Machine, boundPods []BoundPod, p Pod, opts ...Option) *cycle {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := newState(machines, boundPods, o)
	info, err := newPodInfo(&p, o)
	if err != nil {
		t.Fatalf("compile pod: %v", err)
	}
	return newCycle(s, info)
}

// filterResults runs one filter on every machine: machine name to reasons,
// "" for a machine that passes.
func filterResults(c *cycle, f filter) map[string]string {
	out := map[string]string{}
	for _, m := range c.s.machines {
		out[m.name] = joinReasons(f(c, m))
	}
	return out
}

// failing is what filterResults should return when the machines in fails
// fail with those reasons and every other machine passes.
func failing(c *cycle, fails map[string]string) map[string]string {
	want := map[string]string{}
	for _, m := range c.s.machines {
		want[m.name] = fails[m.name]
	}
	return want
}

func joinReasons(rs []string) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += "; "
		}
		s += r
	}
	return s
}

// scoreResults runs one scorer over every machine: machine name to score.
func scoreResults(c *cycle, f func(*cycle, []*machineState, []int64)) map[string]int64 {
	out := make([]int64, len(c.s.machines))
	f(c, c.s.machines, out)
	res := map[string]int64{}
	for i, m := range c.s.machines {
		res[m.name] = out[i]
	}
	return res
}
