package schedule_test

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/reconciler/schedule"
)

func ExampleSchedule() {
	offers := func(cpu, memory string) corev1.ResourceList {
		return corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse(cpu),
			corev1.ResourceMemory: resource.MustParse(memory),
			corev1.ResourcePods:   resource.MustParse("110"),
		}
	}
	machines := []schedule.Machine{
		{Name: "m1", Ready: true, Allocatable: offers("4", "8Gi")},
		{Name: "m2", Ready: true, Allocatable: offers("4", "2Gi")},
		{Name: "gpu", Ready: true, Allocatable: offers("16", "64Gi"),
			Taints: []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}},
	}
	withMemory := func(name, memory string) schedule.Pod {
		return schedule.Pod{Namespace: "shop", Name: name, Spec: &corev1.PodSpec{Containers: []corev1.Container{{
			Name:      "app",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memory)}},
		}}}}
	}
	res := schedule.Schedule(machines, nil, []schedule.Pod{
		withMemory("db-0", "6Gi"),
		withMemory("db-1", "6Gi"),
	})
	fmt.Println("db-0 on", res.Placements[schedule.PodKey{Namespace: "shop", Name: "db-0"}])
	fmt.Println(res.Unschedulable[schedule.PodKey{Namespace: "shop", Name: "db-1"}])
	// Output:
	// db-0 on m1
	// 0/3 machines are available: 2 insufficient memory, 1 untolerated taint {dedicated: gpu}.
}
