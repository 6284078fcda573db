package reconciler

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

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
	mu      sync.Mutex
	sets    map[string]api.DesiredPods
	down    map[string]bool
	sends   int
	observe int
}

func newAgents(names ...string) *agents {
	a := &agents{sets: map[string]api.DesiredPods{}, down: map[string]bool{}}
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
		o := live.Observed{Machine: name, Reachable: true, Node: api.NodeInfo{
			Name: name, Generation: set.Generation, DesiredDigest: set.Digest(),
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

func (a *agents) SetPods(ctx context.Context, machine string, pods api.DesiredPods) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down[machine] {
		return errors.New("machine unreachable")
	}
	a.sends++
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
