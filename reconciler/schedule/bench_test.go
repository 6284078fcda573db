package schedule

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// benchFleet is 100 machines in 4 zones (every tenth one tainted for GPUs)
// and 1,000 pods from 50 Deployments of 20 replicas: each with requests,
// an owner (so the system default spread applies) and, by Deployment,
// one of zone spreading (DoNotSchedule), preferred anti-affinity by
// hostname, or a nodeSelector.
func benchFleet() ([]Machine, []Pod) {
	var machines []Machine
	for i := range 100 {
		m := Machine{
			Name:   fmt.Sprintf("m%03d", i),
			Ready:  true,
			Labels: map[string]string{corev1.LabelTopologyZone: fmt.Sprintf("z%d", i%4), "disk": []string{"ssd", "hdd"}[i%2]},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("32"),
				corev1.ResourceMemory: resource.MustParse("128Gi"),
				corev1.ResourcePods:   resource.MustParse("110"),
			},
		}
		if i%10 == 0 {
			m.Taints = []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
		}
		machines = append(machines, m)
	}
	var pods []Pod
	for d := range 50 {
		app := fmt.Sprintf("app%02d", d)
		for r := range 20 {
			p := pod(fmt.Sprintf("%s-%d", app, r), podLabels("app", app), owned("Deployment/"+app),
				requesting("cpu", fmt.Sprintf("%dm", 100+50*(d%5)), "memory", fmt.Sprintf("%dMi", 128*(1+d%4))))
			switch d % 3 {
			case 0:
				spreading(spreadBy(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule, selectLabels("app", app)))(&p)
			case 1:
				preferredAnti(100, term(corev1.LabelHostname, selectLabels("app", app)))(&p)
			case 2:
				nodeSelector("disk", "ssd")(&p)
			}
			pods = append(pods, p)
		}
	}
	return machines, pods
}

// BenchmarkSchedule1000Pods100Machines places 1,000 pods on 100 machines
// in one call.
func BenchmarkSchedule1000Pods100Machines(b *testing.B) {
	machines, pods := benchFleet()
	b.ReportAllocs()
	for b.Loop() {
		res := Schedule(machines, nil, pods)
		if len(res.Placements) != len(pods) {
			b.Fatalf("placed %d of %d pods: %v", len(res.Placements), len(pods), res.Unschedulable)
		}
	}
}
