package lab

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string // "" for valid
	}{
		{Options{Nodes: 3, Dir: "/var/lib/berth-lab"}, ""},
		{Options{Nodes: MaxNodes, Dir: "lab"}, ""},
		{Options{Nodes: 0, Dir: "/x"}, "nodes: 0"},
		{Options{Nodes: MaxNodes + 1, Dir: "/x"}, "nodes: 65"},
		{Options{Nodes: 1}, "dir: must be set"},
		{Options{Nodes: 1, Dir: "/"}, "must not be /"},
		{Options{Nodes: 1, Dir: "/tmp/my lab"}, "must not contain"},
		{Options{Nodes: 1, Dir: "/tmp/100%"}, "must not contain"},
	} {
		err := tc.opts.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.opts, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error containing %q", tc.opts, err, tc.want)
		}
	}
}

func TestLayout(t *testing.T) {
	l := layout("/srv/lab", 3)
	if l.RunDir != "/srv/lab/run" {
		t.Errorf("run dir %s", l.RunDir)
	}
	want := []struct {
		name, netns, addr, pods, ns string
	}{
		{"lab1", "berth-lab1", "198.18.0.11/24", "198.18.64.0/24", "berth-lab1"},
		{"lab2", "berth-lab2", "198.18.0.12/24", "198.18.65.0/24", "berth-lab2"},
		{"lab3", "berth-lab3", "198.18.0.13/24", "198.18.66.0/24", "berth-lab3"},
	}
	if len(l.Machines) != len(want) {
		t.Fatalf("%d machines", len(l.Machines))
	}
	for i, w := range want {
		m := l.Machines[i]
		if m.Name != w.name || m.Netns != w.netns || m.Address.String() != w.addr || m.PodCIDR.String() != w.pods || m.Agent.Namespace != w.ns {
			t.Errorf("machine %d: %s %s %s %s %s, want %v", i+1, m.Name, m.Netns, m.Address, m.PodCIDR, m.Agent.Namespace, w)
		}
		if m.NetnsPath != "/run/netns/"+w.netns || m.HostLink != w.netns {
			t.Errorf("machine %d: netns %s, host link %s", i+1, m.NetnsPath, m.HostLink)
		}
		if m.Agent.Socket != "/srv/lab/run/"+w.name+"/agent.sock" || m.Agent.ContainerdAddress != m.Containerd.Address {
			t.Errorf("machine %d: agent %+v", i+1, m.Agent)
		}
	}
	// Every machine address and pod CIDR lies in the lab range; the last
	// machine's pod CIDR is the last /24 of the pod range.
	last := layout("/srv/lab", MaxNodes).Machines[MaxNodes-1]
	if last.PodCIDR.String() != "198.18.127.0/24" || !PodCIDR.Contains(last.PodCIDR.Addr()) {
		t.Errorf("machine %d: pod CIDR %s", MaxNodes, last.PodCIDR)
	}
	if !LabRange.Contains(last.Address.Addr()) || !MachineNet.Contains(last.Address.Addr()) {
		t.Errorf("machine %d: address %s", MaxNodes, last.Address)
	}
	if !LabRange.Contains(ServiceCIDR.Addr()) || ServiceCIDR.Overlaps(PodCIDR) || ServiceCIDR.Overlaps(MachineNet) {
		t.Error("service CIDR overlaps")
	}
}

func TestRunDirForLongDir(t *testing.T) {
	long := "/tmp/" + strings.Repeat("d", 90)
	run := runDirFor(long)
	if strings.HasPrefix(run, long) {
		t.Fatalf("run dir %s is under the long dir", run)
	}
	if run != runDirFor(long) {
		t.Error("run dir is not a function of the lab dir")
	}
	for _, m := range layout(long, MaxNodes).Machines {
		for _, s := range []string{m.Containerd.Address + ".ttrpc", m.Agent.Socket} {
			if len(s) > maxSocketPath {
				t.Errorf("socket %s: %d bytes", s, len(s))
			}
		}
	}
	if got := runDirFor("/tmp/lab"); got != "/tmp/lab/run" {
		t.Errorf("short dir: run dir %s", got)
	}
}

// testLab is a laid-out lab with made-up host keys.
func testLab(t *testing.T, n int) *Lab { return FakeLab(t, "/srv/lab", n) }

func TestFleetFilesNeedsMachines(t *testing.T) {
	_, err := readExample(fstest.MapFS{"app.yaml": {Data: []byte("{}")}, ".git/x": {}})
	if err == nil || !strings.Contains(err.Error(), "machines.yaml") {
		t.Errorf("got %v, want an error about machines.yaml", err)
	}
}

func TestKnownHostsAndEnv(t *testing.T) {
	l := testLab(t, 2)
	kh := string(knownHosts(l))
	for _, m := range l.Machines {
		if !strings.Contains(kh, m.Name+","+m.Address.Addr().String()+" "+m.HostKey+"\n") {
			t.Errorf("known_hosts lacks %s:\n%s", m.Name, kh)
		}
	}
	env := string(envFile(l))
	for _, want := range []string{
		"export BERTH_REPO=/srv/lab/fleet.git\n",
		"export BERTH_SSH_KEY=/srv/lab/id_ed25519\n",
		"export BERTH_KNOWN_HOSTS=/srv/lab/known_hosts\n",
	} {
		if !strings.Contains(env, want) {
			t.Errorf("lab.env lacks %q:\n%s", want, env)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	j := &journal{path: filepath.Join(dir, stateFile), st: state{Version: stateVersion, Started: time.Now(), Lab: layout(dir, 2)}}
	if err := j.record(func(s *state) {
		s.Made.Namespaces = append(s.Made.Namespaces, "berth-lab1")
		s.Made.Processes = append(s.Made.Processes, process{Name: "sshd-lab1", PID: 42, Start: 7})
	}); err != nil {
		t.Fatal(err)
	}
	st, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Made.Namespaces[0] != "berth-lab1" || st.Made.Processes[0].PID != 42 || st.Lab.Machines[1].Address != netip.MustParsePrefix("198.18.0.12/24") {
		t.Errorf("read back %+v", st)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(dir); !errors.Is(err, errCorrupt) {
		t.Errorf("corrupt state: got %v", err)
	}
	if _, err := readState(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing state: got %v", err)
	}
}

func TestProcessIdentity(t *testing.T) {
	self := os.Getpid()
	start, err := startTime(self)
	if err != nil {
		t.Fatal(err)
	}
	if !(process{PID: self, Start: start}).alive() {
		t.Error("this process is not alive")
	}
	// The same pid with another start time is another process: never
	// signalled.
	if (process{PID: self, Start: start + 1}).alive() {
		t.Error("a recycled pid counts as alive")
	}
	if err := (process{Name: "other", PID: self, Start: start + 1}).signal(9); err != nil {
		t.Errorf("signal a recycled pid: %v", err)
	}
}

func TestLabEntries(t *testing.T) {
	for name, want := range map[string]bool{
		"lab1": true, "lab64": true, "run": true, "registry": true, "fleet.git": true,
		"id_ed25519": true, "id_ed25519.pub": true, "known_hosts": true, "lab.env": true,
		"lab.json": true, "lab.json.tmp": true,
		"labx": false, "notes.txt": false, "lab1.bak": false, ".git": false,
	} {
		if got := labEntry.MatchString(name); got != want {
			t.Errorf("%s: lab entry %v, want %v", name, got, want)
		}
	}
}
