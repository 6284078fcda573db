package sshx

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/render/api/v1alpha1"
)

func TestParseFacts(t *testing.T) {
	out := `Welcome! (an rc file talking)
berth-probe-begin
uname=Linux aarch64
kernel=6.1.0-18-arm64
os_name="Debian GNU/Linux 12 (bookworm)"
init=systemd
bin_runc=/usr/sbin/runc
bin_sha256sum=/usr/bin/sha256sum
bin_systemctl=/usr/bin/systemctl
cni=/usr/lib/cni
nftables=nftables v1.0.6 (Lester Gooch #5)
containerd_running=1
installed_sha256=aaaa
stale_pidfile=1
unit_sha256=bbbb
unit_active=active
unit_pid=812
unit_exe_sha256=cccc
berth-probe-end
`
	got, err := parseFacts([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := facts{
		Platform:          Platform{OS: "linux", Arch: "arm64"},
		Kernel:            "6.1.0-18-arm64",
		Distro:            "Debian GNU/Linux 12 (bookworm)",
		Init:              "systemd",
		Bins:              map[string]string{"runc": "/usr/sbin/runc", "sha256sum": "/usr/bin/sha256sum", "systemctl": "/usr/bin/systemctl"},
		CNIDir:            "/usr/lib/cni",
		NFTables:          "nftables v1.0.6 (Lester Gooch #5)",
		ContainerdRunning: true,
		InstalledSHA256:   "aaaa",
		StalePIDFile:      true,
		UnitSHA256:        "bbbb",
		UnitActive:        "active",
		UnitPID:           812,
		UnitExeSHA256:     "cccc",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("parseFacts (-want +got):\n%s", d)
	}
	if _, err := parseFacts([]byte("uname=Linux x86_64\n")); err == nil {
		t.Errorf("output without markers parsed")
	}
	if _, err := parseFacts([]byte("berth-probe-begin\nberth-probe-end\n")); err == nil {
		t.Errorf("output without uname parsed")
	}
}

// TestProbeScriptRuns runs the probe here, with /bin/sh, and parses it.
func TestProbeScriptRuns(t *testing.T) {
	root := t.TempDir()
	m := &v1alpha1.Machine{}
	m.Spec.Agent.StateDir = filepath.Join(root, "state")
	m.Spec.Agent.BinaryPath = filepath.Join(root, "berth")
	p, err := resolvePaths(m)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/bin/sh", "-c", probeScript(p)).Output()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	f, err := parseFacts(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if f.Platform.OS != "linux" || f.Kernel == "" || f.Init == "" || f.Bins["sha256sum"] == "" {
		t.Errorf("probe found %+v", f)
	}
	if f.InstalledSHA256 != "" || f.AgentPID != 0 {
		t.Errorf("probe found an agent in an empty directory: %+v", f)
	}
}

func TestParseUname(t *testing.T) {
	for in, want := range map[string]Platform{
		"Linux x86_64":  {"linux", "amd64"},
		"Linux aarch64": {"linux", "arm64"},
		"Linux armv7l":  {"linux", "arm"},
		"Linux riscv64": {"linux", "riscv64"},
		"FreeBSD amd64": {"freebsd", "amd64"},
		"Linux sparc64": {"linux", "sparc64"},
	} {
		got, err := parseUname(in)
		if err != nil || got != want {
			t.Errorf("parseUname(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseUname("Linux"); err == nil {
		t.Errorf("parseUname of one word succeeded")
	}
}

func TestCheckPrerequisites(t *testing.T) {
	all := facts{
		Bins:   map[string]string{"runc": "/usr/sbin/runc", "sha256sum": "/usr/bin/sha256sum", "setsid": "/usr/bin/setsid", "nohup": "/usr/bin/nohup", "systemctl": "/usr/bin/systemctl"},
		CNIDir: "/usr/lib/cni", NFTables: "kernel module nf_tables loaded",
	}
	if err := missingError(checkPrerequisites(all, InitDetached, "/run/containerd/containerd.sock", true)); err != nil {
		t.Errorf("everything there: %v", err)
	}
	none := facts{Bins: map[string]string{}}
	ps := checkPrerequisites(none, InitDetached, "/run/containerd/containerd.sock", false)
	var names []string
	for _, p := range ps {
		if !p.OK {
			names = append(names, p.Name)
		}
	}
	if want := "containerd runc CNI plugins nftables sha256sum setsid nohup"; strings.Join(names, " ") != want {
		t.Errorf("missing %q, want %q", names, want)
	}
	err := missingError(ps)
	if !errors.Is(err, ErrPrerequisites) || !strings.Contains(err.Error(), "containernetworking-plugins") {
		t.Errorf("missingError = %v", err)
	}
	if got := checkPrerequisites(none, InitSystemd, "x", false); got[len(got)-1].Name != "systemctl" {
		t.Errorf("systemd mode does not check systemctl: %+v", got)
	}
	running := all
	running.ContainerdRunning = true
	if ps := checkPrerequisites(running, InitDetached, "/x.sock", false); ps[0].OK || !strings.Contains(ps[0].Detail, "a containerd runs") {
		t.Errorf("containerd running elsewhere: %+v", ps[0])
	}
}

func TestAgreeVersion(t *testing.T) {
	for _, c := range []struct {
		agent     agentclient.VersionInfo
		ctrl, api string
		want      string
		wantErr   bool
	}{
		{agentclient.VersionInfo{Version: "1.2.0", APIVersion: "v1"}, "1.2.0", "v1", "same version 1.2.0", false},
		{agentclient.VersionInfo{Version: "1.2.0", APIVersion: "v1"}, "1.3.0", "v1", "same API v1 (agent 1.2.0, controller 1.3.0)", false},
		{agentclient.VersionInfo{Version: "1.2.0", APIVersion: "v1"}, "2.0.0", "v2", "", true},
		{agentclient.VersionInfo{Version: "dev", APIVersion: ""}, "dev", "v1", "same version dev", false},
	} {
		got, err := agreeVersion(c.agent, c.ctrl, c.api)
		if got != c.want || (err != nil) != c.wantErr || (err != nil && !errors.Is(err, ErrVersionMismatch)) {
			t.Errorf("agreeVersion(%+v, %s, %s) = %q, %v", c.agent, c.ctrl, c.api, got, err)
		}
	}
}

func TestSystemdQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/local/bin/berth": "/usr/local/bin/berth",
		"--state-dir":          "--state-dir",
		"a b":                  `"a b"`,
		`say "hi"`:             `"say \"hi\""`,
		`back\slash`:           `"back\\slash"`,
		"100%":                 "100%%",
		"$HOME":                "$$HOME",
		"a;b":                  `"a;b"`,
		"":                     `""`,
	} {
		if got := systemdQuote(in); got != want {
			t.Errorf("systemdQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestRenderUnit(t *testing.T) {
	m := &v1alpha1.Machine{}
	m.Name = "lab1"
	p, err := resolvePaths(m)
	if err != nil {
		t.Fatal(err)
	}
	got := renderUnit(agentArgs(p, "lab1", "berth", false, nil))
	want := `# Written by berth bootstrap; berth machines uninstall removes it.
[Unit]
Description=berth node agent
After=network-online.target containerd.service
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/berth agent --state-dir /var/lib/berth --socket /run/berth/agent.sock --containerd-address /run/containerd/containerd.sock --log-dir /var/log/berth/pods --node-name lab1 --namespace berth
Restart=always
RestartSec=2
KillMode=process
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
`
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("unit (-want +got):\n%s", d)
	}
	if s := installUnitScript(p, true); !strings.Contains(s, "systemctl restart berth-agent.service") || !strings.Contains(s, "mv -f /etc/systemd/system/berth-agent.service.berth-new /etc/systemd/system/berth-agent.service") {
		t.Errorf("install script:\n%s", s)
	}
}

func TestResolvePaths(t *testing.T) {
	m := &v1alpha1.Machine{}
	p, err := resolvePaths(m)
	if err != nil {
		t.Fatal(err)
	}
	want := agentPaths{
		Binary: "/usr/local/bin/berth", StateDir: "/var/lib/berth", Socket: "/run/berth/agent.sock",
		LogDir: "/var/log/berth/pods", Containerd: "/run/containerd/containerd.sock",
		PIDFile: "/var/lib/berth/agent.pid", LogFile: "/var/lib/berth/agent.log", Unit: "/etc/systemd/system/berth-agent.service",
		Registries: "/var/lib/berth/registries.json",
	}
	if p != want {
		t.Errorf("defaults: %+v", p)
	}
	for _, c := range []struct {
		set  func(*v1alpha1.AgentSpec)
		want string
	}{
		{func(a *v1alpha1.AgentSpec) { a.StateDir = "var/lib/berth" }, "spec.agent.stateDir: \"var/lib/berth\" is not an absolute path"},
		{func(a *v1alpha1.AgentSpec) { a.StateDir = "/" }, "spec.agent.stateDir"},
		{func(a *v1alpha1.AgentSpec) { a.StateDir = "/var/lib" }, "system directory"},
		{func(a *v1alpha1.AgentSpec) { a.LogDir = "/usr" }, "spec.agent.logDir"},
		{func(a *v1alpha1.AgentSpec) { a.StateDir = "/var/lib/../../etc" }, "not a clean path"},
		{func(a *v1alpha1.AgentSpec) { a.BinaryPath = "/usr/bin/berth\nExecStartPre=/bin/sh" }, "control character"},
		{func(a *v1alpha1.AgentSpec) { a.Socket = "/run/" + strings.Repeat("s", 120) }, "longer than a unix socket path"},
	} {
		m := &v1alpha1.Machine{}
		c.set(&m.Spec.Agent)
		if _, err := resolvePaths(m); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error with %q", m.Spec.Agent, err, c.want)
		}
	}
	m = &v1alpha1.Machine{}
	m.Spec.Agent.ContainerdAddress = "unix:///run/k3s/containerd.sock"
	if p, err := resolvePaths(m); err != nil || p.Containerd != "/run/k3s/containerd.sock" {
		t.Errorf("unix:// address: %q, %v", p.Containerd, err)
	}
}

func TestBootstrapOptionsValidate(t *testing.T) {
	m := &v1alpha1.Machine{}
	m.Name = "lab1"
	ok := BootstrapOptions{Machine: m, BinaryPath: "/bin/berth", Version: "1.0.0"}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid options: %v", err)
	}
	bad := ok
	bad.Version, bad.BinaryPath, bad.Init = "", "", "launchd"
	bad.AgentArgs = []string{"--x\n"}
	err := bad.Validate()
	for _, want := range []string{"no berth binary", "no controller version", "launchd", "control character"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to say %q", err, want)
		}
	}
}
