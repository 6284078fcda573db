package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
)

const machinesYAML = `apiVersion: berth.dev/v1alpha1
kind: Machine
metadata: {name: m1, labels: {disk: ssd}}
spec: {address: 198.18.0.21}
---
apiVersion: berth.dev/v1alpha1
kind: Machine
metadata: {name: m2, labels: {disk: ssd}}
spec: {address: 198.18.0.22}
---
apiVersion: berth.dev/v1alpha1
kind: Machine
metadata: {name: m3}
spec:
  address: 198.18.0.23
  taints: [{key: dedicated, value: gpu, effect: NoSchedule}]
`

func deployYAML(name string, replicas int, image, podSpec string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
%s      containers:
      - name: app
        image: %s
`, name, replicas, name, name, podSpec, image)
}

// daemonSetYAML is a DaemonSet whose one container is named app; podSpec is
// spliced into the pod spec, and container fields may follow.
func daemonSetYAML(name, image, podSpec string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata: {name: %s}
spec:
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
%s      containers:
      - name: app
        image: %s
`, name, name, name, podSpec, image)
}

// repo is a repository of the three machines above plus files.
func repo(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{"machines.yaml": {Data: []byte(machinesYAML)}}
	for n, d := range files {
		fsys[n] = &fstest.MapFile{Data: []byte(d)}
	}
	return fsys
}

func TestOptionsAndInput(t *testing.T) {
	if _, err := Plan(Input{}, Options{}); !errors.Is(err, ErrNoDesired) {
		t.Fatalf("nil desired: %v", err)
	}
	d := load(t, repo(nil))
	if _, err := Plan(Input{Desired: d}, Options{RescheduleAfter: -1}); err == nil {
		t.Fatal("negative grace accepted")
	}
	// An empty repository over an empty fleet is fine: the agents are
	// told their (empty) sets once.
	s := newFleetSim(t, d)
	if p := s.converge(2, nil); len(p.Pods) != 0 {
		t.Fatalf("pods %+v", p.Pods)
	}
}

// TestPass runs table cases over a converged fleet that is then changed.
func TestPass(t *testing.T) {
	web := deployYAML("web", 2, "198.18.0.1:5000/web:1", "")
	cases := []struct {
		name  string
		start map[string]string // repository the fleet converges on first
		then  map[string]string // repository of the pass checked (start when nil)
		skip  bool              // render the second repository unvalidated
		setup func(*fleetSim)
		check func(*testing.T, *fleetSim, *Pass)
	}{{
		name:  "a machine whose digest matches is told nothing; one that differs gets the next generation",
		start: map[string]string{"web.yaml": web},
		setup: func(s *fleetSim) { s.machine("m2").digest = "something else" },
		check: func(t *testing.T, s *fleetSim, p *Pass) {
			for _, m := range p.Machines {
				switch {
				case m.Name == "m2" && (m.Send == nil || m.Generation != s.machine("m2").gen+1):
					t.Fatalf("m2: %+v, agent generation %d", m, s.machine("m2").gen)
				case m.Name != "m2" && m.Send != nil:
					t.Fatalf("%s told %+v", m.Name, m)
				}
			}
		},
	}, {
		name: "unschedulable pods carry the scheduler's message",
		then: map[string]string{"big.yaml": deployYAML("big", 1, "big:1", "") + "        resources: {requests: {cpu: '64'}}\n"},
		check: func(t *testing.T, s *fleetSim, p *Pass) {
			if len(p.Unschedulable) != 1 || !strings.HasPrefix(p.Unschedulable[0].Message, "0/3 machines are available: ") ||
				!strings.Contains(p.Unschedulable[0].Message, "insufficient cpu") {
				t.Fatalf("unschedulable %+v", p.Unschedulable)
			}
			if p.Converged || p.Changes() != 0 {
				t.Fatalf("converged %v, %d sends", p.Converged, p.Changes())
			}
			if txt := text(t, p); !strings.Contains(txt, "pending  default/big-") || !strings.Contains(txt, "insufficient cpu") {
				t.Fatalf("text:\n%s", txt)
			}
		},
	}, {
		name: "a pod fixed to its machine is admitted there first, or refused with the reason and not sent",
		then: map[string]string{"ds.yaml": daemonSetYAML("big", "big:1", "") + "        resources: {requests: {memory: 64Gi}}\n"},
		check: func(t *testing.T, s *fleetSim, p *Pass) {
			if len(p.Unschedulable) != 2 {
				t.Fatalf("unschedulable %+v", p.Unschedulable)
			}
			for _, u := range p.Unschedulable {
				if !strings.Contains(u.Message, "insufficient memory") {
					t.Fatalf("%+v", u)
				}
			}
			if p.Summary.Start != 0 || p.Changes() != 0 {
				t.Fatalf("summary %+v", p.Summary)
			}
		},
	}, {
		name: "nodeSelector and taints steer placement; a DaemonSet runs where it is eligible",
		then: map[string]string{
			"ssd.yaml": deployYAML("ssd", 4, "ssd:1", "      nodeSelector: {disk: ssd}\n"),
			"ds.yaml":  daemonSetYAML("gpu", "gpu:1", "      tolerations: [{key: dedicated, operator: Exists}]\n      nodeSelector: {kubernetes.io/hostname: m3}\n"),
		},
		check: func(t *testing.T, s *fleetSim, p *Pass) {
			for _, a := range p.Pods {
				if strings.HasPrefix(a.Name, "ssd-") && a.Machine == "m3" {
					t.Fatalf("ssd pod on m3: %+v", a)
				}
				if strings.HasPrefix(a.Name, "gpu-") && a.Machine != "m3" {
					t.Fatalf("gpu pod off m3: %+v", a)
				}
			}
			s.apply(p, nil)
			s.step()
			s.converge(10, nil)
			if r := s.running(); len(r) != 5 {
				t.Fatalf("running %v", r)
			}
		},
	}, {
		name: "a pod that cannot be resolved is named with its place in the repository and not sent",
		then: map[string]string{"bad.yaml": deployYAML("bad", 1, "bad:1", "") + "        env: [{name: X, valueFrom: {configMapKeyRef: {name: nope, key: k}}}]\n"},
		skip: true,
		check: func(t *testing.T, s *fleetSim, p *Pass) {
			if len(p.Errors) != 1 {
				t.Fatalf("errors %+v", p.Errors)
			}
			e := p.Errors[0]
			if e.Object != "Deployment default/bad" || e.Pos.File != "bad.yaml" || e.Pos.Line != 1 || !strings.Contains(e.Message, "not found") {
				t.Fatalf("error %+v", e)
			}
			if p.Changes() != 0 {
				t.Fatal("a set was sent for a pod that cannot be resolved")
			}
			if txt := text(t, p); !strings.Contains(txt, "error: bad.yaml:1") {
				t.Fatalf("text:\n%s", txt)
			}
		},
	}, {
		name:  "a copy of a pod on another machine than the one it is wanted on is stopped there",
		start: map[string]string{"web.yaml": web},
		setup: func(s *fleetSim) {
			var from, to *simMachine
			for _, m := range s.machines {
				switch {
				case len(m.pods) > 0 && from == nil:
					from = m
				case len(m.pods) == 0 && to == nil:
					to = m
				}
			}
			dup := *from.pods[0]
			to.pods = append(to.pods, &dup)
			to.set = append(to.set, dup.pod)
			to.digest = api.DesiredPods{Pods: to.set}.Digest()
		},
		check: func(t *testing.T, s *fleetSim, p *Pass) {
			var stops []PodAction
			for _, a := range p.Pods {
				if a.Action == Stop {
					stops = append(stops, a)
				}
			}
			if len(stops) != 1 || !strings.HasPrefix(stops[0].Reason, "wanted on m") || p.Changes() != 1 {
				t.Fatalf("stops %+v, %d sends", stops, p.Changes())
			}
			s.apply(p, nil)
			s.step()
			s.converge(10, nil)
			s.noDuplicates()
		},
	}, {
		name: "a running pod that cannot be resolved holds its machine back, and the machine takes no new pod",
		start: map[string]string{
			"cm.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\n",
			"cfg.yaml": deployYAML("cfg", 1, "cfg:1", "") + "        env: [{name: K, valueFrom: {configMapKeyRef: {name: c, key: k}}}]\n",
		},
		then: map[string]string{
			"cfg.yaml": deployYAML("cfg", 1, "cfg:1", "") + "        env: [{name: K, valueFrom: {configMapKeyRef: {name: c, key: k}}}]\n",
			"web.yaml": deployYAML("web", 2, "web:1", ""),
		},
		skip: true,
		check: func(t *testing.T, s *fleetSim, p *Pass) {
			var held string
			for _, m := range p.Machines {
				if m.Held != "" {
					if held != "" || m.Send != nil {
						t.Fatalf("machines %+v", p.Machines)
					}
					held = m.Name
				}
			}
			if held == "" || len(p.Errors) != 1 || p.Errors[0].Object != "Deployment default/cfg" {
				t.Fatalf("held %q, errors %+v", held, p.Errors)
			}
			for _, a := range p.Pods {
				if a.Action == Start && a.Machine == held {
					t.Fatalf("new pod on the held machine: %+v", a)
				}
			}
			if !strings.Contains(text(t, p), held+"  ! held: pod default/cfg-") {
				t.Fatalf("text:\n%s", text(t, p))
			}
		},
	}, {
		name:  "a replacement that cannot be resolved keeps the running incarnation",
		start: map[string]string{"debug.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: debug}\nspec:\n  containers: [{name: sh, image: sh:1}]\n"},
		then: map[string]string{"debug.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: debug}\nspec:\n  containers:\n  - name: sh\n    image: sh:2\n" +
			"    env: [{name: K, valueFrom: {configMapKeyRef: {name: nope, key: k}}}]\n"},
		skip: true,
		check: func(t *testing.T, s *fleetSim, p *Pass) {
			held := 0
			for _, m := range p.Machines {
				if m.Held != "" {
					held++
				}
			}
			if held != 1 || p.Changes() != 0 || len(p.Errors) != 1 {
				t.Fatalf("held %d, %d sends, errors %+v", held, p.Changes(), p.Errors)
			}
			if r := s.running(); len(r["default/debug"]) != 1 {
				t.Fatalf("running %v", r)
			}
		},
	}, {
		name: "a machine that left the repository is named and told nothing",
		setup: func(s *fleetSim) {
			s.machines = append(s.machines, &simMachine{name: "old", reachable: true})
		},
		check: func(t *testing.T, s *fleetSim, p *Pass) {
			m := p.Machines[len(p.Machines)-1]
			if m.Name != "old" || m.InRepository || m.Send != nil {
				t.Fatalf("old: %+v", m)
			}
			if !strings.Contains(text(t, p), "old  ! not in the repository") {
				t.Fatal("text does not name the machine")
			}
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newFleetSim(t, load(t, repo(c.start)))
			s.converge(20, nil)
			if c.then != nil {
				d, err := render.Load(context.Background(), repo(c.then), render.Options{SkipValidation: c.skip})
				if err != nil {
					t.Fatal(err)
				}
				s.desired = d
			}
			if c.setup != nil {
				c.setup(s)
			}
			p, err := Plan(Input{Desired: s.desired, Observed: s.observe(), Memory: s.memory, Now: s.now}, s.opts)
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, s, p)
		})
	}
}

func text(t *testing.T, p *Pass) string {
	t.Helper()
	var b strings.Builder
	if err := WriteText(&b, p, false); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestConfigMapChangeUpdatesInPlace: a new ConfigMap content keeps the
// pods (same UID and hash, nothing rolls) and says which see it when.
func TestConfigMapChangeUpdatesInPlace(t *testing.T) {
	s := newFleetSim(t, load(t, quickstart(t, "1")))
	s.converge(20, nil)
	before := s.running()
	uids, ages := map[string]string{}, map[string]int{}
	for _, m := range s.machines {
		for _, p := range m.pods {
			uids[p.pod.Key()], ages[p.pod.Key()] = p.pod.UID, p.age
		}
	}
	fsys := quickstart(t, "1")
	fsys["app.yaml"].Data = []byte(strings.Replace(string(fsys["app.yaml"].Data), "Hello from berth", "Hello again", 1))
	s.desired = load(t, fsys)
	p := s.plan()
	if p.Changes() != 3 {
		t.Fatalf("%d machines told, want 3", p.Changes())
	}
	for _, a := range p.Pods {
		if a.Action != Update || a.UID != uids[a.Key()] ||
			a.Reason != "ConfigMap echo-config changed: files updated in place; seen only after a restart: echo-config (env GREETING)" {
			t.Fatalf("%+v", a)
		}
	}
	s.converge(10, nil)
	if after := s.running(); !reflect.DeepEqual(before, after) {
		t.Fatalf("pods changed: %v -> %v", before, after)
	}
	for _, m := range s.machines {
		for _, p := range m.pods {
			if p.age <= ages[p.pod.Key()] {
				t.Fatalf("%s was restarted", p.pod.Key())
			}
		}
	}
}

// TestSecretsStayOut: a Secret's value reaches the agent's set and
// nothing else: not the pass's JSON, its text, or its memory.
func TestSecretsStayOut(t *testing.T) {
	const value = "hunter2-very-secret"
	files := map[string]string{
		"secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: " + value + "}\n",
		"web.yaml":    deployYAML("web", 1, "web:1", "") + "        env: [{name: PW, valueFrom: {secretKeyRef: {name: db, key: password}}}]\n",
	}
	s := newFleetSim(t, load(t, repo(files)))
	p := s.plan()
	sent := false
	for _, m := range p.Machines {
		if m.Send != nil {
			b, _ := json.Marshal(m.Send)
			sent = sent || strings.Contains(string(b), value)
		}
	}
	if !sent {
		t.Fatal("the secret did not reach the agent's set")
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var tb strings.Builder
	WriteText(&tb, p, true)
	for what, out := range map[string]string{"json": string(b), "text": tb.String(), "fmt": fmt.Sprintf("%+v %#v", *p, p.Memory)} {
		if strings.Contains(out, value) {
			t.Fatalf("secret value in the pass's %s", what)
		}
	}
}

// TestPassDeterministic: the same input gives the same pass, also from a
// memory that went through JSON (as the status branch keeps it).
func TestPassDeterministic(t *testing.T) {
	s := newFleetSim(t, load(t, quickstart(t, "1")))
	for range 3 {
		s.apply(s.plan(), nil)
		s.step()
	}
	in := Input{Desired: s.desired, Observed: s.observe(), Memory: s.memory, Now: s.now}
	a, err := Plan(in, s.opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s.memory)
	in.Memory = Memory{}
	if err := json.Unmarshal(b, &in.Memory); err != nil {
		t.Fatal(err)
	}
	c, err := Plan(in, s.opts)
	if err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jc, _ := json.Marshal(c)
	if string(ja) != string(jc) {
		t.Fatalf("passes differ:\n%s\n%s", ja, jc)
	}
}

func TestPodUID(t *testing.T) {
	a := podUID("default", "web-1", "abc")
	if a != podUID("default", "web-1", "abc") || len(a) != 36 || strings.Count(a, "-") != 4 {
		t.Fatalf("uid %q", a)
	}
	for _, other := range []string{podUID("default", "web-1", "abd"), podUID("default", "web-2", "abc"), podUID("other", "web-1", "abc")} {
		if other == a {
			t.Fatal("two pods share a UID")
		}
	}
}

// TestSecretChangeSeenThroughLastSet: a Secret's new value is not in
// memory (Secrets are never digested), but the set this process last sent
// tells the pass which pod sees it and when.
func TestSecretChangeSeenThroughLastSet(t *testing.T) {
	files := func(pw string) fstest.MapFS {
		return repo(map[string]string{
			"secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: " + pw + "}\n",
			"web.yaml": deployYAML("web", 1, "web:1", "") +
				"        env: [{name: PW, valueFrom: {secretKeyRef: {name: db, key: password}}}]\n",
		})
	}
	s := newFleetSim(t, load(t, files("one")))
	s.converge(10, nil)
	last := map[string]*api.DesiredPods{}
	for _, m := range s.machines {
		last[m.name] = &api.DesiredPods{Generation: m.gen, Pods: m.set}
	}
	s.desired = load(t, files("two"))
	for _, withLast := range []bool{false, true} {
		in := Input{Desired: s.desired, Observed: s.observe(), Memory: s.memory, Now: s.now}
		if withLast {
			in.Last = last
		}
		p, err := Plan(in, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Changes() != 1 {
			t.Fatalf("%d machines told, want the one running web", p.Changes())
		}
		want := Keep
		if withLast {
			want = Update
		}
		for _, a := range p.Pods {
			if a.Action != want {
				t.Fatalf("last set %v: %+v", withLast, a)
			}
			if withLast && a.Reason != "Secret db changed; seen only after a restart: db (env PW)" {
				t.Fatalf("reason %q", a.Reason)
			}
		}
	}
}
