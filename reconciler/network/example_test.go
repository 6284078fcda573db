package network_test

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/network"
	"berth.dev/berth/render"
)

// The Networks of examples/quickstart's three machines, each running one
// echo pod, the one on lab3 about to be stopped.
func ExampleCompute() {
	d, err := render.Load(context.Background(), os.DirFS("../../examples/quickstart"), render.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	echo := func(name, ip string) network.Pod {
		labels := map[string]string{"app": "echo"}
		return network.Pod{
			Status: api.PodStatus{Namespace: "default", Name: name, Labels: labels, Phase: corev1.PodRunning, Ready: true, PodIP: ip},
			Spec: &api.Pod{Namespace: "default", Name: name, Labels: labels, Spec: api.PodSpec{Containers: []corev1.Container{{
				Name: "echo", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}}}},
		}
	}
	stopping := echo("echo-c", "198.18.101.2")
	stopping.Stopping = true
	res, err := network.Compute(network.Input{Desired: d, Machines: []network.Machine{
		{Name: "lab1", Reachable: true, Healthy: true, Pods: []network.Pod{echo("echo-a", "198.18.127.2")}},
		{Name: "lab2", Reachable: true, Healthy: true, Pods: []network.Pod{echo("echo-b", "198.18.114.2")}},
		{Name: "lab3", Reachable: true, Healthy: true, Pods: []network.Pod{stopping}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, name := range []string{"lab1", "lab2", "lab3"} {
		n := res.Networks[name]
		fmt.Printf("%s: pods %s, %d routes\n", name, n.PodCIDR, len(n.Routes))
	}
	svc := res.Networks["lab1"].Services[0]
	fmt.Printf("Service %s/%s: %s port %d\n", svc.Namespace, svc.Name, svc.ClusterIPs[0], svc.Ports[0].Port)
	for _, e := range svc.Endpoints {
		fmt.Printf("  %s %s:%d ready=%v terminating=%v\n", e.Pod, e.IP, e.Ports[0].Port, e.Ready, e.Terminating)
	}
	// Output:
	// lab1: pods 198.18.127.0/24, 2 routes
	// lab2: pods 198.18.114.0/24, 2 routes
	// lab3: pods 198.18.101.0/24, 2 routes
	// Service default/echo: 198.19.35.190 port 80
	//   default/echo-c 198.18.101.2:8080 ready=false terminating=true
	//   default/echo-b 198.18.114.2:8080 ready=true terminating=false
	//   default/echo-a 198.18.127.2:8080 ready=true terminating=false
}
