package network

import (
	"os"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	goldenfile "berth.dev/berth/internal/golden"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

// runLive runs a repository the way the controller loop does: a live pass
// places the pods, the machines report them running and ready (at the
// second and following addresses of their pod CIDRs), and the next live
// pass keeps them. It returns what FromLive needs, and the pod CIDRs'
// memory.
func runLive(t *testing.T, d *render.Desired) (observed []live.Observed, second *live.Pass, last map[string]*api.DesiredPods, mem Memory) {
	t.Helper()
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	node := api.NodeInfo{Allocatable: corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("16"),
		corev1.ResourceMemory: resource.MustParse("64Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}}
	for _, m := range d.Machines() {
		observed = append(observed, live.Observed{Machine: m.Name, Reachable: true, Node: node})
	}
	first, err := live.Plan(live.Input{Desired: d, Observed: observed, Now: now}, live.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cidrs := compute(t, Input{Desired: d, Machines: FromLive(observed, first, nil)})
	last = map[string]*api.DesiredPods{}
	for i, mp := range first.Machines {
		if mp.Send == nil {
			continue
		}
		last[mp.Name] = mp.Send
		o := &observed[i]
		o.Node.Generation, o.Node.DesiredDigest = mp.Send.Generation, mp.Send.Digest()
		for j, p := range mp.Send.Pods {
			o.Pods = append(o.Pods, api.PodStatus{
				Namespace: p.Namespace, Name: p.Name, UID: p.UID, Hash: p.Hash, Labels: p.Labels,
				Phase: corev1.PodRunning, Ready: true, PodIP: podIP(t, cidrs, mp.Name, uint64(2+j)),
			})
		}
	}
	second, err = live.Plan(live.Input{Desired: d, Observed: observed, Memory: first.Memory, Now: now.Add(time.Minute)}, live.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return observed, second, last, cidrs.Memory
}

// TestGoldenQuickstart is examples/quickstart's Networks once its echo
// pods run.
func TestGoldenQuickstart(t *testing.T) {
	d := load(t, os.DirFS("../../examples/quickstart"))
	observed, second, last, mem := runLive(t, d)
	if second.Changes() != 0 {
		t.Fatalf("the second live pass sends %d sets", second.Changes())
	}
	res := compute(t, Input{Desired: d, Machines: FromLive(observed, second, last), Memory: mem})
	golden(t, "quickstart.golden.json", dump(t, res))

	// Without the sets this process sent (a restarted controller), the
	// pass's remembered templates give the same named ports.
	again := compute(t, Input{Desired: d, Machines: FromLive(observed, second, nil), Memory: mem})
	if !reflect.DeepEqual(res.Networks, again.Networks) {
		t.Errorf("FromLive without the last sets gives other Networks:\n%s", goldenfile.Diff(dump(t, res), dump(t, again)))
	}
	for _, s := range res.Networks["lab1"].Services {
		for _, e := range s.Endpoints {
			if len(e.Ports) != 1 || e.Ports[0].Port != 8080 || !e.Ready {
				t.Errorf("endpoint %+v of %s: want ready, port http resolved to 8080", e, s.Name)
			}
		}
	}
}

// TestGoldenSeed is examples/seed's Networks once its pods run, with the
// seed's nginx Ingress served by every machine and a LoadBalancer pool.
func TestGoldenSeed(t *testing.T) {
	d := load(t, os.DirFS("../../examples/seed"))
	d.Cluster.Spec.Ingress = v1alpha1.IngressSpec{MachineSelector: &metav1.LabelSelector{}, ClassName: "nginx"}
	d.Cluster.Spec.LoadBalancer.Pools = []string{"198.18.0.240/29"}
	observed, second, last, mem := runLive(t, d)
	res := compute(t, Input{Desired: d, Machines: FromLive(observed, second, last), Memory: mem})
	golden(t, "seed.golden.json", dump(t, res))
}

func TestFromLiveMarksStopping(t *testing.T) {
	observed := []live.Observed{{Machine: "m1", Reachable: true, Pods: []api.PodStatus{
		{Namespace: "default", Name: "a", UID: "1"}, {Namespace: "default", Name: "b", UID: "2"}, {Namespace: "default", Name: "c", UID: "3"},
	}}, {Machine: "m2", Reachable: true, Node: api.NodeInfo{Network: api.NetworkStatus{Error: "nftables: boom"}}}, {Machine: "m3"}}
	pass := &live.Pass{Pods: []live.PodAction{
		{Machine: "m1", Namespace: "default", Name: "a", Action: live.Stop},
		{Machine: "m1", Namespace: "default", Name: "b", Action: live.Replace},
		{Machine: "m1", Namespace: "default", Name: "c", Action: live.Keep},
	}}
	ms := FromLive(observed, pass, nil)
	if got := []bool{ms[0].Pods[0].Stopping, ms[0].Pods[1].Stopping, ms[0].Pods[2].Stopping}; !reflect.DeepEqual(got, []bool{true, true, false}) {
		t.Errorf("stopping = %v, want stop and replace marked", got)
	}
	if !ms[0].Healthy || ms[1].Healthy || !ms[1].Reachable || ms[2].Reachable || ms[2].Healthy {
		t.Errorf("health: %+v", ms)
	}
}
