package status

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/workload"
)

func pass(converged bool, ready int32) (*live.Pass, []live.Observed) {
	owner := workload.Owner{Kind: "Deployment", Namespace: "default", Name: "echo"}
	p := &live.Pass{
		Now:       time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
		Converged: converged,
		Machines: []live.MachinePlan{
			{Name: "lab1", Reachable: true, InRepository: true, Pods: 2},
			{Name: "lab2", Reachable: true, InRepository: true, Pods: 1},
		},
		Pods: []live.PodAction{
			{Machine: "lab1", Namespace: "default", Name: "echo-a", Owner: owner, Action: live.Keep},
			{Machine: "lab1", Namespace: "default", Name: "echo-b", Owner: owner, Action: live.Keep},
			{Machine: "lab2", Namespace: "default", Name: "echo-c", Owner: owner, Action: live.Start},
			{Machine: "lab2", Namespace: "default", Name: "echo-old", Owner: owner, Action: live.Stop},
		},
		Workloads: []live.WorkloadStatus{{Owner: owner, Reason: "rolling update", Status: workload.Status{Replicas: 3, ReadyReplicas: ready, UpdatedReplicas: 3}}},
	}
	pod := func(name string, ready bool) api.PodStatus {
		return api.PodStatus{Namespace: "default", Name: name, Phase: corev1.PodRunning, Ready: ready,
			ContainerStatuses: []api.ContainerStatus{{Name: "echo", Ready: ready, RestartCount: 1}}}
	}
	obs := []live.Observed{
		{Machine: "lab1", Reachable: true, Node: api.NodeInfo{AgentVersion: "v1", Generation: 4}, Pods: []api.PodStatus{pod("echo-b", true), pod("echo-a", true)}},
		{Machine: "lab2", Reachable: true, Node: api.NodeInfo{AgentVersion: "v1", Generation: 2}, Pods: []api.PodStatus{pod("echo-c", ready == 3)}},
	}
	return p, obs
}

func TestBuild(t *testing.T) {
	p, obs := pass(false, 2)
	s, err := Build(Input{Commit: "3f2a1c9e0000000000000000000000000000beef", Pass: p, Observed: obs})
	if err != nil {
		t.Fatal(err)
	}
	if s.Message != "status: 3f2a1c9 Progressing - 2/3 pods ready" {
		t.Errorf("message %q", s.Message)
	}
	for _, f := range []string{"summary.yaml", "memory.json", "machines/lab1.yaml", "machines/lab2.yaml", "objects/default/deployment/echo.yaml"} {
		if _, ok := s.Files[f]; !ok {
			t.Errorf("no %s in %v", f, keys(s.Files))
		}
	}
	if m := string(s.Files["machines/lab1.yaml"]); !strings.Contains(m, "name: default/echo-a") || strings.Index(m, "echo-a") > strings.Index(m, "echo-b") {
		t.Errorf("machines/lab1.yaml lists its pods out of order:\n%s", m)
	}
	if !strings.HasPrefix(s.Note, "Progressing - 2/3 pods ready\n  Deployment default/echo: rolling update") {
		t.Errorf("note %q", s.Note)
	}

	// The same pass later gives the same bytes: no commit without a change.
	p2, obs2 := pass(false, 2)
	p2.Now = p2.Now.Add(time.Hour)
	s2, _ := Build(Input{Commit: "3f2a1c9e0000000000000000000000000000beef", Pass: p2, Observed: obs2})
	for f, b := range s.Files {
		if string(s2.Files[f]) != string(b) {
			t.Errorf("%s differs an hour later with nothing changed", f)
		}
	}

	p3, obs3 := pass(true, 3)
	s3, _ := Build(Input{Commit: "3f2a1c9e", Pass: p3, Observed: obs3})
	if s3.Message != "status: 3f2a1c9 Ready - 3/3 pods ready" || s3.Summary.Outcome != Ready {
		t.Errorf("converged: %q", s3.Message)
	}

	s4, _ := Build(Input{Commit: "badc0ffee", Problems: []string{"app.yaml:23:13: error: Deployment default/echo: spec.replicas: cannot unmarshal"}, Running: "3f2a1c9e"})
	if s4.Message != "status: badc0ff Failed - 1 problem(s)" || !strings.Contains(s4.Note, "app.yaml:23:13") || !strings.Contains(s4.Note, "still running: 3f2a1c9e") {
		t.Errorf("failed: %q\n%s", s4.Message, s4.Note)
	}
	if !strings.Contains(string(s4.Files["summary.yaml"]), "running: 3f2a1c9e") {
		t.Errorf("failed summary:\n%s", s4.Files["summary.yaml"])
	}
	if _, ok := s4.Files[MemoryFile]; ok {
		t.Error("memory written with none given")
	}

	// A failure keeps the memory it is given, and the running commit's
	// pass when there is one.
	mem := p3.Memory
	s5, _ := Build(Input{Commit: "badc0ffee", Problems: []string{"x"}, Running: "3f2a1c9e", Memory: &mem})
	if _, ok := s5.Files[MemoryFile]; !ok || s5.Summary.Outcome != Failed {
		t.Errorf("failed with memory: outcome %s, files %v", s5.Summary.Outcome, keys(s5.Files))
	}
	s6, _ := Build(Input{Commit: "badc0ffee", Problems: []string{"x"}, Running: "3f2a1c9e", Pass: p3, Observed: obs3})
	if _, ok := s6.Files["objects/default/deployment/echo.yaml"]; !ok || s6.Summary.Outcome != Failed || s6.Summary.Pods.Ready != 3 {
		t.Errorf("failed beside a running pass: outcome %s, %d ready, files %v", s6.Summary.Outcome, s6.Summary.Pods.Ready, keys(s6.Files))
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A machine's file says its pod CIDR (from the network allocations in the
// memory), its Network and its pods' addresses.
func TestBuildMachineNetwork(t *testing.T) {
	p, obs := pass(true, 3)
	p.Memory.Network = []byte(`{"podCIDRs":{"lab1":"198.18.64.0/24"}}`)
	obs[0].Node.Network = api.NetworkStatus{Generation: 7, Digest: "abc", Error: "services: table full"}
	obs[0].Pods[0].PodIP = "198.18.64.5"
	s, err := Build(Input{Commit: "3f2a1c9e0000000000000000000000000000beef", Pass: p, Observed: obs})
	if err != nil {
		t.Fatal(err)
	}
	m := string(s.Files["machines/lab1.yaml"])
	for _, want := range []string{"podCIDR: 198.18.64.0/24", "ip: 198.18.64.5", "generation: 7", "error: 'services: table full'"} {
		if !strings.Contains(m, want) {
			t.Errorf("machines/lab1.yaml has no %q:\n%s", want, m)
		}
	}
	if strings.Contains(string(s.Files["machines/lab2.yaml"]), "podCIDR") {
		t.Error("lab2 has a pod CIDR it was not given")
	}
}
