package live

import (
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"pgregory.net/rapid"
)

// quickstartWith is examples/quickstart with its replicas, surge,
// unavailability and image tag changed.
func quickstartWith(t tb, replicas, surge, unavailable int, tag string) fstest.MapFS {
	fsys := quickstart(t, tag)
	app := string(fsys["app.yaml"].Data)
	for _, r := range []struct{ old, new string }{
		{"replicas: 3", fmt.Sprintf("replicas: %d", replicas)},
		{"maxSurge: 1", fmt.Sprintf("maxSurge: %d", surge)},
		{"maxUnavailable: 0", fmt.Sprintf("maxUnavailable: %d", unavailable)},
	} {
		if !strings.Contains(app, r.old) {
			t.Fatalf("examples/quickstart/app.yaml no longer says %q", r.old)
		}
		app = strings.Replace(app, r.old, r.new, 1)
	}
	fsys["app.yaml"] = &fstest.MapFile{Data: []byte(app)}
	return fsys
}

// TestKilledControllerNeverDuplicatesOrLoses replays a controller killed at
// random points of a rollout: its memory lost, or an older copy of it (the
// status branch not written after the last pass), its sets handed to only
// some machines. At every step no pod runs twice and the Deployment keeps
// replicas-maxUnavailable pods ready; once the kills stop, the fleet
// converges to exactly the new revision's pods, and a further pass has
// nothing to do.
func TestKilledControllerNeverDuplicatesOrLoses(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		replicas := rapid.IntRange(1, 5).Draw(rt, "replicas")
		unavailable := rapid.IntRange(0, 1).Draw(rt, "maxUnavailable")
		surge := rapid.IntRange(1-unavailable, 2).Draw(rt, "maxSurge")
		s := newFleetSim(rt, load(rt, quickstartWith(rt, replicas, surge, unavailable, "1")))
		s.terminateSteps = rapid.IntRange(0, 2).Draw(rt, "terminateSteps")
		s.useLast = rapid.Bool().Draw(rt, "process keeps the sets it sent")
		s.converge(30, nil)
		_, _, old := s.counts("echo-")

		s.desired = load(rt, quickstartWith(rt, replicas, surge, unavailable, "2"))
		check := func() {
			s.noDuplicates()
			if _, ready, _ := s.counts("echo-"); ready < replicas-unavailable {
				rt.Fatalf("%d ready echo pods, below %d-%d:\n%s", ready, replicas, unavailable, s.dump())
			}
		}
		chaos(rt, s, check)
		s.converge(60, func(*Pass) { check() })

		total, ready, hashes := s.counts("echo-")
		if total != replicas || ready != replicas || len(hashes) != 1 {
			rt.Fatalf("at convergence: %d pods, %d ready, hashes %v; want %d of one revision\n%s", total, ready, hashes, replicas, s.dump())
		}
		for h := range hashes {
			if old[h] > 0 {
				rt.Fatalf("old revision %s still runs", h)
			}
		}
		for _, m := range s.machines {
			if len(m.pods) != len(m.set) {
				rt.Fatalf("%s runs %d pods for a set of %d", m.name, len(m.pods), len(m.set))
			}
		}
		if p := s.plan(); !p.Converged || p.Changes() != 0 {
			rt.Fatalf("a pass after convergence: converged %v, %d to tell", p.Converged, p.Changes())
		}
	})
}

// chaos runs a few passes of a controller killed at random: its memory
// lost (with the sets it sent), or replaced by an older copy, its sets
// handed to some machines only, its memory sometimes not written after the
// pass. check runs after every pass and every step.
func chaos(rt *rapid.T, s *fleetSim, check func()) {
	history := []Memory{s.memory}
	kills := rapid.IntRange(0, 12).Draw(rt, "kills")
	for range kills {
		switch rapid.IntRange(0, 3).Draw(rt, "memory") {
		case 0:
			s.memory, s.last = Memory{}, nil
		case 1:
			s.memory, s.last = history[rapid.IntRange(0, len(history)-1).Draw(rt, "stale")], nil
		}
		p := s.plan()
		applied := map[string]bool{}
		for _, m := range s.machines {
			applied[m.name] = rapid.Bool().Draw(rt, "apply "+m.name)
		}
		keep := s.memory
		s.apply(p, func(m string) bool { return applied[m] })
		if rapid.Bool().Draw(rt, "memory not written") {
			s.memory = keep
		}
		history = append(history, p.Memory)
		check()
		s.step()
		check()
	}
}

// TestKilledControllerMixedWorkloads: the same kills during a roll of a
// StatefulSet, a DaemonSet, a bare Pod and a Deployment together.
func TestKilledControllerMixedWorkloads(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		s := newFleetSim(rt, load(rt, mixedRepo("1")))
		s.terminateSteps = rapid.IntRange(0, 2).Draw(rt, "terminateSteps")
		s.useLast = rapid.Bool().Draw(rt, "process keeps the sets it sent")
		s.converge(30, nil)
		s.desired = load(rt, mixedRepo("2"))
		chaos(rt, s, s.noDuplicates)
		s.converge(80, func(*Pass) { s.noDuplicates() })
		images := map[string]int{}
		for _, m := range s.machines {
			for _, p := range m.pods {
				images[p.pod.Spec.Containers[0].Image]++
			}
		}
		want := map[string]int{"web:2": 3, "db:2": 2, "logs:2": 3, "debug:2": 1}
		if fmt.Sprint(images) != fmt.Sprint(want) {
			rt.Fatalf("at convergence %v, want %v\n%s", images, want, s.dump())
		}
		if p := s.plan(); !p.Converged || p.Changes() != 0 {
			rt.Fatal("a pass after convergence has something to do")
		}
	})
}
