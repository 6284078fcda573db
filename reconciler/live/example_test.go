package live_test

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/render"
)

// A first pass over examples/quickstart on three fresh machines: each
// machine is told to start one echo pod.
func Example() {
	d, err := render.Load(context.Background(), os.DirFS("../../examples/quickstart"), render.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	var observed []live.Observed
	for _, m := range d.Machines() {
		observed = append(observed, live.Observed{Machine: m.Name, Reachable: true, Node: api.NodeInfo{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("2"),
				corev1.ResourceMemory: resource.MustParse("4Gi"),
				corev1.ResourcePods:   resource.MustParse("110"),
			},
		}})
	}
	pass, err := live.Plan(live.Input{Desired: d, Observed: observed, Now: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}, live.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	live.WriteText(os.Stdout, pass, false)
	for _, m := range pass.Machines {
		fmt.Printf("%s: generation %d, %d pods\n", m.Name, m.Send.Generation, len(m.Send.Pods))
	}
	// Output:
	// lab1  + start  default/echo-c569cbf8f-pdqdb  (revision 1: 3 of 3 replicas; scale 0/3: surge 1)
	// lab2  + start  default/echo-c569cbf8f-fxmh6  (revision 1: 3 of 3 replicas; scale 0/3: surge 1)
	// lab3  + start  default/echo-c569cbf8f-zrs9f  (revision 1: 3 of 3 replicas; scale 0/3: surge 1)
	// Deployment default/echo: scale 0/3: surge 1, start echo-c569cbf8f-zrs9f, echo-c569cbf8f-pdqdb, echo-c569cbf8f-fxmh6
	// Plan: 3 to start, 0 to replace, 0 to update, 0 to stop; 3 machines to tell; 0 pending, 0 errors.
	// lab1: generation 1, 1 pods
	// lab2: generation 1, 1 pods
	// lab3: generation 1, 1 pods
}
