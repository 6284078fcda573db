package workload

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"pgregory.net/rapid"

	"berth.dev/berth/render"
)

func daemonSetObj(name, image string, surge, unav intstr.IntOrString, mut ...func(*appsv1.DaemonSet)) *render.Object {
	d := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Template: template(image),
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: &surge, MaxUnavailable: &unav},
			},
		},
	}
	for _, m := range mut {
		m(d)
	}
	return obj("DaemonSet", name, d)
}

// bySelector is the tests' stand-in for the scheduler's filters.
func bySelector(spec *corev1.PodSpec, m Machine) bool {
	for k, v := range spec.NodeSelector {
		if m.Labels[k] != v {
			return false
		}
	}
	return true
}

func TestDaemonSetOnePodPerEligibleMachine(t *testing.T) {
	s := newSim(t, 3, daemonSetObj("agent", "v1", intstr.FromInt32(0), intstr.FromInt32(1), func(d *appsv1.DaemonSet) {
		d.Spec.Template.Spec.NodeSelector = map[string]string{"role": "edge"}
	}))
	s.opts.Eligible = bySelector
	s.machines[0].Labels["role"] = "edge"
	s.machines[2].Labels["role"] = "edge"
	s.run(20, nil)
	pods := s.ownedBy("DaemonSet", "agent")
	if len(pods) != 2 || pods[0].Machine == "m1" || pods[1].Machine == "m1" {
		t.Fatalf("pods:\n%s", s.dump())
	}
	for _, p := range pods {
		if p.Name != "agent-"+suffix(p.Machine) {
			t.Errorf("pod %s on %s, want agent-%s", p.Name, p.Machine, suffix(p.Machine))
		}
	}
	// m0 loses the label: its pod goes; m1 gains it: it gets one.
	delete(s.machines[0].Labels, "role")
	s.machines[1].Labels["role"] = "edge"
	w := workloadOf(t, s.compute(), "DaemonSet", "agent")
	if w.Status.NumberMisscheduled != 1 || len(w.Stop) != 1 || w.Stop[0].Machine != "m0" || !strings.Contains(w.Stop[0].Reason, "not eligible") {
		t.Fatalf("stop %+v status %+v", w.Stop, w.Status)
	}
	c := wantedNames(w, Create)
	if len(c) != 1 || c[0] != "agent-"+suffix("m1") {
		t.Fatalf("create %v", c)
	}
	for _, p := range w.Pods {
		if p.Action == Create && (p.Machine != "m1" || p.Template.Spec.NodeName != "m1") {
			t.Fatalf("created pod not pinned to m1: %+v", p)
		}
	}
}

func TestDaemonSetUnreachableMachineGetsNoPod(t *testing.T) {
	s := newSim(t, 3, daemonSetObj("agent", "v1", intstr.FromInt32(0), intstr.FromInt32(1)))
	s.machines[1].Reachable = false
	w := workloadOf(t, s.compute(), "DaemonSet", "agent")
	if c := wantedNames(w, Create); len(c) != 2 || !strings.Contains(w.Reason, "machine m1 (unreachable)") && !strings.Contains(w.Reason, "start") {
		t.Fatalf("create %v reason %q", c, w.Reason)
	}
}

// TestDaemonSetRollingUpdateProperties checks, step by step, that a
// DaemonSet rollout keeps at least N-maxUnavailable machines with an
// available pod, never puts more than maxSurge machines in surge, and
// ends with one new pod per machine.
func TestDaemonSetRollingUpdateProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(1, 6).Draw(rt, "machines")
		surge := intstr.FromInt32(rapid.Int32Range(0, 2).Draw(rt, "surge"))
		unav := intstr.FromInt32(rapid.Int32Range(0, 2).Draw(rt, "unavailable"))
		if surge.IntVal == 0 && unav.IntVal == 0 {
			unav = intstr.FromInt32(1)
		}
		s := newSim(rt, n, daemonSetObj("agent", "v1", surge, unav))
		s.terminateSteps = rapid.IntRange(0, 2).Draw(rt, "terminateSteps")
		delays := rapid.SliceOfN(rapid.IntRange(1, 3), 8, 8).Draw(rt, "readyAfter")
		s.readyAfter = func(name string) int { return delays[int(suffixHash(name))%len(delays)] }
		s.run(50, nil)
		s.objects[0] = daemonSetObj("agent", "v2", surge, unav)
		v2 := fnvHash(ptr(template("v2")))
		for step := 0; ; step++ {
			if step > 200 {
				rt.Fatalf("not converged:\n%s", s.dump())
			}
			r := s.chaosPass(rt, 10)
			if r.Changes() == 0 && s.settled() {
				break
			}
			s.chaosApply(rt, r, 5)
			avail := map[string]bool{}
			perMachine := map[string]int{}
			surging := int32(0)
			for _, p := range s.ownedBy("DaemonSet", "agent") {
				perMachine[p.Machine]++
				if p.Ready && !p.Terminating {
					avail[p.Machine] = true
				}
			}
			for _, c := range perMachine {
				if c > 2 {
					rt.Fatalf("%d pods on one machine:\n%s", c, s.dump())
				}
				if c == 2 {
					surging++
				}
			}
			if int32(len(avail)) < int32(n)-unav.IntVal && surge.IntVal == 0 {
				rt.Fatalf("%d machines available < %d - %d:\n%s", len(avail), n, unav.IntVal, s.dump())
			}
			if surge.IntVal > 0 && len(avail) < n {
				rt.Fatalf("surge rollout left a machine without an available pod:\n%s", s.dump())
			}
			if surging > surge.IntVal && s.terminateSteps == 0 {
				rt.Fatalf("%d machines in surge > %d:\n%s", surging, surge.IntVal, s.dump())
			}
			s.tick()
		}
		pods := s.ownedBy("DaemonSet", "agent")
		if len(pods) != n {
			rt.Fatalf("%d pods on %d machines:\n%s", len(pods), n, s.dump())
		}
		var machines []string
		for _, p := range pods {
			if p.TemplateHash != v2 {
				rt.Fatalf("old pod left:\n%s", s.dump())
			}
			machines = append(machines, p.Machine)
		}
		slices.Sort(machines)
		if len(slices.Compact(machines)) != n {
			rt.Fatalf("two pods on a machine:\n%s", s.dump())
		}
	})
}
