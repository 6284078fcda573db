package schedule

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"pgregory.net/rapid"
)

// A generated fleet: machines in a few zones with a few taints, pods
// already running (which may break rules among themselves, as observed
// state can), and pods to place with the rules under test.
type world struct {
	machines []Machine
	bound    []BoundPod
	pending  []Pod
}

var (
	apps       = []string{"web", "db", "cache"}
	zones      = []string{"a", "b", "c", ""} // "" leaves the label off
	namespaces = []string{"default", "other"}
	taintPool  = []corev1.Taint{
		{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule},
		{Key: "spot", Value: "true", Effect: corev1.TaintEffectPreferNoSchedule},
		{Key: "drain", Effect: corev1.TaintEffectNoExecute},
	}
	tolerationPool = []corev1.Toleration{
		{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule},
		{Key: "drain", Operator: corev1.TolerationOpExists},
		{Operator: corev1.TolerationOpExists},
		{Key: "spot", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectPreferNoSchedule},
	}
	topologyKeys = []string{corev1.LabelHostname, corev1.LabelTopologyZone}
)

func genMachine(t *rapid.T, name string) Machine {
	m := Machine{
		Name:          name,
		Labels:        map[string]string{},
		Ready:         rapid.Float64Range(0, 1).Draw(t, "ready") < 0.85,
		Unschedulable: rapid.Float64Range(0, 1).Draw(t, "cordon") < 0.15,
		Allocatable: corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewMilliQuantity(int64(rapid.IntRange(1, 16).Draw(t, "cpu"))*500, resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(int64(rapid.IntRange(1, 16).Draw(t, "mem"))<<30, resource.BinarySI),
			corev1.ResourcePods:   *resource.NewQuantity(int64(rapid.IntRange(1, 8).Draw(t, "pods")), resource.DecimalSI),
		},
	}
	if z := rapid.SampledFrom(zones).Draw(t, "zone"); z != "" {
		m.Labels[corev1.LabelTopologyZone] = z
	}
	if rapid.Bool().Draw(t, "ssd") {
		m.Labels["disk"] = "ssd"
	}
	for _, taint := range taintPool {
		if rapid.Float64Range(0, 1).Draw(t, "tainted") < 0.2 {
			m.Taints = append(m.Taints, taint)
		}
	}
	return m
}

func genPod(t *rapid.T, name string, machineNames []string) Pod {
	app := rapid.SampledFrom(apps).Draw(t, "app")
	p := Pod{
		Namespace: rapid.SampledFrom(namespaces).Draw(t, "namespace"),
		Name:      name,
		Labels:    map[string]string{"app": app},
		Spec:      &corev1.PodSpec{},
	}
	c := corev1.Container{Name: "app", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{}}}
	if cpu := rapid.IntRange(0, 8).Draw(t, "cpuReq"); cpu > 0 {
		c.Resources.Requests[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(cpu)*250, resource.DecimalSI)
	}
	if mem := rapid.IntRange(0, 8).Draw(t, "memReq"); mem > 0 {
		c.Resources.Requests[corev1.ResourceMemory] = *resource.NewQuantity(int64(mem)<<29, resource.BinarySI)
	}
	if port := rapid.SampledFrom([]int32{0, 0, 80, 443}).Draw(t, "hostPort"); port != 0 {
		c.Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: port}}
	}
	p.Spec.Containers = []corev1.Container{c}
	for _, tol := range tolerationPool {
		if rapid.Float64Range(0, 1).Draw(t, "tolerates") < 0.25 {
			p.Spec.Tolerations = append(p.Spec.Tolerations, tol)
		}
	}
	if rapid.Float64Range(0, 1).Draw(t, "selects") < 0.2 {
		p.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	}
	sameApp := selectLabels("app", app)
	if rapid.Float64Range(0, 1).Draw(t, "anti") < 0.3 {
		requiredAnti(term(rapid.SampledFrom(topologyKeys).Draw(t, "antiKey"), sameApp))(&p)
	}
	if rapid.Float64Range(0, 1).Draw(t, "spread") < 0.3 {
		spreading(spreadBy(rapid.SampledFrom(topologyKeys).Draw(t, "spreadKey"), int32(rapid.IntRange(1, 2).Draw(t, "maxSkew")), corev1.DoNotSchedule, sameApp))(&p)
	}
	if rapid.Float64Range(0, 1).Draw(t, "soft") < 0.3 {
		other := selectLabels("app", rapid.SampledFrom(apps).Draw(t, "softApp"))
		preferredAffinity(int32(rapid.IntRange(1, 100).Draw(t, "weight")), term(corev1.LabelTopologyZone, other))(&p)
		preferredAnti(int32(rapid.IntRange(1, 100).Draw(t, "weight")), term(corev1.LabelHostname, sameApp))(&p)
	}
	if rapid.Bool().Draw(t, "owned") {
		p.Owner = "Deployment/" + app
	}
	if rapid.Float64Range(0, 1).Draw(t, "nodeName") < 0.1 {
		p.Spec.NodeName = rapid.SampledFrom(append(machineNames, "gone")).Draw(t, "machine")
	}
	return p
}

func genWorld(t *rapid.T) world {
	var w world
	n := rapid.IntRange(1, 8).Draw(t, "machines")
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("m%d", i)
		w.machines = append(w.machines, genMachine(t, names[i]))
	}
	for i := range rapid.IntRange(0, 10).Draw(t, "bound") {
		p := genPod(t, fmt.Sprintf("b%d", i), names)
		p.Spec.NodeName = ""
		w.bound = append(w.bound, BoundPod{Pod: p, Machine: rapid.SampledFrom(names).Draw(t, "on")})
	}
	for i := range rapid.IntRange(1, 15).Draw(t, "pending") {
		w.pending = append(w.pending, genPod(t, fmt.Sprintf("p%d", i), names))
	}
	return w
}

func TestPropertyDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t)
		first := Schedule(w.machines, w.bound, w.pending)
		if again := Schedule(w.machines, w.bound, w.pending); !reflect.DeepEqual(first, again) {
			t.Fatalf("two runs differ:\n%+v\n%+v", first, again)
		}
		machines := rapid.Permutation(w.machines).Draw(t, "machineOrder")
		boundPods := rapid.Permutation(w.bound).Draw(t, "boundOrder")
		if shuffled := Schedule(machines, boundPods, w.pending); !reflect.DeepEqual(first, shuffled) {
			t.Fatalf("machine or bound pod order changed the result:\n%+v\n%+v", first, shuffled)
		}
	})
}

func TestPropertyInputsUntouched(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t)
		before := fmt.Sprintf("%#v", w)
		Schedule(w.machines, w.bound, w.pending)
		if after := fmt.Sprintf("%#v", w); after != before {
			t.Fatal("Schedule changed its inputs")
		}
	})
}

// placed is a pod on a machine, as the invariants below see it.
type placed struct {
	pod       *Pod
	machine   *Machine
	new       bool // placed by this call
	scheduled bool // placed by the scheduler, not by spec.nodeName
}

func TestPropertyInvariants(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t)
		res := Schedule(w.machines, w.bound, w.pending)
		byName := map[string]*Machine{}
		for i := range w.machines {
			byName[w.machines[i].Name] = &w.machines[i]
		}
		var present []placed
		for i := range w.bound {
			present = append(present, placed{pod: &w.bound[i].Pod, machine: byName[w.bound[i].Machine]})
		}
		for i := range w.pending {
			p := &w.pending[i]
			m, ok := res.Placements[p.Key()]
			fe, un := res.Unschedulable[p.Key()]
			if ok == un {
				t.Fatalf("%s: placed %v, unschedulable %v", p.Key(), ok, un)
			}
			if un {
				if p.Spec.NodeName == "" {
					checkFitError(t, fe, len(w.machines))
				}
				continue
			}
			pl := placed{pod: p, machine: byName[m], new: true, scheduled: p.Spec.NodeName == ""}
			if !pl.scheduled && m != p.Spec.NodeName {
				t.Fatalf("%s names %s in spec.nodeName but went to %s", p.Key(), p.Spec.NodeName, m)
			}
			if !pl.machine.Ready {
				t.Fatalf("%s placed on %s, which is not ready", p.Key(), m)
			}
			checkTaints(t, pl)
			if pl.scheduled {
				checkSpread(t, pl, present, w.machines)
				checkAntiAffinity(t, pl, present)
			}
			present = append(present, pl)
		}
		checkCapacity(t, present)
		checkHostPorts(t, present)
	})
}

func checkFitError(t *rapid.T, fe *FitError, machines int) {
	if want := fmt.Sprintf("0/%d machines are available", machines); !strings.HasPrefix(fe.Message, want) {
		t.Fatalf("message %q does not start with %q", fe.Message, want)
	}
	if len(fe.PerMachine) != machines {
		t.Fatalf("reasons for %d of %d machines: %v", len(fe.PerMachine), machines, fe.PerMachine)
	}
}

// tolerated is the generator's toleration semantics, written out apart
// from the scheduler's.
func tolerated(p *Pod, taint corev1.Taint) bool {
	for _, tol := range p.Spec.Tolerations {
		keyOK := tol.Key == "" || tol.Key == taint.Key
		valueOK := tol.Operator == corev1.TolerationOpExists || tol.Value == taint.Value
		effectOK := tol.Effect == "" || tol.Effect == taint.Effect
		if keyOK && valueOK && effectOK {
			return true
		}
	}
	return false
}

func checkTaints(t *rapid.T, pl placed) {
	for _, taint := range pl.machine.Taints {
		repels := taint.Effect == corev1.TaintEffectNoExecute || (pl.scheduled && taint.Effect == corev1.TaintEffectNoSchedule)
		if repels && !tolerated(pl.pod, taint) {
			t.Fatalf("%s placed on %s despite untolerated taint %s", pl.pod.Key(), pl.machine.Name, taint.ToString())
		}
	}
	if pl.scheduled && pl.machine.Unschedulable && !tolerated(pl.pod, corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}) {
		t.Fatalf("%s scheduled onto cordoned %s", pl.pod.Key(), pl.machine.Name)
	}
}

// topologyValue is machine m's value for key, with the well-known
// hostname label defaulted as the scheduler does.
func topologyValue(m *Machine, key string) (string, bool) {
	if v, ok := m.Labels[key]; ok {
		return v, true
	}
	if key == corev1.LabelHostname {
		return m.Name, true
	}
	return "", false
}

func selects(sel map[string]string, p *Pod) bool {
	for k, v := range sel {
		if p.Labels[k] != v {
			return false
		}
	}
	return true
}

// checkAntiAffinity: no pod present when pl was scheduled shares a domain
// with it where either one's required anti-affinity selects the other.
func checkAntiAffinity(t *rapid.T, pl placed, present []placed) {
	violates := func(owner, other placed) bool {
		a := owner.pod.Spec.Affinity
		if a == nil || a.PodAntiAffinity == nil || owner.pod.Namespace != other.pod.Namespace {
			return false
		}
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			v1, ok1 := topologyValue(owner.machine, term.TopologyKey)
			v2, ok2 := topologyValue(other.machine, term.TopologyKey)
			if ok1 && ok2 && v1 == v2 && selects(term.LabelSelector.MatchLabels, other.pod) {
				return true
			}
		}
		return false
	}
	for _, q := range present {
		if violates(pl, q) || violates(q, pl) {
			t.Fatalf("%s on %s and %s on %s break required anti-affinity", pl.pod.Key(), pl.machine.Name, q.pod.Key(), q.machine.Name)
		}
	}
}

// checkSpread: when pl was scheduled, its domain held at most maxSkew - 1
// more matching pods than the emptiest eligible domain.
func checkSpread(t *rapid.T, pl placed, present []placed, machines []Machine) {
	for _, c := range pl.pod.Spec.TopologySpreadConstraints {
		if c.WhenUnsatisfiable != corev1.DoNotSchedule {
			continue
		}
		counts := map[string]int{}
		for i := range machines {
			m := &machines[i]
			v, ok := topologyValue(m, c.TopologyKey)
			if !ok || !selects(pl.pod.Spec.NodeSelector, &Pod{Labels: m.Labels}) {
				continue
			}
			counts[v] += 0
			for _, q := range present {
				if q.machine == m && q.pod.Namespace == pl.pod.Namespace && selects(c.LabelSelector.MatchLabels, q.pod) {
					counts[v]++
				}
			}
		}
		lowest := -1
		for _, n := range counts {
			if lowest < 0 || n < lowest {
				lowest = n
			}
		}
		v, _ := topologyValue(pl.machine, c.TopologyKey)
		if skew := counts[v] + 1 - lowest; skew > int(c.MaxSkew) {
			t.Fatalf("%s on %s makes skew %d over %s (maxSkew %d, counts %v)", pl.pod.Key(), pl.machine.Name, skew, c.TopologyKey, c.MaxSkew, counts)
		}
	}
}

// checkCapacity: on every machine that got a new pod, the requests of all
// its pods fit what it offers, for each resource a new pod asked for.
func checkCapacity(t *rapid.T, present []placed) {
	type usage struct {
		pods, newPods int
		total         corev1.ResourceList
		asked         map[corev1.ResourceName]bool
	}
	per := map[*Machine]*usage{}
	for _, pl := range present {
		u := per[pl.machine]
		if u == nil {
			u = &usage{total: corev1.ResourceList{}, asked: map[corev1.ResourceName]bool{}}
			per[pl.machine] = u
		}
		u.pods++
		for name, q := range pl.pod.Spec.Containers[0].Resources.Requests {
			sum := u.total[name]
			sum.Add(q)
			u.total[name] = sum
			if pl.new && !q.IsZero() {
				u.asked[name] = true
			}
		}
		if pl.new {
			u.newPods++
		}
	}
	for m, u := range per {
		if u.newPods == 0 {
			continue
		}
		if allowed := m.Allocatable[corev1.ResourcePods]; int64(u.pods) > allowed.Value() {
			t.Fatalf("%s holds %d pods, allows %d", m.Name, u.pods, allowed.Value())
		}
		for name := range u.asked {
			if got, offered := u.total[name], m.Allocatable[name]; got.Cmp(offered) > 0 {
				t.Fatalf("%s: %s requested %s, allocatable %s", m.Name, name, got.String(), offered.String())
			}
		}
	}
}

// checkHostPorts: no new pod shares a host port with another pod on its
// machine.
func checkHostPorts(t *rapid.T, present []placed) {
	for i, a := range present {
		if !a.new {
			continue
		}
		for j, b := range present {
			if i == j || a.machine != b.machine {
				continue
			}
			for _, pa := range a.pod.Spec.Containers[0].Ports {
				for _, pb := range b.pod.Spec.Containers[0].Ports {
					if pa.HostPort != 0 && pa.HostPort == pb.HostPort {
						t.Fatalf("%s and %s both bind host port %d on %s", a.pod.Key(), b.pod.Key(), pa.HostPort, a.machine.Name)
					}
				}
			}
		}
	}
}
