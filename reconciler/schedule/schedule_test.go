package schedule

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

func TestUnschedulableMessage(t *testing.T) {
	machines := []Machine{
		machine("m1", allocatable(corev1.ResourceMemory, "1Gi")),
		machine("m2", allocatable(corev1.ResourceMemory, "1Gi")),
		machine("gpu", tainted("dedicated", "gpu", corev1.TaintEffectNoSchedule)),
	}
	p := pod("big", requesting("memory", "2Gi"))
	res := Schedule(machines, nil, []Pod{p})
	if len(res.Placements) != 0 {
		t.Fatalf("placements = %v, want none", res.Placements)
	}
	fe := res.Unschedulable[p.Key()]
	if fe == nil {
		t.Fatal("pod neither placed nor unschedulable")
	}
	if want := "0/3 machines are available: 2 insufficient memory, 1 untolerated taint {dedicated: gpu}."; fe.Message != want {
		t.Errorf("message = %q\nwant      %q", fe.Message, want)
	}
	if fe.Error() != fe.Message || fe.Pod != p.Key() {
		t.Errorf("Error() = %q, Pod = %v", fe.Error(), fe.Pod)
	}
	wantPer := map[string][]string{
		"m1":  {"insufficient memory"},
		"m2":  {"insufficient memory"},
		"gpu": {"untolerated taint {dedicated: gpu}"},
	}
	if diff := cmp.Diff(wantPer, fe.PerMachine); diff != "" {
		t.Errorf("per machine (-want +got):\n%s", diff)
	}
}

func TestMessageOrdersByCountThenReason(t *testing.T) {
	per := map[string][]string{
		"a": {"insufficient cpu", "insufficient memory"},
		"b": {"insufficient memory"},
		"c": {"machine not ready"},
		"d": {"host port TCP 0.0.0.0:80 in use"},
	}
	got := newFitError(PodKey{"ns", "p"}, 4, per).Message
	want := "0/4 machines are available: 2 insufficient memory, 1 host port TCP 0.0.0.0:80 in use, 1 insufficient cpu, 1 machine not ready."
	if got != want {
		t.Errorf("message = %q\nwant      %q", got, want)
	}
	if got := Schedule(nil, nil, []Pod{pod("p")}).Unschedulable[PodKey{"default", "p"}].Message; got != "0/0 machines are available: the fleet has no machines." {
		t.Errorf("message without machines = %q", got)
	}
}

func TestFiltersStopAtTheFirstObjection(t *testing.T) {
	// A cordoned, tainted machine short of memory reports the cordon only,
	// as kube-scheduler reports one plugin per node.
	m := machine("m", cordoned, tainted("k", "v", corev1.TaintEffectNoSchedule), allocatable(corev1.ResourceMemory, "1"))
	fe := Schedule([]Machine{m}, nil, []Pod{pod("p", requesting("memory", "1Gi"))}).Unschedulable[PodKey{"default", "p"}]
	if fe == nil || fe.Message != "0/1 machines are available: 1 machine unschedulable." {
		t.Errorf("fit error = %+v", fe)
	}
}

func TestNodeName(t *testing.T) {
	machines := []Machine{
		machine("small", allocatable(corev1.ResourceCPU, "1")),
		machine("cordoned", cordoned, tainted("dedicated", "db", corev1.TaintEffectNoSchedule)),
		machine("draining", tainted("drain", "", corev1.TaintEffectNoExecute)),
		machine("down", notReady),
	}
	tests := []struct {
		name        string
		pod         Pod
		wantMachine string
		wantMessage string
	}{
		{"bound without scheduling, cordon and NoSchedule taints aside", pod("p", nodeName("cordoned")), "cordoned", ""},
		{"resources still have to fit", pod("p", nodeName("small"), requesting("cpu", "2")), "", "machine small named in spec.nodeName cannot run the pod: insufficient cpu."},
		{"NoExecute taints still turn it away", pod("p", nodeName("draining")), "", "machine draining named in spec.nodeName cannot run the pod: untolerated taint {drain: }."},
		{"node selector still applies", pod("p", nodeName("small"), nodeSelector("disk", "ssd")), "", "machine small named in spec.nodeName cannot run the pod: didn't match node selector/affinity."},
		{"not ready", pod("p", nodeName("down")), "", "machine down named in spec.nodeName cannot run the pod: machine not ready."},
		{"unknown machine", pod("p", nodeName("gone")), "", "machine gone named in spec.nodeName does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Schedule(machines, nil, []Pod{tt.pod})
			if got := res.Placements[tt.pod.Key()]; got != tt.wantMachine {
				t.Errorf("placed on %q, want %q", got, tt.wantMachine)
			}
			got := ""
			if fe := res.Unschedulable[tt.pod.Key()]; fe != nil {
				got = fe.Message
			}
			if got != tt.wantMessage {
				t.Errorf("message = %q\nwant      %q", got, tt.wantMessage)
			}
		})
	}
}

func TestPlacementsCountForLaterPods(t *testing.T) {
	web := podLabels("app", "web")
	tests := []struct {
		name     string
		machines []Machine
		pending  []Pod
		// want maps pod name to machine, "" for unschedulable; "$x" stands
		// for some machine, a different one for each symbol, where the
		// choice among equals is the tie-break's.
		want map[string]string
	}{
		{
			name:     "resources",
			machines: []Machine{machine("m1"), machine("m2", allocatable(corev1.ResourceCPU, "3"))},
			pending:  []Pod{pod("p1", requesting("cpu", "3")), pod("p2", requesting("cpu", "3")), pod("p3", requesting("cpu", "3"))},
			want:     map[string]string{"p1": "m1", "p2": "m2", "p3": ""},
		},
		{
			name:     "host ports",
			machines: []Machine{machine("m1"), machine("m2")},
			pending:  []Pod{pod("p1", hostPorts(80)), pod("p2", hostPorts(80)), pod("p3", hostPorts(80))},
			want:     map[string]string{"p1": "$a", "p2": "$b", "p3": ""},
		},
		{
			name:     "required anti-affinity",
			machines: []Machine{machine("m1"), machine("m2")},
			pending: []Pod{
				pod("w1", web, requiredAnti(term(corev1.LabelHostname, selectLabels("app", "web")))),
				pod("w2", web, requiredAnti(term(corev1.LabelHostname, selectLabels("app", "web")))),
				pod("w3", web, requiredAnti(term(corev1.LabelHostname, selectLabels("app", "web")))),
			},
			want: map[string]string{"w1": "$a", "w2": "$b", "w3": ""},
		},
		{
			name:     "topology spread",
			machines: []Machine{machine("a1", zone("a")), machine("a2", zone("a")), machine("b1", zone("b"))},
			pending: func() []Pod {
				var ps []Pod
				for i := range 4 {
					ps = append(ps, pod(fmt.Sprintf("w%d", i), web, spreading(spreadBy(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule, selectLabels("app", "web")))))
				}
				return ps
			}(),
			want: map[string]string{"w0": "a2", "w1": "b1", "w2": "a1", "w3": "b1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Schedule(tt.machines, nil, tt.pending)
			got := map[string]string{}
			for _, p := range tt.pending {
				got[p.Name] = res.Placements[p.Key()]
				if _, un := res.Unschedulable[p.Key()]; un == (got[p.Name] != "") {
					t.Errorf("%s: placed %q and unschedulable %v", p.Name, got[p.Name], un)
				}
			}
			if diff := cmp.Diff(bindSymbols(tt.want, got), got); diff != "" {
				t.Errorf("placements (-want +got):\n%s", diff)
			}
		})
	}
}

// bindSymbols replaces each "$x" in want by the machine got has for that
// pod, as long as each symbol stands for one machine and each machine for
// one symbol; anything inconsistent is left for the diff to show.
func bindSymbols(want, got map[string]string) map[string]string {
	out := map[string]string{}
	sym, used := map[string]string{}, map[string]string{}
	for pod, w := range want {
		out[pod] = w
		if len(w) == 0 || w[0] != '$' {
			continue
		}
		g := got[pod]
		if m, ok := sym[w]; ok {
			out[pod] = m
			continue
		}
		if s, taken := used[g]; g == "" || (taken && s != w) {
			continue
		}
		sym[w], used[g] = g, w
		out[pod] = g
	}
	return out
}

func TestReplicasSpreadOverIdenticalMachines(t *testing.T) {
	var machines []Machine
	for i := range 5 {
		machines = append(machines, machine(fmt.Sprintf("m%d", i)))
	}
	var pending []Pod
	for i := range 10 {
		pending = append(pending, pod(fmt.Sprintf("web-%d", i), owned("Deployment/web")))
	}
	res := Schedule(machines, nil, pending)
	perMachine := map[string]int{}
	for _, m := range res.Placements {
		perMachine[m]++
	}
	// Pods without requests tie on resources; the system default spread
	// and the hash tie-break still give every machine two.
	for _, m := range machines {
		if perMachine[m.Name] != 2 {
			t.Errorf("placements per machine = %v, want 2 each", perMachine)
			break
		}
	}
}

func TestTieBreakIsByHashNotName(t *testing.T) {
	// Ten pods with no owner and no requests: every machine ties for each
	// of them. A name tie-break would put them all on "a".
	machines := []Machine{machine("a"), machine("b"), machine("c")}
	var pending []Pod
	for i := range 10 {
		pending = append(pending, pod(fmt.Sprintf("p%d", i)))
	}
	res := Schedule(machines, nil, pending)
	used := map[string]bool{}
	for _, m := range res.Placements {
		used[m] = true
	}
	if len(used) < 2 {
		t.Errorf("ten tied pods all went to %v", res.Placements)
	}
	for _, p := range pending {
		want := ""
		var best uint64
		for _, m := range machines {
			if h := tieHash(p.Key(), m.Name); want == "" || h < best {
				want, best = m.Name, h
			}
		}
		// Resource scores differ once pods land (default requests), so
		// only the first pod is a pure tie.
		if got := res.Placements[p.Key()]; p.Name == "p0" && got != want {
			t.Errorf("p0 on %q, want the smallest hash %q", got, want)
		}
	}
}

func TestNotReadyAndUnknownMachines(t *testing.T) {
	res := Schedule(
		[]Machine{machine("up"), machine("down", notReady)},
		[]BoundPod{
			bound("w0", "down", podLabels("app", "web")),
			bound("ghost", "gone", podLabels("app", "web")), // machine unknown: ignored
		},
		[]Pod{
			pod("w1", podLabels("app", "web"), requiredAnti(term(corev1.LabelHostname, selectLabels("app", "web")))),
			pod("w2", podLabels("app", "web"), requiredAnti(term(corev1.LabelHostname, selectLabels("app", "web")))),
		})
	if got := res.Placements[PodKey{"default", "w1"}]; got != "up" {
		t.Errorf("w1 on %q, want up", got)
	}
	fe := res.Unschedulable[PodKey{"default", "w2"}]
	if fe == nil || fe.Message != "0/2 machines are available: 1 didn't match pod anti-affinity rules, 1 machine not ready." {
		t.Errorf("w2: %+v", fe)
	}
}

func TestDuplicateAndInvalidPods(t *testing.T) {
	res := Schedule([]Machine{machine("m")}, []BoundPod{bound("running", "m")}, []Pod{
		pod("running"),
		pod("p"), pod("p", nodeName("elsewhere")),
		pod("bad", spreading(corev1.TopologySpreadConstraint{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: corev1.DoNotSchedule,
			LabelSelector: selectLabels("app", "not a valid value")})),
	})
	if diff := cmp.Diff(map[PodKey]string{{"default", "p"}: "m"}, res.Placements); diff != "" {
		t.Errorf("placements (-want +got):\n%s", diff)
	}
	if len(res.Unschedulable) != 2 {
		t.Errorf("unschedulable: %v, want running and bad", res.Unschedulable)
	}
	if fe := res.Unschedulable[PodKey{"default", "running"}]; fe == nil || fe.Message != "pod default/running already runs on machine m" {
		t.Errorf("running: %+v", fe)
	}
	// The selector's own error follows, in apimachinery's words.
	const bad = "cannot schedule pod default/bad: topologySpreadConstraints[0]: labelSelector: "
	if fe := res.Unschedulable[PodKey{"default", "bad"}]; fe == nil || !strings.HasPrefix(fe.Message, bad) {
		t.Errorf("bad: %+v, want a message starting %q", fe, bad)
	}
}

func TestWellKnownLabels(t *testing.T) {
	c := run(t, []Machine{machine("m1"), machine("m2", labelled(corev1.LabelHostname, "custom", corev1.LabelOSStable, "freebsd"))}, nil, pod("p"))
	got := map[string][2]string{}
	for _, m := range c.s.machines {
		got[m.name] = [2]string{m.labels[corev1.LabelHostname], m.labels[corev1.LabelOSStable]}
	}
	want := map[string][2]string{"m1": {"m1", "linux"}, "m2": {"custom", "freebsd"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
}
