package reconciler

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/render"
)

// agents plays the fleet's agents for Converge's loop: a set handed to a
// machine runs at once, every pod ready. Unit-test double of the loop's
// only dependency; the real fleet is tested end to end (cmd/berth).
type agents struct {
	mu       sync.Mutex
	sets     map[string]api.DesiredPods
	networks map[string]api.Network
	down     map[string]bool
	sends    int
	observe  int
	// netSends counts networks set; stoppedInService, pods stopped while
	// some machine's Network still sent them traffic.
	netSends         int
	stoppedInService []string
}

func newAgents(names ...string) *agents {
	a := &agents{sets: map[string]api.DesiredPods{}, networks: map[string]api.Network{}, down: map[string]bool{}}
	for _, n := range names {
		a.sets[n] = api.DesiredPods{Pods: []api.Pod{}}
	}
	return a
}

func (a *agents) Observe(ctx context.Context) ([]live.Observed, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.observe++
	var out []live.Observed
	for _, name := range []string{"lab1", "lab2", "lab3"} {
		set, ok := a.sets[name]
		if !ok {
			continue
		}
		if a.down[name] {
			out = append(out, live.Observed{Machine: name, Err: "machine unreachable"})
			continue
		}
		n := a.networks[name]
		o := live.Observed{Machine: name, Reachable: true, Node: api.NodeInfo{
			Name: name, Generation: set.Generation, DesiredDigest: set.Digest(),
			Network:     api.NetworkStatus{Generation: n.Generation, Digest: n.Digest()},
			Allocatable: corev1.ResourceList{"cpu": resource.MustParse("2"), "memory": resource.MustParse("4Gi"), "pods": resource.MustParse("110")},
		}}
		for _, p := range set.Pods {
			o.Pods = append(o.Pods, api.PodStatus{Namespace: p.Namespace, Name: p.Name, UID: p.UID, Hash: p.Hash, Labels: p.Labels,
				Phase: corev1.PodRunning, Ready: true, StartedAt: time.Unix(0, 0),
				ContainerStatuses: []api.ContainerStatus{{Name: "echo", Ready: true, Started: true}}})
		}
		out = append(out, o)
	}
	return out, nil
}

func (a *agents) SetNetwork(ctx context.Context, machine string, n api.Network) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down[machine] {
		return errors.New("machine unreachable")
	}
	if n.Generation <= a.networks[machine].Generation {
		return fmt.Errorf("network generation %d after %d", n.Generation, a.networks[machine].Generation)
	}
	a.netSends++
	a.networks[machine] = n
	return nil
}

func (a *agents) SetPods(ctx context.Context, machine string, pods api.DesiredPods) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down[machine] {
		return errors.New("machine unreachable")
	}
	a.sends++
	// A pod taken away must have left every Service's endpoints first.
	keep := map[string]bool{}
	for _, p := range pods.Pods {
		keep[p.Key()+"/"+p.UID] = true
	}
	for _, p := range a.sets[machine].Pods {
		if keep[p.Key()+"/"+p.UID] {
			continue
		}
		for m, n := range a.networks {
			for _, svc := range n.Services {
				for _, ep := range svc.Endpoints {
					if ep.Pod == p.Key() && ep.Ready && !ep.Terminating && ep.Machine == machine {
						a.stoppedInService = append(a.stoppedInService, fmt.Sprintf("%s stopped on %s while %s routes %s to it", p.Key(), machine, m, svc.Name))
					}
				}
			}
		}
	}
	a.sets[machine] = pods
	return nil
}

func quickstartDesired(t *testing.T) *render.Desired {
	t.Helper()
	d, err := render.Load(context.Background(), os.DirFS("../examples/quickstart"), render.Options{})
	if err != nil || d.Diagnostics.HasErrors() {
		t.Fatalf("examples/quickstart: %v %v", err, d.Diagnostics.Err())
	}
	return d
}

func TestConverge(t *testing.T) {
	d := quickstartDesired(t)
	a := newAgents("lab1", "lab2", "lab3")
	var passes []*live.Pass
	c := &Converge{Machines: a, Poll: time.Millisecond, Progress: func(p *live.Pass) { passes = append(passes, p) }}
	res, err := c.Run(context.Background(), d, live.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass.Converged || res.Passes != len(passes) || res.Passes < 2 {
		t.Fatalf("converged %v after %d passes (%d reported)", res.Pass.Converged, res.Passes, len(passes))
	}
	total := 0
	for _, set := range a.sets {
		total += len(set.Pods)
	}
	if total != 3 {
		t.Errorf("%d pods sent in all; want the Deployment's 3", total)
	}

	// Again, from the memory it left: one pass, nothing sent.
	sends := a.sends
	res, err = c.Run(context.Background(), d, res.Pass.Memory)
	if err != nil || res.Passes != 1 || a.sends != sends {
		t.Errorf("a converged fleet: %d passes, %d sends, %v; want 1 pass, none sent", res.Passes, a.sends-sends, err)
	}

	// A machine that does not answer: no convergence, the loop ends with
	// the context and the last pass names it.
	a.down["lab2"] = true
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res, err = c.Run(ctx, d, res.Pass.Memory)
	if !errors.Is(err, context.DeadlineExceeded) || res.Pass == nil || res.Pass.Converged {
		t.Fatalf("with lab2 down: %v, pass %+v", err, res.Pass)
	}
	for _, m := range res.Pass.Machines {
		if m.Name == "lab2" && m.Reachable {
			t.Error("lab2 reported reachable")
		}
	}
}

// TestConvergeNetworks: every machine is given its Network with the
// Service's ready endpoints; a rollout takes each old pod out of every
// machine's endpoints before its machine is told to stop it.
func TestConvergeNetworks(t *testing.T) {
	d := quickstartDesired(t)
	a := newAgents("lab1", "lab2", "lab3")
	// The double reports no addresses; give every pod one as its machine
	// would through CNI.
	c := &Converge{Machines: ipAgents{a}, Poll: time.Millisecond}
	res, err := c.Run(context.Background(), d, live.Memory{})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.networks) != 3 {
		t.Fatalf("%d machines got a Network, want 3", len(a.networks))
	}
	var cidrs []string
	for name, n := range a.networks {
		cidrs = append(cidrs, n.PodCIDR.String())
		if len(n.Routes) != 2 {
			t.Errorf("%s: %d routes, want one to each other machine", name, len(n.Routes))
		}
		i := slices.IndexFunc(n.Services, func(s api.Service) bool { return s.Name == "echo" })
		if i < 0 {
			t.Fatalf("%s: no echo Service in %+v", name, n.Services)
		}
		ready := 0
		for _, ep := range n.Services[i].Endpoints {
			if ep.Ready {
				ready++
			}
		}
		if ready != 3 || len(n.Services[i].ClusterIPs) != 1 {
			t.Errorf("%s: echo has %d ready endpoints and ClusterIPs %v; want 3 and one", name, ready, n.Services[i].ClusterIPs)
		}
	}
	slices.Sort(cidrs)
	if len(slices.Compact(cidrs)) != 3 {
		t.Errorf("pod CIDRs %v are not one per machine", cidrs)
	}
	if len(res.Pass.Memory.Network) == 0 {
		t.Error("the network allocations are not in the memory")
	}

	// Converged: nothing is sent again.
	sends := a.netSends
	if _, err := c.Run(context.Background(), d, res.Pass.Memory); err != nil || a.netSends != sends {
		t.Errorf("a converged fleet was sent %d networks (%v)", a.netSends-sends, err)
	}

	// An image change rolled out: no pod is stopped while routed to.
	for _, o := range d.Objects {
		if dep, ok := o.Obj.(*appsv1.Deployment); ok {
			dep.Spec.Template.Spec.Containers[0].Image = "198.18.0.1:5000/berth/echo:2"
		}
	}
	if _, err := c.Run(context.Background(), d, res.Pass.Memory); err != nil {
		t.Fatal(err)
	}
	if len(a.stoppedInService) > 0 {
		t.Errorf("pods stopped while still endpoints:\n%s", strings.Join(a.stoppedInService, "\n"))
	}
}

// ipAgents gives every pod of the agents double an address in its
// machine's pod CIDR, as CNI would.
type ipAgents struct{ *agents }

func (a ipAgents) Observe(ctx context.Context) ([]live.Observed, error) {
	obs, err := a.agents.Observe(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range obs {
		cidr := a.networks[obs[i].Machine].PodCIDR
		if !cidr.IsValid() {
			continue
		}
		for j := range obs[i].Pods {
			addr := cidr.Addr().As4()
			addr[3] = byte(2 + j)
			obs[i].Pods[j].PodIP = netip.AddrFrom4(addr).String()
		}
	}
	return obs, err
}
