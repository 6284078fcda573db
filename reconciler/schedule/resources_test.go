package schedule

import (
	"maps"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func reqs(kv ...string) corev1.ResourceRequirements {
	rl := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		rl[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return corev1.ResourceRequirements{Requests: rl}
}

// quantities renders a ResourceList as strings for comparison.
func quantities(l corev1.ResourceList) map[string]string {
	out := map[string]string{}
	for k, v := range l {
		out[string(k)] = v.String()
	}
	return out
}

func TestPodRequests(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	tests := []struct {
		name string
		spec corev1.PodSpec
		want map[string]string
	}{
		{
			name: "containers add up",
			spec: corev1.PodSpec{Containers: []corev1.Container{
				{Resources: reqs("cpu", "250m", "memory", "64Mi")},
				{Resources: reqs("cpu", "750m", "memory", "64Mi", "nvidia.com/gpu", "1")},
			}},
			want: map[string]string{"cpu": "1", "memory": "128Mi", "nvidia.com/gpu": "1"},
		},
		{
			name: "a larger init container wins per resource",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Resources: reqs("cpu", "2", "memory", "16Mi")}},
				Containers:     []corev1.Container{{Resources: reqs("cpu", "500m", "memory", "1Gi")}},
			},
			want: map[string]string{"cpu": "2", "memory": "1Gi"},
		},
		{
			name: "sidecars add to the containers and to later init containers",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{
					{Resources: reqs("cpu", "100m"), RestartPolicy: &always},
					{Resources: reqs("cpu", "1500m")},
				},
				Containers: []corev1.Container{{Resources: reqs("cpu", "1")}},
			},
			// max(1 + 0.1, 1.5 + 0.1)
			want: map[string]string{"cpu": "1600m"},
		},
		{
			name: "an init container before a sidecar does not see it",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{
					{Resources: reqs("cpu", "1500m")},
					{Resources: reqs("cpu", "100m"), RestartPolicy: &always},
				},
				Containers: []corev1.Container{{Resources: reqs("cpu", "1")}},
			},
			want: map[string]string{"cpu": "1500m"},
		},
		{
			name: "overhead is added",
			spec: corev1.PodSpec{
				Containers: []corev1.Container{{Resources: reqs("cpu", "1", "memory", "1Gi")}},
				Overhead:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("120Mi")},
			},
			want: map[string]string{"cpu": "1250m", "memory": "1144Mi"},
		},
		{
			name: "pod-level requests replace cpu and memory",
			spec: corev1.PodSpec{
				Resources:  &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3")}},
				Containers: []corev1.Container{{Resources: reqs("cpu", "1", "memory", "1Gi")}},
			},
			want: map[string]string{"cpu": "3", "memory": "1Gi"},
		},
		{
			name: "no requests",
			spec: corev1.PodSpec{Containers: []corev1.Container{{}}},
			want: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, quantities(PodRequests(&tt.spec))); diff != "" {
				t.Errorf("PodRequests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNonZeroRequests(t *testing.T) {
	spec := corev1.PodSpec{Containers: []corev1.Container{
		{}, // neither set: both defaults
		{Resources: reqs("cpu", "0", "memory", "1Gi")}, // explicit zero stays zero
	}}
	a := podAmounts(&spec, true)
	if a.cpu != 100 || a.memory != 200<<20+1<<30 {
		t.Errorf("non-zero requests = %dm cpu, %d bytes; want 100m, %d", a.cpu, a.memory, 200<<20+1<<30)
	}
	if r := podAmounts(&spec, false); r.cpu != 0 || r.memory != 1<<30 {
		t.Errorf("requests = %dm cpu, %d bytes; want 0, %d", r.cpu, r.memory, 1<<30)
	}
}

func TestResourcesFilter(t *testing.T) {
	tests := []struct {
		name     string
		machine  Machine
		bound    []BoundPod
		pod      Pod
		wantFail string
	}{
		{
			name:    "fits",
			machine: machine("m"),
			bound:   []BoundPod{bound("b", "m", requesting("cpu", "3", "memory", "4Gi"))},
			pod:     pod("p", requesting("cpu", "1", "memory", "4Gi")),
		},
		{
			name:     "cpu short by a millicore",
			machine:  machine("m"),
			bound:    []BoundPod{bound("b", "m", requesting("cpu", "3001m"))},
			pod:      pod("p", requesting("cpu", "1")),
			wantFail: "insufficient cpu",
		},
		{
			name:     "memory and ephemeral storage short",
			machine:  machine("m"),
			pod:      pod("p", requesting("memory", "9Gi", "ephemeral-storage", "101Gi")),
			wantFail: "insufficient memory; insufficient ephemeral-storage",
		},
		{
			name:     "extended resource the machine lacks",
			machine:  machine("m"),
			pod:      pod("p", requesting("nvidia.com/gpu", "1")),
			wantFail: "insufficient nvidia.com/gpu",
		},
		{
			name:    "extended resource the machine has",
			machine: machine("m", allocatable("nvidia.com/gpu", "2")),
			bound:   []BoundPod{bound("b", "m", requesting("nvidia.com/gpu", "1"))},
			pod:     pod("p", requesting("nvidia.com/gpu", "1")),
		},
		{
			name:     "pod count full",
			machine:  machine("m", allocatable(corev1.ResourcePods, "1")),
			bound:    []BoundPod{bound("b", "m")},
			pod:      pod("p"),
			wantFail: "too many pods",
		},
		{
			name: "no pods entry takes no pod",
			machine: func() Machine {
				m := machine("m")
				delete(m.Allocatable, corev1.ResourcePods)
				return m
			}(),
			pod:      pod("p"),
			wantFail: "too many pods",
		},
		{
			name:    "a pod without requests fits an overcommitted machine",
			machine: machine("m"),
			bound:   []BoundPod{bound("b", "m", requesting("cpu", "5"))},
			pod:     pod("p"),
		},
		{
			name:    "overhead counts",
			machine: machine("m", allocatable(corev1.ResourceCPU, "1")),
			pod: pod("p", requesting("cpu", "1"), func(p *Pod) {
				p.Spec.Overhead = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}
			}),
			wantFail: "insufficient cpu",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := run(t, []Machine{tt.machine}, tt.bound, tt.pod)
			if got := filterResults(c, resourcesFilter)["m"]; got != tt.wantFail {
				t.Errorf("reasons = %q, want %q", got, tt.wantFail)
			}
		})
	}
}

func TestLeastAllocatedScore(t *testing.T) {
	machines := []Machine{machine("busy"), machine("idle"), machine("big", allocatable("cpu", "8"), allocatable("memory", "16Gi"))}
	boundPods := []BoundPod{bound("b", "busy", requesting("cpu", "2", "memory", "4Gi"))}
	c := run(t, machines, boundPods, pod("p", requesting("cpu", "1", "memory", "2Gi")))
	// busy: cpu (4-3)/4 = 25, memory (8-6)/8 = 25; idle: 75, 75; big: 87, 87.
	want := map[string]int64{"busy": 25, "idle": 75, "big": 87}
	if diff := cmp.Diff(want, scoreResults(c, leastAllocatedScore)); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}

	// Containers without requests count 100m and 200Mi here.
	c = run(t, []Machine{machine("m")}, []BoundPod{bound("b", "m")}, pod("p"))
	// cpu (4000-200)*100/4000 = 95; memory (8192-400)*100/8192 = 95.
	if got := scoreResults(c, leastAllocatedScore)["m"]; got != 95 {
		t.Errorf("score with default requests = %d, want 95", got)
	}
}

func TestBalancedAllocationScore(t *testing.T) {
	machines := []Machine{machine("cpu-heavy"), machine("mem-heavy")}
	boundPods := []BoundPod{
		bound("c", "cpu-heavy", requesting("cpu", "2")),
		bound("m", "mem-heavy", requesting("memory", "4Gi")),
	}
	// Adding 2Gi to cpu-heavy gives fractions 0.5, 0.25: std 0.125, score 87;
	// to mem-heavy 0, 0.75: std 0.375, score 62.
	c := run(t, machines, boundPods, pod("p", requesting("memory", "2Gi")))
	want := map[string]int64{"cpu-heavy": 87, "mem-heavy": 62}
	if diff := cmp.Diff(want, scoreResults(c, balancedAllocationScore)); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}

	// A pod that requests neither cpu nor memory is not scored.
	c = run(t, machines, boundPods, pod("p"))
	if got := scoreResults(c, balancedAllocationScore); !maps.Equal(got, map[string]int64{"cpu-heavy": 0, "mem-heavy": 0}) {
		t.Errorf("best-effort pod scores = %v, want all 0", got)
	}
}
