package live

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// TestQuickstartConverges: examples/quickstart on three machines ends with
// one echo pod per machine, all ready, and planning again sends nothing.
func TestQuickstartConverges(t *testing.T) {
	s := newFleetSim(t, load(t, quickstart(t, "1")))
	s.converge(20, func(p *Pass) { s.noDuplicates() })

	total, ready, hashes := s.counts("echo-")
	if total != 3 || ready != 3 || len(hashes) != 1 {
		t.Fatalf("echo: %d pods, %d ready, hashes %v\n%s", total, ready, hashes, s.dump())
	}
	for _, m := range s.machines {
		if len(m.pods) != 1 {
			t.Fatalf("%s runs %d pods, want 1 on each machine:\n%s", m.name, len(m.pods), s.dump())
		}
	}
	again := s.plan()
	if !again.Converged || again.Changes() != 0 {
		t.Fatalf("second pass: converged %v, %d machines to tell", again.Converged, again.Changes())
	}
	for _, a := range again.Pods {
		if a.Action != Keep {
			t.Fatalf("second pass acts on %s: %s (%s)", a.Key(), a.Action, a.Reason)
		}
	}
	sends := s.sends
	s.apply(again, nil)
	if s.sends != sends {
		t.Fatal("a converged pass sent something")
	}
	var b strings.Builder
	if err := WriteText(&b, again, false); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "No changes. The fleet matches the repository.\n" {
		t.Fatalf("converged plan text:\n%s", got)
	}
}

// TestQuickstartRollingUpdate: an image change rolls out within
// maxSurge 1 and maxUnavailable 0 at every step.
func TestQuickstartRollingUpdate(t *testing.T) {
	s := newFleetSim(t, load(t, quickstart(t, "1")))
	s.converge(20, nil)
	_, _, before := s.counts("echo-")

	s.desired = load(t, quickstart(t, "2"))
	first := s.plan()
	var starts []string
	for _, a := range first.Pods {
		if a.Action == Start {
			starts = append(starts, a.Key())
			if !strings.Contains(a.Reason, "") || a.Reason == "" {
				t.Fatalf("start of %s has no reason", a.Key())
			}
		}
	}
	if len(starts) != 1 {
		t.Fatalf("first pass of the rollout starts %v, want one surge pod", starts)
	}
	if want := (Summary{Start: 1, Keep: 3, Machines: 1}); first.Summary != want {
		t.Fatalf("summary %+v, want %+v", first.Summary, want)
	}
	s.converge(40, func(p *Pass) {
		s.noDuplicates()
		total, ready, _ := s.counts("echo-")
		if total > 4 {
			t.Fatalf("%d echo pods exceed replicas+maxSurge:\n%s", total, s.dump())
		}
		if ready < 3 {
			t.Fatalf("%d ready echo pods, below replicas-maxUnavailable:\n%s", ready, s.dump())
		}
	})
	total, ready, after := s.counts("echo-")
	if total != 3 || ready != 3 || len(after) != 1 {
		t.Fatalf("after the rollout: %d pods, %d ready, hashes %v", total, ready, after)
	}
	for h := range after {
		if before[h] > 0 {
			t.Fatalf("rollout kept the old revision %s", h)
		}
	}
}

// TestRemovedDeploymentIsPruned: a repository without the Deployment stops
// its pods (an empty render needs AllowEmpty, and is refused without).
func TestRemovedDeploymentIsPruned(t *testing.T) {
	s := newFleetSim(t, load(t, quickstart(t, "1")))
	s.converge(20, nil)

	fsys := quickstart(t, "1")
	delete(fsys, "app.yaml")
	s.desired = load(t, fsys)
	_, err := Plan(Input{Desired: s.desired, Observed: s.observe(), Memory: s.memory, Now: s.now}, Options{})
	if !errors.Is(err, ErrEmptyRender) {
		t.Fatalf("empty render: err %v, want ErrEmptyRender", err)
	}

	s.opts.AllowEmpty = true
	p := s.plan()
	if len(p.Pruned) != 3 {
		t.Fatalf("pruned %v, want the 3 echo pods", p.Pruned)
	}
	for _, st := range p.Pruned {
		if st.Owner.Kind != "Deployment" || st.Owner.Name != "echo" || !strings.Contains(st.Reason, "no longer in the repository") {
			t.Fatalf("pruned %+v", st)
		}
	}
	s.converge(20, nil)
	if r := s.running(); len(r) != 0 {
		t.Fatalf("still running after the prune: %v", r)
	}
}

// TestPruneKeepsOtherWorkloads: removing one Deployment prunes its pods
// and leaves the others alone, without AllowEmpty.
func TestPruneKeepsOtherWorkloads(t *testing.T) {
	fsys := quickstart(t, "1")
	fsys["other.yaml"] = &fstest.MapFile{Data: []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: other}
spec:
  replicas: 2
  selector: {matchLabels: {app: other}}
  template:
    metadata: {labels: {app: other}}
    spec:
      containers: [{name: c, image: 198.18.0.1:5000/berth/echo:1}]
`)}
	s := newFleetSim(t, load(t, fsys))
	s.converge(20, nil)
	delete(fsys, "app.yaml")
	s.desired = load(t, fsys)
	s.converge(20, nil)
	if total, _, _ := s.counts("echo-"); total != 0 {
		t.Fatalf("%d echo pods left", total)
	}
	if total, ready, _ := s.counts("other-"); total != 2 || ready != 2 {
		t.Fatalf("other: %d pods, %d ready", total, ready)
	}
}

// TestUnreachableMachineWaitsForGrace: the pods of a machine that stops
// answering are neither rescheduled before the grace period passes nor
// forgotten; after it, they are replaced elsewhere, and stopped on the
// machine when it answers again.
func TestUnreachableMachineWaitsForGrace(t *testing.T) {
	const grace = 30 * time.Second
	s := newFleetSim(t, load(t, quickstart(t, "1")))
	s.opts.RescheduleAfter = grace
	s.converge(20, nil)
	lab3 := s.machine("lab3")
	if len(lab3.pods) != 1 {
		t.Fatalf("lab3 runs %d pods", len(lab3.pods))
	}
	lost := lab3.pods[0].pod.Key()
	lab3.reachable = false
	down := s.now

	for s.now.Before(down.Add(grace)) {
		p := s.plan()
		if p.Converged {
			t.Fatal("converged with an unreachable machine")
		}
		for _, a := range p.Pods {
			if a.Action == Start || a.Action == Stop {
				t.Fatalf("%s after %s unreachable: %s %s (%s)", s.now.Sub(down), lab3.name, a.Action, a.Key(), a.Reason)
			}
		}
		mp := p.Machines[2]
		if mp.Name != "lab3" || mp.Reachable || mp.Send != nil || !mp.UnreachableSince.Equal(down) || !mp.RescheduleAt.Equal(down.Add(grace)) {
			t.Fatalf("lab3 plan %+v", mp)
		}
		if got := p.Memory.Pods[lost]; got.Machine != "lab3" {
			t.Fatalf("memory forgot %s on lab3: %+v", lost, got)
		}
		if p.Wake.IsZero() || p.Wake.After(down.Add(grace)) {
			t.Fatalf("wake %v, want by the end of the grace period %v", p.Wake, down.Add(grace))
		}
		var b strings.Builder
		WriteText(&b, p, false)
		if !strings.Contains(b.String(), "lab3  ! unreachable since 2026-11-27T09:") {
			t.Fatalf("text does not name lab3:\n%s", b.String())
		}
		s.apply(p, nil)
		s.now = s.now.Add(5 * time.Second)
	}
	p := s.plan()
	starts := 0
	for _, a := range p.Pods {
		if a.Action == Start {
			starts++
			if a.Machine == "lab3" {
				t.Fatalf("started on the unreachable machine: %+v", a)
			}
		}
	}
	if starts != 1 {
		t.Fatalf("after the grace period: %d starts, want 1 replacement\n%s", starts, s.text())
	}
	s.apply(p, nil)
	s.step()
	for range 5 {
		s.apply(s.plan(), nil)
		s.step()
	}
	if total, ready, _ := s.counts("echo-"); ready != 3 || total != 4 {
		t.Fatalf("while lab3 is away: %d ready of %d (lab3's pod still counted as it runs)", ready, total)
	}
	lab3.reachable = true
	back := s.plan()
	var stops []string
	for _, a := range back.Pods {
		if a.Action == Stop {
			stops = append(stops, a.Machine+" "+a.Key()+" ("+a.Reason+")")
		}
	}
	if len(stops) != 1 || !strings.HasPrefix(stops[0], "lab3 "+lost+" (") {
		t.Fatalf("when lab3 is back, stops %q, want its old pod %s", stops, lost)
	}
	t.Log(stops[0])
	s.converge(20, nil)
	s.noDuplicates()
	if total, ready, _ := s.counts("echo-"); total != 3 || ready != 3 {
		t.Fatalf("after lab3 is back: %d pods, %d ready\n%s", total, ready, s.dump())
	}
}

// TestJobRunsToCompletion: a Job's pods run, succeed and stay (finished
// pods hold no resources); the fleet is then converged and a pass sends
// nothing, while the Deployment beside it keeps running.
func TestJobRunsToCompletion(t *testing.T) {
	fsys := quickstart(t, "1")
	fsys["job.yaml"] = &fstest.MapFile{Data: []byte(`apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: 198.18.0.1:5000/berth/migrate:1}]
`)}
	s := newFleetSim(t, load(t, fsys))
	// Converged counts a running Job's ready pods as there; run until the
	// Job is done.
	var job *WorkloadStatus
	for range 10 {
		p := s.converge(20, func(*Pass) { s.noDuplicates() })
		for i := range p.Workloads {
			if p.Workloads[i].Owner.Kind == "Job" {
				job = &p.Workloads[i]
			}
		}
		if job.Status.Active == 0 {
			break
		}
		s.step()
	}
	if job == nil || job.Status.Succeeded != 2 || job.Status.Active != 0 || job.Status.CompletionTime == nil {
		t.Fatalf("job status %+v", job)
	}
	if again := s.plan(); !again.Converged || again.Changes() != 0 {
		t.Fatalf("after the Job: converged %v, %d to tell", again.Converged, again.Changes())
	}
	if total, ready, _ := s.counts("echo-"); total != 3 || ready != 3 {
		t.Fatalf("echo: %d pods, %d ready", total, ready)
	}
}

// mixedRepo is a StatefulSet, a DaemonSet that tolerates m3's taint, a bare
// Pod and a Deployment on the three machines of machinesYAML.
func mixedRepo(tag string) fstest.MapFS {
	return repo(map[string]string{
		"web.yaml": deployYAML("web", 3, "web:"+tag, ""),
		"db.yaml": `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: "db:` + tag + `"}]
`,
		"ds.yaml": daemonSetYAML("logs", "logs:"+tag, "      tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]\n"),
		"debug.yaml": `apiVersion: v1
kind: Pod
metadata: {name: debug}
spec:
  containers: [{name: sh, image: "debug:` + tag + `"}]
`,
	})
}

// TestMixedWorkloadsRollTogether: every kind of long-running workload
// converges, then rolls to a new image, with no pod twice at any step.
func TestMixedWorkloadsRollTogether(t *testing.T) {
	s := newFleetSim(t, load(t, mixedRepo("1")))
	s.converge(30, func(*Pass) { s.noDuplicates() })
	check := func(tag string) {
		t.Helper()
		images := map[string]int{}
		for _, m := range s.machines {
			for _, p := range m.pods {
				images[m.name+" "+p.pod.Spec.Containers[0].Image]++
			}
		}
		for _, m := range []string{"m1", "m2", "m3"} {
			if images[m+" logs:"+tag] != 1 {
				t.Fatalf("DaemonSet not once on %s: %v", m, images)
			}
		}
		total, ready, _ := s.counts("")
		if total != 3+2+3+1 || ready != total {
			t.Fatalf("%d pods, %d ready: %v", total, ready, images)
		}
		for k := range images {
			if !strings.HasSuffix(k, ":"+tag) {
				t.Fatalf("%s still runs after the roll to %s", k, tag)
			}
			if strings.HasPrefix(k, "m3 web:") || strings.HasPrefix(k, "m3 db:") {
				t.Fatalf("%s: m3 is tainted", k)
			}
		}
	}
	check("1")
	s.desired = load(t, mixedRepo("2"))
	s.converge(60, func(*Pass) { s.noDuplicates() })
	check("2")
	if p := s.plan(); !p.Converged || p.Changes() != 0 {
		t.Fatal("not idempotent after the roll")
	}
}

// TestDaemonSetSkipsUntoleratedTaint: without a toleration, a DaemonSet
// leaves out the tainted machine (the scheduler's filters decide).
func TestDaemonSetSkipsUntoleratedTaint(t *testing.T) {
	s := newFleetSim(t, load(t, repo(map[string]string{"ds.yaml": daemonSetYAML("logs", "logs:1", "")})))
	s.converge(20, nil)
	var on []string
	for _, m := range s.machines {
		if len(m.pods) > 0 {
			on = append(on, m.name)
		}
	}
	if strings.Join(on, ",") != "m1,m2" {
		t.Fatalf("DaemonSet runs on %v, want m1 and m2", on)
	}
}
