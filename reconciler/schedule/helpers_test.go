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

func labelled(kv ...string) func(*Machine) {
	return func(m *Machine) {
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		for i := 0; i < len(kv); i += 2 {
			m.Labels[kv[i]] = kv[i+1]
		}
	}
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
	return func(p *Pod) {
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		for i := 0; i < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
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
	return func(p *Pod) {
		p.Spec.NodeSelector = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			p.Spec.NodeSelector[kv[i]] = kv[i+1]
		}
	}
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
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func term(key string, sel *metav1.LabelSelector) corev1.PodAffinityTerm {
	return corev1.PodAffinityTerm{TopologyKey: key, LabelSelector: sel}
}

func requiredAnti(terms ...corev1.PodAffinityTerm) func(*Pod) {
	return affinity(func(a *corev1.Affinity) {
		if a.PodAntiAffinity == nil {
			a.PodAntiAffinity = &corev1.PodAntiAffinity{}
		}
		a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution = append(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution, terms...)
	})
}

func requiredAffinity(terms ...corev1.PodAffinityTerm) func(*Pod) {
	return affinity(func(a *corev1.Affinity) {
		if a.PodAffinity == nil {
			a.PodAffinity = &corev1.PodAffinity{}
		}
		a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution = append(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution, terms...)
	})
}

func preferredAffinity(weight int32, t corev1.PodAffinityTerm) func(*Pod) {
	return affinity(func(a *corev1.Affinity) {
		if a.PodAffinity == nil {
			a.PodAffinity = &corev1.PodAffinity{}
		}
		a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution,
			corev1.WeightedPodAffinityTerm{Weight: weight, PodAffinityTerm: t})
	})
}

func preferredAnti(weight int32, t corev1.PodAffinityTerm) func(*Pod) {
	return affinity(func(a *corev1.Affinity) {
		if a.PodAntiAffinity == nil {
			a.PodAntiAffinity = &corev1.PodAntiAffinity{}
		}
		a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution,
			corev1.WeightedPodAffinityTerm{Weight: weight, PodAffinityTerm: t})
	})
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
