package workload

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"reflect"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"pgregory.net/rapid"

	"berth.dev/berth/render"
)

// fnvHash is the tests' template hash: FNV-1a over the JSON encoding.
func fnvHash(t *corev1.PodTemplateSpec) string {
	b, err := json.Marshal(t)
	if err != nil {
		panic(err)
	}
	h := fnv.New32a()
	h.Write(b)
	return fmt.Sprintf("%08x", h.Sum32())[:8]
}

var testOpts = Options{TemplateHash: fnvHash}

var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

func template(image string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways,
			Containers:    []corev1.Container{{Name: "app", Image: image}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

func deploymentObj(name string, replicas int32, image string, mut ...func(*appsv1.Deployment)) *render.Object {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(replicas),
			Template: template(image),
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxSurge:       ptr(intstr.FromString("25%")),
					MaxUnavailable: ptr(intstr.FromString("25%")),
				},
			},
			RevisionHistoryLimit:    ptr(int32(10)),
			ProgressDeadlineSeconds: ptr(int32(600)),
		},
	}
	for _, m := range mut {
		m(d)
	}
	return &render.Object{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "default", Name: name, Obj: d}
}

func obj(kind string, name string, v any) *render.Object {
	api := map[string]string{"Pod": "v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}[kind]
	return &render.Object{APIVersion: api, Kind: kind, Namespace: "default", Name: name, Obj: v}
}

var _ = batchv1.Job{}

// chaosPass is one pass of a controller that may have been killed
// before it: with odds 1 in n its memory is lost, 1 in n it is an older
// copy. It checks that the pass is deterministic and decides the same
// from its memory's JSON (what the status branch keeps), and keeps the
// memory for the next pass.
func (s *sim) chaosPass(rt *rapid.T, n int) Result {
	switch rapid.IntRange(0, n-1).Draw(rt, "kill") {
	case 0:
		s.memory = Memory{}
	case 1:
		if len(s.history) > 0 {
			s.memory = s.history[rapid.IntRange(0, len(s.history)-1).Draw(rt, "stale")]
		}
	}
	r := s.compute()
	if again := s.compute(); !reflect.DeepEqual(r, again) {
		rt.Fatal("two passes over the same input differ")
	}
	s.memory = roundTrip(rt, s.memory)
	if again := s.compute(); !reflect.DeepEqual(r, again) {
		rt.Fatalf("a pass differs after a JSON round trip of its memory:\n%+v\n%+v", r.Memory, again.Memory)
	}
	s.memory = r.Memory
	s.history = append(s.history, r.Memory)
	return r
}

// chaosApply applies a pass, or (odds 1 in n) only its first few
// actions, as a controller killed half way would.
func (s *sim) chaosApply(rt *rapid.T, r Result, n int) {
	if rapid.IntRange(0, n-1).Draw(rt, "partial") == 0 {
		k := rapid.IntRange(0, 3).Draw(rt, "applied")
		s.apply(r, func(i int) bool { return i < k })
		return
	}
	s.apply(r, nil)
}

func roundTrip(t tb, m Memory) Memory {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out Memory
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// tb is what the harness needs of testing.T and rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// simPod is a pod of the simulated fleet.
type simPod struct {
	Pod
	age        int // steps since it started
	readyAfter int // steps from creation to Ready
	runFor     int // steps a finite pod runs before it exits (0: forever)
	exitCode   int32
	goneAfter  int // steps a terminating pod takes to go
}

// sim is a fake fleet: it applies each pass's output the way the agents
// would and lets time pass.
type sim struct {
	t        tb
	now      time.Time
	step     time.Duration
	machines []Machine
	pods     map[string]*simPod
	memory   Memory
	// history holds every memory a pass returned, for stale copies.
	history []Memory
	objects []*render.Object
	opts    Options
	// readyAfter decides how many steps a new pod takes to be Ready.
	readyAfter func(name string) int
	// runFor and exit decide how a pod of restartPolicy != Always ends.
	runFor func(name string) (steps int, exit int32)
	// terminateSteps is how long a stopped pod lingers as Terminating.
	terminateSteps int
	// timersOK: a pending wake-up does not keep run going (CronJobs).
	timersOK bool
	// place is the stand-in scheduler: the least loaded reachable machine.
	seq int
}

func newSim(t tb, machines int, objects ...*render.Object) *sim {
	s := &sim{t: t, now: t0, step: time.Second, pods: map[string]*simPod{}, objects: objects, opts: testOpts,
		readyAfter: func(string) int { return 1 }, runFor: func(string) (int, int32) { return 2, 0 }}
	for i := range machines {
		s.machines = append(s.machines, Machine{Name: fmt.Sprintf("m%d", i), Reachable: true,
			Labels: map[string]string{"kubernetes.io/hostname": fmt.Sprintf("m%d", i)}})
	}
	return s
}

func (s *sim) observed() []Pod {
	keys := slices.Sorted(maps.Keys(s.pods))
	out := make([]Pod, 0, len(keys))
	for _, k := range keys {
		p := s.pods[k].Pod
		p.Labels = maps.Clone(p.Labels)
		p.Containers = slices.Clone(p.Containers)
		out = append(out, p)
	}
	return out
}

func (s *sim) input() Input {
	return Input{Objects: s.objects, Machines: slices.Clone(s.machines), Pods: s.observed(), Memory: s.memory, Now: s.now}
}

func (s *sim) compute() Result {
	s.t.Helper()
	r, err := Compute(s.input(), s.opts)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

func (s *sim) place() string {
	load := map[string]int{}
	for _, p := range s.pods {
		load[p.Machine]++
	}
	best := ""
	for _, m := range s.machines {
		if !m.Reachable {
			continue
		}
		if best == "" || load[m.Name] < load[best] {
			best = m.Name
		}
	}
	return best
}

func (s *sim) reachable(machine string) bool {
	for _, m := range s.machines {
		if m.Name == machine {
			return m.Reachable
		}
	}
	return false
}

// apply carries out a pass's output; keep filters the actions applied
// (a controller killed half way); nil applies everything.
func (s *sim) apply(r Result, keep func(i int) bool) {
	i := 0
	do := func() bool {
		i++
		return keep == nil || keep(i-1)
	}
	stop := func(st Stop) {
		p := s.pods[st.Namespace+"/"+st.Name]
		if p == nil || p.Terminating || !s.reachable(p.Machine) {
			return
		}
		if !do() {
			return
		}
		p.Terminating = true
		p.Ready = false
		p.age = 0
		if s.terminateSteps == 0 {
			delete(s.pods, st.Namespace+"/"+st.Name)
		}
	}
	for _, w := range r.Workloads {
		for _, st := range w.Stop {
			stop(st)
		}
		for _, wp := range w.Pods {
			if wp.Action == Keep {
				continue
			}
			key := wp.Key()
			if old := s.pods[key]; wp.Action == Replace && (old == nil || !s.reachable(old.Machine)) {
				continue
			}
			if wp.Action == Create && s.pods[key] != nil {
				s.t.Fatalf("create of existing pod %s", key)
			}
			if !do() {
				continue
			}
			machine := wp.Machine
			if machine == "" {
				machine = s.place()
			}
			if !s.reachable(machine) {
				continue
			}
			s.seq++
			steps, exit := 0, int32(0)
			if wp.Template.Spec.RestartPolicy != corev1.RestartPolicyAlways {
				steps, exit = s.runFor(wp.Name)
			}
			s.pods[key] = &simPod{
				Pod: Pod{Namespace: wp.Namespace, Name: wp.Name, Labels: maps.Clone(wp.Template.Labels), Machine: machine,
					TemplateHash: wp.Hash, Phase: corev1.PodPending, Created: s.now,
					Containers: []ContainerState{{Name: "app"}}},
				readyAfter: s.readyAfter(wp.Name), runFor: steps, exitCode: exit,
			}
		}
	}
	for _, st := range r.Orphans {
		stop(st)
	}
}

// tick lets one step of time pass on the machines.
func (s *sim) tick() {
	s.now = s.now.Add(s.step)
	for k, p := range s.pods {
		if !s.reachable(p.Machine) {
			continue
		}
		p.age++
		if p.Terminating {
			if p.age >= s.terminateSteps {
				delete(s.pods, k)
			}
			continue
		}
		if p.Phase == corev1.PodSucceeded || p.Phase == corev1.PodFailed {
			continue
		}
		if p.Phase == corev1.PodPending {
			p.Phase = corev1.PodRunning
			p.StartedAt = s.now
		}
		if p.runFor > 0 && p.age >= p.runFor {
			p.Ready = false
			ec := p.exitCode
			p.Containers[0].ExitCode = &ec
			p.Containers[0].FinishedAt = s.now
			if ec == 0 {
				p.Phase = corev1.PodSucceeded
			} else if p.Labels != nil && s.restartPolicy(p) == corev1.RestartPolicyOnFailure {
				p.Containers[0].RestartCount++
				p.age = 0
				p.runFor, p.exitCode = s.runFor(p.Name + fmt.Sprintf("#%d", p.Containers[0].RestartCount))
			} else {
				p.Phase = corev1.PodFailed
			}
			continue
		}
		if !p.Ready && p.age >= p.readyAfter {
			p.Ready = true
			p.ReadySince = s.now
		}
	}
}

func (s *sim) restartPolicy(p *simPod) corev1.RestartPolicy {
	for _, o := range s.objects {
		_, spec, _, _ := render.PodTemplate(o)
		if spec != nil && (o.Name == p.Labels[LabelOwnerName] || o.Name == p.Labels[LabelCronJob]) {
			return spec.RestartPolicy
		}
	}
	return corev1.RestartPolicyAlways
}

// run passes until one has nothing to do, calling check after every
// apply; it fails the test after max passes.
func (s *sim) run(max int, check func(r Result)) Result {
	s.t.Helper()
	for i := 0; i < max; i++ {
		r := s.compute()
		s.memory = r.Memory
		if r.Changes() == 0 && s.settled() && (r.Wake.IsZero() || s.timersOK) {
			return r
		}
		s.apply(r, nil)
		if check != nil {
			check(r)
		}
		s.tick()
	}
	s.t.Fatalf("not converged after %d passes:\n%s", max, s.dump())
	return Result{}
}

// settled: no pod is on its way (pending, not yet ready, terminating).
func (s *sim) settled() bool {
	for _, p := range s.pods {
		if !s.reachable(p.Machine) {
			continue
		}
		if p.Terminating || p.Phase == corev1.PodPending || (p.Phase == corev1.PodRunning && (!p.Ready || p.runFor > 0)) {
			return false
		}
	}
	return true
}

func (s *sim) dump() string {
	var b []byte
	for _, k := range slices.Sorted(maps.Keys(s.pods)) {
		p := s.pods[k]
		b = fmt.Appendf(b, "%s %s hash=%s %s ready=%v term=%v\n", k, p.Machine, p.TemplateHash, p.Phase, p.Ready, p.Terminating)
	}
	return string(b)
}

// ownedBy lists the simulated pods of an owner.
func (s *sim) ownedBy(kind, name string) []*simPod {
	var out []*simPod
	for _, k := range slices.Sorted(maps.Keys(s.pods)) {
		p := s.pods[k]
		if p.Labels[LabelOwnerKind] == kind && p.Labels[LabelOwnerName] == name {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *simPod) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// notReady counts an owner's pods that are not ready.
func (s *sim) notReady(kind, name string) int {
	n := 0
	for _, p := range s.ownedBy(kind, name) {
		if !p.Ready {
			n++
		}
	}
	return n
}

func workloadOf(t tb, r Result, kind, name string) Workload {
	t.Helper()
	for _, w := range r.Workloads {
		if w.Owner.Kind == kind && w.Owner.Name == name {
			return w
		}
	}
	t.Fatalf("no workload %s %s in result", kind, name)
	return Workload{}
}

func condition(w Workload, typ string) Condition {
	for _, c := range w.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return Condition{}
}
