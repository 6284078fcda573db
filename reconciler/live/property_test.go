package live

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"pgregory.net/rapid"

	"berth.dev/berth/nodes/api"
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

// TestArbitraryObservations feeds passes fleets in arbitrary states
// (machines unreachable, stray and duplicated pods of any owner, hashes
// and phases, agents holding any generation and digest) and checks what
// must hold whatever is observed: a pass succeeds and is deterministic, no
// pod is sent to two machines, nothing is sent to a machine that did not
// answer or is not in the repository, and a sent set is the agent's next
// generation.
func TestArbitraryObservations(t *testing.T) {
	d := load(t, mixedRepo("1"))
	rapid.Check(t, func(rt *rapid.T) {
		s := newFleetSim(rt, d)
		s.converge(30, nil)
		s.desired = load(rt, mixedRepo(rapid.SampledFrom([]string{"1", "2"}).Draw(rt, "tag")))
		names := []string{"web-x", "db-0", "db-1", "db-2", "logs-a", "debug", "gone-1"}
		owners := []string{"Deployment/web", "StatefulSet/db", "DaemonSet/logs", "Pod/debug", "Deployment/gone", ""}
		for _, m := range s.machines {
			m.reachable = rapid.IntRange(0, 4).Draw(rt, "reachable "+m.name) > 0
			m.gen = rapid.Int64Range(0, 5).Draw(rt, "gen "+m.name)
			if rapid.Bool().Draw(rt, "stale digest "+m.name) {
				m.digest = "stale"
			}
			for i := range rapid.IntRange(0, 3).Draw(rt, "extra "+m.name) {
				p := api.Pod{Namespace: "default", Name: rapid.SampledFrom(names).Draw(rt, "name"), UID: fmt.Sprint("u", i),
					Hash: rapid.SampledFrom([]string{"h1", "h2"}).Draw(rt, "hash")}
				if o := rapid.SampledFrom(owners).Draw(rt, "owner"); o != "" {
					kind, name, _ := strings.Cut(o, "/")
					p.Labels = map[string]string{"berth.dev/owner-kind": kind, "berth.dev/owner": name}
				}
				m.pods = append(m.pods, &simPod{pod: p, age: rapid.IntRange(0, 3).Draw(rt, "age"), terminating: rapid.IntRange(-1, 1).Draw(rt, "terminating")})
			}
		}
		s.machines = append(s.machines, &simMachine{name: "zz-outside", reachable: true})
		in := Input{Desired: s.desired, Observed: s.observe(), Memory: s.memory, Now: s.now}
		p, err := Plan(in, Options{})
		if err != nil {
			rt.Fatal(err)
		}
		again, err := Plan(in, Options{})
		if err != nil {
			rt.Fatal(err)
		}
		ja, _ := json.Marshal(p)
		jb, _ := json.Marshal(again)
		if string(ja) != string(jb) {
			rt.Fatal("two passes over the same input differ")
		}
		seen := map[string]string{}
		for _, mp := range p.Machines {
			if mp.Send == nil {
				continue
			}
			var sm *simMachine
			for _, m := range s.machines {
				if m.name == mp.Name {
					sm = m
				}
			}
			if !sm.reachable || !mp.InRepository {
				rt.Fatalf("sent to %s (reachable %v, in repository %v)", mp.Name, sm.reachable, mp.InRepository)
			}
			if mp.Send.Generation != sm.gen+1 || mp.Generation != sm.gen+1 {
				rt.Fatalf("%s: generation %d after %d", mp.Name, mp.Send.Generation, sm.gen)
			}
			for _, pod := range mp.Send.Pods {
				if other, ok := seen[pod.Key()]; ok {
					rt.Fatalf("pod %s sent to %s and %s", pod.Key(), other, mp.Name)
				}
				seen[pod.Key()] = mp.Name
			}
		}
	})
}
