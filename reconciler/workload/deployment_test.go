package workload

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"pgregory.net/rapid"
)

func strategy(surge, unav intstr.IntOrString) func(*appsv1.Deployment) {
	return func(d *appsv1.Deployment) {
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unav}
	}
}

func count(w Workload) (creates, replaces, stops int) {
	for _, p := range w.Pods {
		switch p.Action {
		case Create:
			creates++
		case Replace:
			replaces++
		}
	}
	return creates, replaces, len(w.Stop)
}

// converged returns a sim whose Deployment web runs image v1 everywhere.
func converged(t tb, replicas int32, mut ...func(*appsv1.Deployment)) *sim {
	s := newSim(t, 3, deploymentObj("web", replicas, "v1", mut...))
	s.run(50, nil)
	return s
}

func TestDeploymentCreatesDeterministicUnboundPods(t *testing.T) {
	s := newSim(t, 3, deploymentObj("web", 3, "v1"))
	r := s.compute()
	w := workloadOf(t, r, "Deployment", "web")
	if c, _, _ := count(w); c != 3 {
		t.Fatalf("creates = %d, want 3", c)
	}
	hash := fnvHash(ptr(template("v1")))
	for i, p := range w.Pods {
		if !strings.HasPrefix(p.Name, "web-"+hash+"-") || len(p.Name) != len("web-"+hash+"-")+5 {
			t.Errorf("pod %d name %q, want web-%s-xxxxx", i, p.Name, hash)
		}
		if p.Machine != "" {
			t.Errorf("pod %s bound to %s, want unbound", p.Name, p.Machine)
		}
		if p.Template.Labels[LabelPodTemplateHash] != hash || p.Template.Labels[LabelOwnerName] != "web" || p.Template.Labels["app"] != "web" {
			t.Errorf("pod %s labels %v", p.Name, p.Template.Labels)
		}
	}
	again := s.compute()
	if !reflect.DeepEqual(r, again) {
		t.Fatal("two passes over the same input differ")
	}
}

func TestDeploymentConvergedHasNothingToDo(t *testing.T) {
	s := converged(t, 3)
	r := s.compute()
	if n := r.Changes(); n != 0 {
		t.Fatalf("changes = %d on a converged state", n)
	}
	w := workloadOf(t, r, "Deployment", "web")
	if c := condition(w, "Progressing"); c.Reason != "NewReplicaSetAvailable" {
		t.Errorf("Progressing = %+v", c)
	}
	if c := condition(w, "Available"); c.Status != corev1.ConditionTrue {
		t.Errorf("Available = %+v", c)
	}
	if w.Status.AvailableReplicas != 3 || w.Status.UpdatedReplicas != 3 || w.Status.Revision != 1 {
		t.Errorf("status %+v", w.Status)
	}
	if w.Reason != "3/3 replicas up to date and available" {
		t.Errorf("reason %q", w.Reason)
	}
}

func TestDeploymentRollingUpdateFirstStep(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		replicas             int32
		surge, unav          intstr.IntOrString
		wantCreate, wantStop int
	}{
		{"surge 1 unavailable 0", 3, intstr.FromInt32(1), intstr.FromInt32(0), 1, 0},
		{"surge 0 unavailable 1", 3, intstr.FromInt32(0), intstr.FromInt32(1), 0, 1},
		// 25% of 10: surge rounds up to 3, unavailable down to 2.
		{"percentages round like kubernetes", 10, intstr.FromString("25%"), intstr.FromString("25%"), 3, 2},
		// 25% of 1: surge 1, unavailable 0.
		{"one replica", 1, intstr.FromString("25%"), intstr.FromString("25%"), 1, 0},
		{"surge 100%", 4, intstr.FromString("100%"), intstr.FromInt32(0), 4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := converged(t, tc.replicas, strategy(tc.surge, tc.unav))
			s.objects[0] = deploymentObj("web", tc.replicas, "v2", strategy(tc.surge, tc.unav))
			w := workloadOf(t, s.compute(), "Deployment", "web")
			c, _, st := count(w)
			if c != tc.wantCreate || st != tc.wantStop {
				t.Fatalf("creates %d stops %d, want %d and %d (%s)", c, st, tc.wantCreate, tc.wantStop, w.Reason)
			}
			if !strings.HasPrefix(w.Reason, "rolling update 0/") {
				t.Errorf("reason %q", w.Reason)
			}
			if w.Status.Revision != 2 {
				t.Errorf("revision %d, want 2", w.Status.Revision)
			}
		})
	}
}

func TestDeploymentRollingUpdateWaitsForReadiness(t *testing.T) {
	s := converged(t, 3, strategy(intstr.FromInt32(1), intstr.FromInt32(0)))
	s.objects[0] = deploymentObj("web", 3, "v2", strategy(intstr.FromInt32(1), intstr.FromInt32(0)))
	s.readyAfter = func(string) int { return 1000 }
	r := s.compute()
	s.memory = r.Memory
	s.apply(r, nil)
	s.tick()
	r = s.compute()
	w := workloadOf(t, r, "Deployment", "web")
	if n := w.Changes(); n != 0 {
		t.Fatalf("changes %d while the surge pod is not ready", n)
	}
	if !strings.Contains(w.Reason, "surge 1") || !strings.Contains(w.Reason, "to be ready") {
		t.Errorf("reason %q", w.Reason)
	}
}

func TestDeploymentScaleDownOrder(t *testing.T) {
	s := converged(t, 4)
	// One pod is not ready, one became ready more recently than others.
	pods := s.ownedBy("Deployment", "web")
	pods[0].Ready = false
	pods[1].ReadySince = s.now
	s.objects[0] = deploymentObj("web", 2, "v1")
	w := workloadOf(t, s.compute(), "Deployment", "web")
	if len(w.Stop) != 2 {
		t.Fatalf("stops %v", w.Stop)
	}
	got := map[string]bool{w.Stop[0].Name: true, w.Stop[1].Name: true}
	if !got[pods[0].Name] || !got[pods[1].Name] {
		t.Fatalf("stopped %v, want the not-ready %s and the newest-ready %s", w.Stop, pods[0].Name, pods[1].Name)
	}
}

func TestDeploymentRecreate(t *testing.T) {
	rec := func(d *appsv1.Deployment) {
		d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	}
	s := converged(t, 3, rec)
	s.terminateSteps = 2
	s.objects[0] = deploymentObj("web", 3, "v2", rec)
	r := s.compute()
	w := workloadOf(t, r, "Deployment", "web")
	if c, _, st := count(w); c != 0 || st != 3 {
		t.Fatalf("creates %d stops %d, want 0 and 3", c, st)
	}
	s.memory = r.Memory
	s.apply(r, nil)
	s.tick()
	w = workloadOf(t, s.compute(), "Deployment", "web")
	if c, _, _ := count(w); c != 0 {
		t.Fatalf("created %d while old pods terminate (%s)", c, w.Reason)
	}
	s.run(50, func(Result) {
		hashes := map[string]bool{}
		for _, p := range s.ownedBy("Deployment", "web") {
			hashes[p.TemplateHash] = true
		}
		if len(hashes) > 1 {
			t.Fatalf("two revisions at once:\n%s", s.dump())
		}
	})
}

func TestDeploymentMinReadySeconds(t *testing.T) {
	s := newSim(t, 3, deploymentObj("web", 2, "v1", func(d *appsv1.Deployment) { d.Spec.MinReadySeconds = 30 }))
	r := s.compute()
	s.memory = r.Memory
	s.apply(r, nil)
	s.tick()
	s.tick()
	r = s.compute()
	w := workloadOf(t, r, "Deployment", "web")
	if w.Status.ReadyReplicas != 2 || w.Status.AvailableReplicas != 0 {
		t.Fatalf("status %+v, want 2 ready 0 available", w.Status)
	}
	if want := s.now.Add(29 * time.Second); !r.Wake.Equal(want) {
		t.Errorf("wake %v, want %v", r.Wake, want)
	}
	s.now = s.now.Add(29 * time.Second)
	w = workloadOf(t, s.compute(), "Deployment", "web")
	if w.Status.AvailableReplicas != 2 {
		t.Errorf("available %d after minReadySeconds", w.Status.AvailableReplicas)
	}
}

func TestDeploymentProgressDeadline(t *testing.T) {
	mut := func(d *appsv1.Deployment) {
		d.Spec.ProgressDeadlineSeconds = ptr(int32(60))
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: ptr(intstr.FromInt32(1)), MaxUnavailable: ptr(intstr.FromInt32(0))}
	}
	s := converged(t, 3, mut)
	s.objects[0] = deploymentObj("web", 3, "v2", mut)
	s.readyAfter = func(string) int { return 1 << 30 } // the new image never gets ready
	r := s.compute()
	s.memory = r.Memory
	s.apply(r, nil)
	s.tick()
	r = s.compute()
	s.memory = r.Memory
	if want := s.now.Add(time.Minute); !r.Wake.Equal(want) {
		t.Errorf("wake %v, want the deadline %v", r.Wake, want)
	}
	s.now = s.now.Add(time.Minute)
	r = s.compute()
	w := workloadOf(t, r, "Deployment", "web")
	c := condition(w, "Progressing")
	if c.Status != corev1.ConditionFalse || c.Reason != "ProgressDeadlineExceeded" {
		t.Fatalf("Progressing %+v", c)
	}
	if w.Changes() != 0 || !strings.Contains(w.Reason, "progress deadline exceeded") {
		t.Fatalf("changes %d reason %q", w.Changes(), w.Reason)
	}
	if c := condition(w, "Available"); c.Status != corev1.ConditionTrue {
		t.Errorf("Available %+v: the old pods still serve", c)
	}
	// A new commit (another template) starts a new deadline.
	s.memory = r.Memory
	s.objects[0] = deploymentObj("web", 3, "v3", mut)
	w = workloadOf(t, s.compute(), "Deployment", "web")
	if condition(w, "Progressing").Status != corev1.ConditionTrue || w.Changes() == 0 {
		t.Fatalf("after a new template: %+v %q", w.Status.Conditions, w.Reason)
	}
}

func TestDeploymentPaused(t *testing.T) {
	s := converged(t, 3)
	s.objects[0] = deploymentObj("web", 3, "v2", func(d *appsv1.Deployment) { d.Spec.Paused = true })
	w := workloadOf(t, s.compute(), "Deployment", "web")
	if w.Changes() != 0 || condition(w, "Progressing").Reason != "DeploymentPaused" {
		t.Fatalf("paused: changes %d, %+v", w.Changes(), w.Status.Conditions)
	}
	// A paused Deployment still scales.
	s.objects[0] = deploymentObj("web", 5, "v1", func(d *appsv1.Deployment) { d.Spec.Paused = true })
	if w := workloadOf(t, s.compute(), "Deployment", "web"); len(wantedNames(w, Create)) != 2 {
		t.Fatalf("paused scale up: %q", w.Reason)
	}
}

func TestDeploymentRevisionHistory(t *testing.T) {
	mut := func(d *appsv1.Deployment) { d.Spec.RevisionHistoryLimit = ptr(int32(2)) }
	s := converged(t, 1, mut)
	for i := 2; i <= 5; i++ {
		s.objects[0] = deploymentObj("web", 1, fmt.Sprintf("v%d", i), mut)
		s.run(50, nil)
	}
	revs := s.memory.Workloads["Deployment default/web"].Revisions
	if len(revs) != 3 || revs[2].Number != 5 || revs[0].Number != 3 {
		t.Fatalf("revisions %+v, want 3, 4 and 5", revs)
	}
	// Back to v4 (git revert): v4 becomes revision 6.
	s.objects[0] = deploymentObj("web", 1, "v4", mut)
	r := s.run(50, nil)
	if w := workloadOf(t, r, "Deployment", "web"); w.Status.Revision != 6 {
		t.Fatalf("revision after revert %d, want 6", w.Status.Revision)
	}
}

func TestDeploymentInvalidStrategy(t *testing.T) {
	s := converged(t, 2)
	s.objects[0] = deploymentObj("web", 2, "v2", strategy(intstr.FromInt32(0), intstr.FromString("0%")))
	w := workloadOf(t, s.compute(), "Deployment", "web")
	if w.Changes() != 0 || condition(w, "ReconcileError").Reason != "InvalidSpec" {
		t.Fatalf("changes %d conditions %+v", w.Changes(), w.Status.Conditions)
	}
	s.objects[0] = deploymentObj("web", 2, "v2", strategy(intstr.FromString("ten"), intstr.FromInt32(1)))
	if w := workloadOf(t, s.compute(), "Deployment", "web"); !strings.Contains(w.Reason, `"ten"`) {
		t.Fatalf("reason %q", w.Reason)
	}
}

func TestDeploymentPausesWhileMachineUnreachable(t *testing.T) {
	s := converged(t, 3, strategy(intstr.FromInt32(0), intstr.FromInt32(1)))
	s.machines[0].Reachable = false
	s.objects[0] = deploymentObj("web", 3, "v2", strategy(intstr.FromInt32(0), intstr.FromInt32(1)))
	w := workloadOf(t, s.compute(), "Deployment", "web")
	if w.Changes() != 0 {
		t.Fatalf("changes %d with one pod unknown and maxUnavailable 1: %+v", w.Changes(), w)
	}
	if !strings.Contains(w.Reason, "machine m0") {
		t.Errorf("reason %q", w.Reason)
	}
	s.machines[0].Reachable = true
	s.run(50, nil)
	for _, p := range s.ownedBy("Deployment", "web") {
		if p.TemplateHash != fnvHash(ptr(template("v2"))) {
			t.Fatalf("not rolled out after the machine came back:\n%s", s.dump())
		}
	}
}

func TestOrphansArePruned(t *testing.T) {
	s := converged(t, 2)
	s.objects = nil
	r := s.compute()
	if len(r.Orphans) != 2 || !strings.Contains(r.Orphans[0].Reason, "no longer in the repository") {
		t.Fatalf("orphans %+v", r.Orphans)
	}
	if _, ok := r.Memory.Workloads["Deployment default/web"]; ok {
		t.Error("memory of a removed Deployment kept")
	}
}

// TestDeploymentRolloutProperties drives random rollouts through the
// simulated fleet, killing the controller (memory lost or stale, output
// half applied) at random, and checks the strategy's bounds after every
// step.
func TestDeploymentRolloutProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		R := rapid.Int32Range(0, 8).Draw(rt, "replicas")
		bound := func(label string) intstr.IntOrString {
			if rapid.Bool().Draw(rt, label+"Percent") {
				return intstr.FromString(fmt.Sprintf("%d%%", rapid.IntRange(0, 100).Draw(rt, label+"Pct")))
			}
			return intstr.FromInt32(rapid.Int32Range(0, 3).Draw(rt, label))
		}
		surge, unav := bound("surge"), bound("unavailable")
		if surge.String() == "0" || surge.String() == "0%" {
			if unav.String() == "0" || unav.String() == "0%" {
				surge = intstr.FromInt32(1)
			}
		}
		minReady := rapid.Int32Range(0, 3).Draw(rt, "minReady")
		mut := func(d *appsv1.Deployment) {
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unav}
			d.Spec.MinReadySeconds = minReady
		}
		s := newSim(rt, rapid.IntRange(1, 4).Draw(rt, "machines"), deploymentObj("web", R, "v1", mut))
		s.terminateSteps = rapid.IntRange(0, 2).Draw(rt, "terminateSteps")
		readiness := rapid.SliceOfN(rapid.IntRange(1, 4), 16, 16).Draw(rt, "readyAfter")
		s.readyAfter = func(name string) int { return readiness[int(suffixHash(name))%len(readiness)] }
		s.run(100, nil)

		ps, _ := parseIntOrPercent(&surge, "")
		pu, _ := parseIntOrPercent(&unav, "")
		ms, mu := scaled(ps, R, true), scaled(pu, R, false)
		if ms == 0 && mu == 0 {
			mu = 1
		}
		check := func() {
			var total, avail int32
			for _, p := range s.ownedBy("Deployment", "web") {
				total++
				if p.Ready && !p.Terminating && !s.now.Before(p.ReadySince.Add(time.Duration(minReady)*time.Second)) {
					avail++
				}
			}
			if total > R+ms {
				rt.Fatalf("%d pods > replicas %d + maxSurge %d:\n%s", total, R, ms, s.dump())
			}
			if avail < R-mu {
				rt.Fatalf("%d available < replicas %d - maxUnavailable %d:\n%s", avail, R, mu, s.dump())
			}
		}
		check()

		s.objects[0] = deploymentObj("web", R, "v2", mut)
		final := "v2"
		switchAt := rapid.IntRange(0, 20).Draw(rt, "v3At")
		for step := 0; ; step++ {
			if step == switchAt && rapid.Bool().Draw(rt, "v3") {
				// Another commit lands mid-rollout.
				s.objects[0] = deploymentObj("web", R, "v3", mut)
				final = "v3"
			}
			if step > 300 {
				rt.Fatalf("rollout not finished:\n%s", s.dump())
			}
			r := s.chaosPass(rt, 10)
			if r.Changes() == 0 && s.settled() && r.Wake.IsZero() {
				break
			}
			s.chaosApply(rt, r, 5)
			check()
			s.tick()
			check()
		}
		want := fnvHash(ptr(template(final)))
		pods := s.ownedBy("Deployment", "web")
		if int32(len(pods)) != R {
			rt.Fatalf("%d pods after the rollout, want %d:\n%s", len(pods), R, s.dump())
		}
		for _, p := range pods {
			if p.TemplateHash != want {
				rt.Fatalf("old pod left:\n%s", s.dump())
			}
		}
		// Idempotent: applying a converged pass changes nothing.
		r := s.compute()
		before := s.dump()
		s.apply(r, nil)
		if s.dump() != before {
			rt.Fatal("applying a converged pass changed the fleet")
		}
		if again := s.compute(); again.Changes() != 0 || !reflect.DeepEqual(again.Workloads, r.Workloads) {
			rt.Fatal("a second converged pass differs")
		}
	})
}

func suffixHash(s string) uint32 {
	var h uint32 = 2166136261
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
