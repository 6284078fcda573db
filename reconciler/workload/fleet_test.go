package workload

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"pgregory.net/rapid"

	"berth.dev/berth/render"
)

func TestOptionsValidate(t *testing.T) {
	if _, err := Compute(Input{}, Options{}); !errors.Is(err, ErrNoTemplateHash) {
		t.Fatalf("err %v", err)
	}
}

func TestSuffix(t *testing.T) {
	seen := map[string]bool{}
	for i := range 1000 {
		s := suffix(fmt.Sprint("web/abc/", i))
		if len(s) != 5 {
			t.Fatalf("suffix %q", s)
		}
		for _, c := range s {
			if !containsRune(suffixAlphabet, c) {
				t.Fatalf("suffix %q has %q", s, c)
			}
		}
		seen[s] = true
	}
	if len(seen) < 995 {
		t.Fatalf("%d distinct suffixes of 1000", len(seen))
	}
	if suffix("x") != suffix("x") {
		t.Fatal("not deterministic")
	}
}

func containsRune(s string, r rune) bool {
	for _, c := range s {
		if c == r {
			return true
		}
	}
	return false
}

func fleetObjects(image string, replicas int32) []*render.Object {
	return []*render.Object{
		deploymentObj("web", replicas, image, strategy(intstr.FromInt32(1), intstr.FromInt32(1))),
		statefulSetObj("db", replicas, image),
		daemonSetObj("agent", image, intstr.FromInt32(0), intstr.FromInt32(1)),
		jobObj("migrate", jobSpec(replicas, 2)),
		podObj("debug", image, ""),
	}
}

// TestFleetSurvivesControllerKills rolls a whole fleet from v1 to v2
// while the controller is killed at random: its memory lost or replaced
// by a stale copy, its output applied only in part. At every step no pod
// is duplicated (creates never hit an existing pod; the sim fails the
// test if one does), and at the end every workload has exactly its pods,
// on the new revision, and a further pass has nothing to do.
func TestFleetSurvivesControllerKills(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		R := rapid.Int32Range(1, 4).Draw(rt, "replicas")
		machines := rapid.IntRange(1, 4).Draw(rt, "machines")
		s := newSim(rt, machines, fleetObjects("v1", R)...)
		s.terminateSteps = rapid.IntRange(0, 2).Draw(rt, "terminateSteps")
		s.run(100, nil)
		s.objects = fleetObjects("v2", R)
		for step := 0; ; step++ {
			if step > 300 {
				rt.Fatalf("not converged:\n%s", s.dump())
			}
			r := s.chaosPass(rt, 6)
			if r.Changes() == 0 && s.settled() && r.Wake.IsZero() {
				break
			}
			s.chaosApply(rt, r, 2)
			if n := len(s.ownedBy("Deployment", "web")); int32(n) > R+1 {
				rt.Fatalf("%d web pods > %d + surge 1:\n%s", n, R, s.dump())
			}
			s.tick()
		}
		v2 := fnvHash(ptr(template("v2")))
		check := func(kind, name string, want int) {
			pods := s.ownedBy(kind, name)
			if len(pods) != want {
				rt.Fatalf("%s %s: %d pods, want %d:\n%s", kind, name, len(pods), want, s.dump())
			}
			for _, p := range pods {
				if kind != "Job" && p.TemplateHash != v2 {
					rt.Fatalf("%s %s: %s on an old revision:\n%s", kind, name, p.Name, s.dump())
				}
			}
		}
		check("Deployment", "web", int(R))
		check("StatefulSet", "db", int(R))
		check("DaemonSet", "agent", machines)
		check("Job", "migrate", int(R))
		for _, p := range s.ownedBy("Job", "migrate") {
			if p.Phase != corev1.PodSucceeded {
				rt.Fatalf("job pod %s %s", p.Name, p.Phase)
			}
		}
		if p := s.pods["default/debug"]; p == nil || p.TemplateHash == "" {
			rt.Fatalf("bare pod missing:\n%s", s.dump())
		}
		// Idempotent and deterministic at the end, with or without memory.
		r := s.compute()
		s.memory = Memory{}
		r2 := s.compute()
		if r.Changes() != 0 || r2.Changes() != 0 || !reflect.DeepEqual(r.Workloads[0].Pods, r2.Workloads[0].Pods) {
			rt.Fatalf("converged pass has changes: %d, %d without memory", r.Changes(), r2.Changes())
		}
	})
}

// BenchmarkPass1000Deployments times one pass over 1,000 Deployments of
// 3 replicas each, converged (the steady state of `berth serve`) and at
// the start of a rollout of every one of them.
func BenchmarkPass1000Deployments(b *testing.B) {
	const n = 1000
	var objs, next []*render.Object
	var pods []Pod
	machines := []Machine{{Name: "m0", Reachable: true}, {Name: "m1", Reachable: true}, {Name: "m2", Reachable: true}}
	for i := range n {
		name := fmt.Sprintf("app-%04d", i)
		objs = append(objs, deploymentObj(name, 3, "v1"))
		next = append(next, deploymentObj(name, 3, "v2"))
	}
	// Converge once to get the observed pods.
	r, err := Compute(Input{Objects: objs, Machines: machines, Now: t0}, testOpts)
	if err != nil {
		b.Fatal(err)
	}
	for i, w := range r.Workloads {
		for j, p := range w.Pods {
			pods = append(pods, Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Template.Labels, Machine: machines[(i+j)%3].Name,
				TemplateHash: p.Hash, Phase: corev1.PodRunning, Ready: true, ReadySince: t0, StartedAt: t0, Created: t0})
		}
	}
	in := Input{Objects: objs, Machines: machines, Pods: pods, Memory: r.Memory, Now: t0.Add(time.Minute)}
	b.Run("converged", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, _ := Compute(in, testOpts)
			if r.Changes() != 0 {
				b.Fatal("not converged")
			}
		}
	})
	// The same with the template hash cached, to tell the controllers'
	// own cost from the hash function's (the real one is resolve's).
	cache := map[*corev1.PodTemplateSpec]string{}
	cached := Options{TemplateHash: func(t *corev1.PodTemplateSpec) string {
		h, ok := cache[t]
		if !ok {
			h = fnvHash(t)
			cache[t] = h
		}
		return h
	}}
	b.Run("converged-hash-cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r, _ := Compute(in, cached); r.Changes() != 0 {
				b.Fatal("not converged")
			}
		}
	})
	in.Objects = next
	b.Run("rollout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, _ := Compute(in, testOpts)
			if r.Changes() == 0 {
				b.Fatal("no rollout")
			}
		}
	})
}

var _ = appsv1.Deployment{}

func TestRescheduleAfterUnreachable(t *testing.T) {
	s := newSim(t, 3, deploymentObj("web", 3, "v1"), statefulSetObj("db", 3, "v1"))
	s.run(50, nil)
	s.opts.RescheduleAfter = 5 * time.Minute
	s.machines[0].Reachable = false
	s.machines[0].UnreachableSince = s.now
	r := s.compute()
	if r.Changes() != 0 {
		t.Fatalf("changes %d before the grace period", r.Changes())
	}
	if want := s.now.Add(5 * time.Minute); !r.Wake.Equal(want) {
		t.Fatalf("wake %v, want %v", r.Wake, want)
	}
	s.now = s.now.Add(5 * time.Minute)
	r = s.compute()
	w := workloadOf(t, r, "Deployment", "web")
	if len(wantedNames(w, Create)) != 1 || len(w.Stop) != 1 || w.Stop[0].Machine != "m0" || !strings.Contains(w.Stop[0].Reason, "unreachable for more than 5m0s") {
		t.Fatalf("pods %+v stop %+v", w.Pods, w.Stop)
	}
	if w := workloadOf(t, r, "StatefulSet", "db"); w.Changes() != 0 {
		t.Fatalf("a StatefulSet pod was rescheduled: %q", w.Reason)
	}
	if err := (Options{TemplateHash: fnvHash, RescheduleAfter: -1}).Validate(); err == nil {
		t.Fatal("negative RescheduleAfter accepted")
	}
}

// TestCopiesOfOnePod: a pod observed on two machines is one pod to the
// controllers; the better copy is the one wanted (the caller stops the
// other).
func TestCopiesOfOnePod(t *testing.T) {
	s := converged(t, 2)
	in := s.input()
	orig := in.Pods[0]
	dup := orig
	dup.Machine = "m2"
	if orig.Machine == "m2" {
		dup.Machine = "m1"
	}
	dup.Ready = false
	in.Pods = append(in.Pods, dup)
	r, err := Compute(in, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	w := workloadOf(t, r, "Deployment", "web")
	if r.Changes() != 0 || len(w.Pods) != 2 {
		t.Fatalf("changes %d, pods %+v", r.Changes(), w.Pods)
	}
	for _, p := range w.Pods {
		if p.Name == orig.Name && p.Machine != orig.Machine {
			t.Fatalf("kept the copy on %s, want the ready one on %s", p.Machine, orig.Machine)
		}
	}
}
