package workload

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"pgregory.net/rapid"

	"berth.dev/berth/render"
)

func statefulSetObj(name string, replicas int32, image string, mut ...func(*appsv1.StatefulSet)) *render.Object {
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr(replicas),
			ServiceName:         name,
			Template:            template(image),
			PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{
				Type:          appsv1.RollingUpdateStatefulSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr(int32(0))},
			},
		},
	}
	for _, m := range mut {
		m(s)
	}
	return obj("StatefulSet", name, s)
}

func parallel(s *appsv1.StatefulSet) { s.Spec.PodManagementPolicy = appsv1.ParallelPodManagement }

func wantedNames(w Workload, a Action) []string {
	var out []string
	for _, p := range w.Pods {
		if p.Action == a {
			out = append(out, p.Name)
		}
	}
	return out
}

func stopNames(w Workload) []string {
	var out []string
	for _, s := range w.Stop {
		out = append(out, s.Name)
	}
	return out
}

func TestStatefulSetOrderedReadyCreatesOneAtATime(t *testing.T) {
	s := newSim(t, 3, statefulSetObj("db", 3, "v1"))
	s.readyAfter = func(string) int { return 2 }
	var started []string
	s.run(50, func(r Result) {
		w := workloadOf(t, r, "StatefulSet", "db")
		c := wantedNames(w, Create)
		if len(c) > 1 {
			t.Fatalf("created %v at once", c)
		}
		for _, n := range c {
			ord, _ := ordinalOf("db", n)
			for i := int32(0); i < ord; i++ {
				p := s.pods["default/db-"+itoa(i)]
				if p == nil || !p.Ready {
					t.Fatalf("%s created before db-%d was ready", n, i)
				}
			}
		}
		started = append(started, c...)
	})
	if !slices.Equal(started, []string{"db-0", "db-1", "db-2"}) {
		t.Fatalf("started %v", started)
	}
	p := s.pods["default/db-1"]
	if p.Labels[LabelStatefulSetPodName] != "db-1" || p.Labels[LabelPodIndex] != "1" || p.Labels[LabelControllerRevision] == "" {
		t.Errorf("labels %v", p.Labels)
	}
}

func TestStatefulSetTemplateHostname(t *testing.T) {
	s := newSim(t, 1, statefulSetObj("db", 1, "v1"))
	w := workloadOf(t, s.compute(), "StatefulSet", "db")
	if tp := w.Pods[0].Template; tp.Spec.Hostname != "db-0" || tp.Spec.Subdomain != "db" {
		t.Fatalf("hostname %q subdomain %q", tp.Spec.Hostname, tp.Spec.Subdomain)
	}
}

func TestStatefulSetParallelCreatesAll(t *testing.T) {
	s := newSim(t, 3, statefulSetObj("db", 3, "v1", parallel))
	w := workloadOf(t, s.compute(), "StatefulSet", "db")
	if got := wantedNames(w, Create); !slices.Equal(got, []string{"db-0", "db-1", "db-2"}) {
		t.Fatalf("created %v", got)
	}
}

func TestStatefulSetScaleDown(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mut   []func(*appsv1.StatefulSet)
		first []string
	}{
		{"ordered: highest first, one at a time", nil, []string{"db-4"}},
		{"parallel: all at once", []func(*appsv1.StatefulSet){parallel}, []string{"db-2", "db-3", "db-4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 3, statefulSetObj("db", 5, "v1", tc.mut...))
			s.run(50, nil)
			s.objects[0] = statefulSetObj("db", 2, "v1", tc.mut...)
			w := workloadOf(t, s.compute(), "StatefulSet", "db")
			if got := stopNames(w); !slices.Equal(got, tc.first) {
				t.Fatalf("stopped %v, want %v", got, tc.first)
			}
			s.run(50, nil)
			if len(s.ownedBy("StatefulSet", "db")) != 2 {
				t.Fatalf("left:\n%s", s.dump())
			}
		})
	}
}

func TestStatefulSetRollingUpdate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		partition int32
		onDelete  bool
		replaced  []string
	}{
		{"from the highest ordinal", 0, false, []string{"db-3", "db-2", "db-1", "db-0"}},
		{"partition 2", 2, false, []string{"db-3", "db-2"}},
		{"OnDelete", 0, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mut := func(st *appsv1.StatefulSet) {
				st.Spec.UpdateStrategy.RollingUpdate.Partition = ptr(tc.partition)
				if tc.onDelete {
					st.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
				}
			}
			s := newSim(t, 3, statefulSetObj("db", 4, "v1", mut))
			s.run(50, nil)
			machines := map[string]string{}
			for _, p := range s.ownedBy("StatefulSet", "db") {
				machines[p.Name] = p.Machine
			}
			s.objects[0] = statefulSetObj("db", 4, "v2", mut)
			s.readyAfter = func(string) int { return 2 }
			var replaced []string
			r := s.run(50, func(r Result) {
				w := workloadOf(t, r, "StatefulSet", "db")
				if len(wantedNames(w, Replace)) > 1 {
					t.Fatalf("replaced %v at once", wantedNames(w, Replace))
				}
				if notReady := s.notReady("StatefulSet", "db"); notReady > 1 {
					t.Fatalf("%d pods not ready during the update:\n%s", notReady, s.dump())
				}
				replaced = append(replaced, wantedNames(w, Replace)...)
			})
			if !slices.Equal(replaced, tc.replaced) {
				t.Fatalf("replaced %v, want %v", replaced, tc.replaced)
			}
			for _, p := range s.ownedBy("StatefulSet", "db") {
				if machines[p.Name] != p.Machine {
					t.Errorf("%s moved from %s to %s", p.Name, machines[p.Name], p.Machine)
				}
			}
			w := workloadOf(t, r, "StatefulSet", "db")
			if want := int32(len(tc.replaced)); w.Status.UpdatedReplicas != want {
				t.Errorf("updated %d, want %d", w.Status.UpdatedReplicas, want)
			}
			if tc.onDelete && !strings.Contains(w.Reason, "OnDelete") {
				t.Errorf("reason %q", w.Reason)
			}
			if tc.partition == 2 && (w.Status.CurrentRevision == w.Status.UpdateRevision || !strings.Contains(w.Reason, "partition 2")) {
				t.Errorf("status %+v reason %q", w.Status, w.Reason)
			}
		})
	}
}

func TestStatefulSetRecreatesFailedPodAfterItStops(t *testing.T) {
	s := newSim(t, 3, statefulSetObj("db", 2, "v1"))
	s.run(50, nil)
	s.pods["default/db-0"].Phase = corev1.PodFailed
	s.pods["default/db-0"].Ready = false
	w := workloadOf(t, s.compute(), "StatefulSet", "db")
	if got := stopNames(w); !slices.Equal(got, []string{"db-0"}) || len(wantedNames(w, Create)) != 0 {
		t.Fatalf("stop %v create %v", got, wantedNames(w, Create))
	}
	s.run(50, nil)
	if p := s.pods["default/db-0"]; p == nil || p.Phase != corev1.PodRunning {
		t.Fatalf("db-0 not back:\n%s", s.dump())
	}
}

func TestStatefulSetWaitsForUnreachableMachine(t *testing.T) {
	s := newSim(t, 3, statefulSetObj("db", 3, "v1"))
	s.run(50, nil)
	m := s.pods["default/db-1"].Machine
	for i := range s.machines {
		if s.machines[i].Name == m {
			s.machines[i].Reachable = false
		}
	}
	s.objects[0] = statefulSetObj("db", 3, "v2")
	w := workloadOf(t, s.compute(), "StatefulSet", "db")
	if w.Changes() != 0 || !strings.Contains(w.Reason, "machine "+m) {
		t.Fatalf("changes %d reason %q", w.Changes(), w.Reason)
	}
}

// TestStatefulSetProperties: whatever the policy, replicas, partition and
// readiness delays, and however often the controller is killed, a
// StatefulSet converges to exactly its ordinals, OrderedReady never has
// a pod whose predecessor is not ready, and a rolling update never has
// more than one pod down.
func TestStatefulSetProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		R := rapid.Int32Range(0, 6).Draw(rt, "replicas")
		par := rapid.Bool().Draw(rt, "parallel")
		partition := rapid.Int32Range(0, 6).Draw(rt, "partition")
		mut := func(st *appsv1.StatefulSet) {
			if par {
				parallel(st)
			}
			st.Spec.UpdateStrategy.RollingUpdate.Partition = ptr(partition)
		}
		s := newSim(rt, 3, statefulSetObj("db", R, "v1", mut))
		s.terminateSteps = rapid.IntRange(0, 2).Draw(rt, "terminateSteps")
		delays := rapid.SliceOfN(rapid.IntRange(1, 3), 8, 8).Draw(rt, "readyAfter")
		s.readyAfter = func(n string) int { return delays[int(suffixHash(n))%len(delays)] }
		s.run(100, nil)
		s.objects[0] = statefulSetObj("db", rapid.Int32Range(0, 6).Draw(rt, "newReplicas"), "v2", mut)
		newR := *s.objects[0].Obj.(*appsv1.StatefulSet).Spec.Replicas
		updating := false
		for step := 0; ; step++ {
			if step > 200 {
				rt.Fatalf("not converged:\n%s", s.dump())
			}
			r := s.chaosPass(rt, 10)
			if r.Changes() == 0 && s.settled() {
				break
			}
			w := workloadOf(rt, r, "StatefulSet", "db")
			updating = updating || len(wantedNames(w, Replace)) > 0
			s.apply(r, nil)
			if !par {
				for _, c := range wantedNames(w, Create) {
					ord, _ := ordinalOf("db", c)
					for i := int32(0); i < ord; i++ {
						if p := s.pods["default/db-"+itoa(i)]; p == nil || !p.Ready {
							rt.Fatalf("%s started before db-%d was ready:\n%s", c, i, s.dump())
						}
					}
				}
			}
			if len(wantedNames(w, Replace)) > 1 {
				rt.Fatalf("replaced %v at once", wantedNames(w, Replace))
			}
			if !par && newR == R {
				if down := s.notReady("StatefulSet", "db"); down > 1 {
					rt.Fatalf("%d pods down during an ordered rolling update:\n%s", down, s.dump())
				}
			}
			s.tick()
		}
		pods := s.ownedBy("StatefulSet", "db")
		if int32(len(pods)) != newR {
			rt.Fatalf("%d pods, want %d:\n%s", len(pods), newR, s.dump())
		}
		v2 := fnvHash(ptr(template("v2")))
		for i, p := range pods {
			_ = i
			ord, ok := ordinalOf("db", p.Name)
			if !ok || ord >= newR {
				rt.Fatalf("unexpected pod %s", p.Name)
			}
			if ord >= partition && p.TemplateHash != v2 {
				rt.Fatalf("%s above the partition %d not updated:\n%s", p.Name, partition, s.dump())
			}
		}
		if !updating && newR > partition && R > 0 {
			for _, p := range pods {
				if ord, _ := ordinalOf("db", p.Name); ord < R && ord >= partition {
					rt.Fatalf("%s above the partition was not replaced in place", p.Name)
				}
			}
		}
	})
}
