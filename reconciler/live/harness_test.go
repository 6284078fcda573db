package live

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"testing/fstest"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// tb is what the harness needs of testing.T, testing.B and rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// repoFS reads a repository directory into memory, so a test can change
// its files.
func repoFS(t tb, dir string) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(dir + "/" + p)
		if err != nil {
			return err
		}
		out[p] = &fstest.MapFile{Data: b}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// quickstart is examples/quickstart, with the echo image tag given.
func quickstart(t tb, tag string) fstest.MapFS {
	t.Helper()
	fsys := repoFS(t, "../../examples/quickstart")
	app := string(fsys["app.yaml"].Data)
	if !strings.Contains(app, "berth/echo:1") {
		t.Fatal("examples/quickstart/app.yaml no longer runs berth/echo:1")
	}
	fsys["app.yaml"] = &fstest.MapFile{Data: []byte(strings.ReplaceAll(app, "berth/echo:1", "berth/echo:"+tag))}
	return fsys
}

func load(t tb, fsys fs.FS) *render.Desired {
	t.Helper()
	d, err := render.Load(context.Background(), fsys, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Diagnostics.HasErrors() {
		t.Fatalf("test repository is invalid: %v", d.Diagnostics.Err())
	}
	return d
}

// simPod is one incarnation of a pod on a simulated machine.
type simPod struct {
	pod         api.Pod
	age         int // passes since it started
	terminating int // passes left until it is gone; -1 while it runs
}

// simMachine plays a machine's agent: it takes whole pod sets and runs
// them, the way nodes/agent does (a new UID or hash under a name stops the
// old incarnation first, which lingers as terminating).
type simMachine struct {
	name        string
	reachable   bool
	gen         int64
	digest      string
	set         []api.Pod
	pods        []*simPod
	allocatable corev1.ResourceList
}

// fleetSim is a fleet of simulated agents and a controller that runs
// passes over them.
type fleetSim struct {
	t        tb
	now      time.Time
	machines []*simMachine
	desired  *render.Desired
	memory   Memory
	opts     Options
	// readyAfter is how many steps a new pod takes to be ready.
	readyAfter int
	// terminateSteps is how long a stopped pod lingers.
	terminateSteps int
	// sends counts the sets handed to agents.
	sends int
	// last holds the sets this controller process sent, when useLast.
	last    map[string]*api.DesiredPods
	useLast bool
}

func newFleetSim(t tb, d *render.Desired) *fleetSim {
	s := &fleetSim{t: t, now: t0, desired: d, readyAfter: 1, terminateSteps: 1}
	for _, m := range d.Machines() {
		s.machines = append(s.machines, &simMachine{name: m.Name, reachable: true, allocatable: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("2"),
			corev1.ResourceMemory: resource.MustParse("4Gi"),
			corev1.ResourcePods:   resource.MustParse("110"),
		}})
	}
	return s
}

func (s *fleetSim) machine(name string) *simMachine {
	for _, m := range s.machines {
		if m.name == name {
			return m
		}
	}
	s.t.Fatalf("no machine %s", name)
	return nil
}

// observe is what every agent reports now.
func (s *fleetSim) observe() []Observed {
	var out []Observed
	for _, m := range s.machines {
		o := Observed{Machine: m.name, Reachable: m.reachable}
		if !m.reachable {
			o.Err = "dial tcp: connection refused"
			out = append(out, o)
			continue
		}
		o.Node = api.NodeInfo{Name: m.name, Generation: m.gen, DesiredDigest: m.digest, Allocatable: m.allocatable, Pods: len(m.pods)}
		o.Pods = []api.PodStatus{}
		for _, p := range m.pods {
			st := api.PodStatus{
				Namespace: p.pod.Namespace, Name: p.pod.Name, UID: p.pod.UID, Hash: p.pod.Hash,
				Labels: p.pod.Labels, Phase: corev1.PodPending, StartedAt: s.now.Add(-time.Duration(p.age) * time.Second),
				Terminating: p.terminating >= 0,
			}
			if p.age >= s.readyAfter {
				st.Phase = corev1.PodRunning
				st.Ready = p.terminating < 0
			}
			if p.pod.Spec.RestartPolicy != corev1.RestartPolicyAlways && p.age >= s.readyAfter+2 {
				// A Job's pod runs for two steps, then succeeds.
				st.Phase, st.Ready = corev1.PodSucceeded, false
				for _, c := range p.pod.Spec.Containers {
					st.ContainerStatuses = append(st.ContainerStatuses, api.ContainerStatus{Name: c.Name, State: corev1.ContainerState{
						Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, FinishedAt: metav1.NewTime(s.now)},
					}})
				}
			}
			o.Pods = append(o.Pods, st)
		}
		out = append(out, o)
	}
	return out
}

// plan runs a pass over the fleet as it is now.
func (s *fleetSim) plan() *Pass {
	s.t.Helper()
	in := Input{Desired: s.desired, Observed: s.observe(), Memory: s.memory, Now: s.now}
	if s.useLast {
		in.Last = s.last
	}
	p, err := Plan(in, s.opts)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, e := range p.Errors {
		s.t.Fatalf("pass error: %s", e)
	}
	return p
}

// apply hands each machine its set (those for which only says so), and
// keeps the pass's memory.
func (s *fleetSim) apply(p *Pass, only func(machine string) bool) {
	for _, mp := range p.Machines {
		if mp.Send == nil || (only != nil && !only(mp.Name)) {
			continue
		}
		s.machine(mp.Name).setPods(*mp.Send, s.terminateSteps)
		s.sends++
		if s.last == nil {
			s.last = map[string]*api.DesiredPods{}
		}
		s.last[mp.Name] = mp.Send
	}
	s.memory = p.Memory
}

func (m *simMachine) setPods(d api.DesiredPods, terminate int) {
	if !m.reachable || d.Generation <= m.gen {
		return
	}
	m.gen, m.digest, m.set = d.Generation, d.Digest(), slices.Clone(d.Pods)
	want := map[string]api.Pod{}
	for _, p := range d.Pods {
		want[p.Key()] = p
	}
	running := map[string]bool{}
	for _, p := range m.pods {
		w, ok := want[p.pod.Key()]
		if p.terminating >= 0 {
			continue
		}
		if !ok || w.UID != p.pod.UID || w.Hash != p.pod.Hash {
			p.terminating = terminate
			continue
		}
		p.pod = w
		running[w.Key()] = true
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if !running[k] {
			m.pods = append(m.pods, &simPod{pod: want[k], terminating: -1})
		}
	}
}

// step lets a second pass: pods age, stopped ones go.
func (s *fleetSim) step() {
	s.now = s.now.Add(time.Second)
	for _, m := range s.machines {
		if !m.reachable {
			continue
		}
		var keep []*simPod
		for _, p := range m.pods {
			p.age++
			if p.terminating > 0 {
				p.terminating--
			} else if p.terminating == 0 {
				continue
			}
			keep = append(keep, p)
		}
		m.pods = keep
	}
}

// converge runs plan, apply, step until a pass is converged; check sees
// every pass.
func (s *fleetSim) converge(limit int, check func(*Pass)) *Pass {
	s.t.Helper()
	for range limit {
		p := s.plan()
		if check != nil {
			check(p)
		}
		if p.Converged {
			s.memory = p.Memory
			return p
		}
		s.apply(p, nil)
		s.step()
	}
	s.t.Fatalf("not converged after %d passes:\n%s", limit, s.text())
	return nil
}

func (s *fleetSim) text() string {
	var b strings.Builder
	p, err := Plan(Input{Desired: s.desired, Observed: s.observe(), Memory: s.memory, Now: s.now}, s.opts)
	if err != nil {
		return err.Error()
	}
	WriteText(&b, p, true)
	b.WriteString(s.dump())
	return b.String()
}

// dump lists what runs where, one line per incarnation.
func (s *fleetSim) dump() string {
	var b strings.Builder
	for _, m := range s.machines {
		for _, p := range m.pods {
			fmt.Fprintf(&b, "%s %s %s age=%d term=%d\n", m.name, p.pod.Key(), p.pod.Hash, p.age, p.terminating)
		}
	}
	return b.String()
}

// running lists the live (not terminating) incarnations by pod key.
func (s *fleetSim) running() map[string][]string {
	out := map[string][]string{}
	for _, m := range s.machines {
		for _, p := range m.pods {
			if p.terminating < 0 {
				out[p.pod.Key()] = append(out[p.pod.Key()], m.name)
			}
		}
	}
	return out
}

// counts of the live pods whose name starts with prefix: all, ready, and
// per hash.
func (s *fleetSim) counts(prefix string) (total, ready int, hashes map[string]int) {
	hashes = map[string]int{}
	for _, m := range s.machines {
		for _, p := range m.pods {
			if p.terminating >= 0 || !strings.HasPrefix(p.pod.Name, prefix) {
				continue
			}
			total++
			hashes[p.pod.Hash]++
			if p.age >= s.readyAfter && m.reachable {
				ready++
			}
		}
	}
	return total, ready, hashes
}

// noDuplicates fails when a pod runs on two machines, or twice on one.
func (s *fleetSim) noDuplicates() {
	s.t.Helper()
	for k, ms := range s.running() {
		if len(ms) > 1 {
			s.t.Fatalf("pod %s runs %d times (%v):\n%s", k, len(ms), ms, s.dump())
		}
	}
}
