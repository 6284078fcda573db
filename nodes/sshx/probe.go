package sshx

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Bootstrap errors callers act on.
var (
	// ErrPlatformMismatch: the machine's OS or architecture is not the
	// one the berth binary was built for.
	ErrPlatformMismatch = errors.New("platform mismatch")
	// ErrPrerequisites: the machine lacks something the agent needs.
	ErrPrerequisites = errors.New("prerequisites missing")
)

// Platform is an OS and architecture in Go's terms (GOOS, GOARCH).
type Platform struct{ OS, Arch string }

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// unameArch maps `uname -m` to GOARCH.
var unameArch = map[string]string{
	"x86_64":      "amd64",
	"amd64":       "amd64",
	"aarch64":     "arm64",
	"arm64":       "arm64",
	"armv6l":      "arm",
	"armv7l":      "arm",
	"i386":        "386",
	"i686":        "386",
	"riscv64":     "riscv64",
	"ppc64le":     "ppc64le",
	"s390x":       "s390x",
	"loongarch64": "loong64",
}

// parseUname reads `uname -sm` ("Linux x86_64").
func parseUname(s string) (Platform, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Platform{}, fmt.Errorf("uname -sm said %q", s)
	}
	arch, ok := unameArch[f[1]]
	if !ok {
		arch = f[1]
	}
	return Platform{OS: strings.ToLower(f[0]), Arch: arch}, nil
}

// elfPlatform reads the platform a Linux executable was built for from
// its ELF header.
func elfPlatform(f *elf.File) (Platform, error) {
	switch f.OSABI {
	case elf.ELFOSABI_NONE, elf.ELFOSABI_LINUX:
	default:
		return Platform{}, fmt.Errorf("an ELF executable for %v, not Linux", f.OSABI)
	}
	arch := ""
	switch f.Machine {
	case elf.EM_X86_64:
		arch = "amd64"
	case elf.EM_AARCH64:
		arch = "arm64"
	case elf.EM_386:
		arch = "386"
	case elf.EM_ARM:
		arch = "arm"
	case elf.EM_RISCV:
		arch = "riscv64"
	case elf.EM_PPC64:
		if f.ByteOrder.String() == "LittleEndian" {
			arch = "ppc64le"
		} else {
			arch = "ppc64"
		}
	case elf.EM_S390:
		arch = "s390x"
	case elf.EM_LOONGARCH:
		arch = "loong64"
	default:
		return Platform{}, fmt.Errorf("an ELF executable for machine %v, which berth does not know", f.Machine)
	}
	return Platform{OS: "linux", Arch: arch}, nil
}

// facts is what one probe of a machine found. The probe is one shell
// script, so that bootstrap costs one round trip to learn everything.
type facts struct {
	Platform Platform
	Kernel   string
	Distro   string // PRETTY_NAME of /etc/os-release
	Init     string // /proc/1/comm
	Bins     map[string]string
	CNIDir   string // where bridge, host-local and loopback are
	NFTables string // how nftables support was found: "nft ...", "module loaded", ...
	// ContainerdRunning: a process named containerd runs.
	ContainerdRunning bool

	InstalledSHA256 string // of the binary at the agent's binary path
	// RegistriesSHA256 is the sha256 of the registries file bootstrap
	// wrote for the agent, "" when there is none.
	RegistriesSHA256 string
	// The agent started by the pidfile (detached mode): its pid when it
	// is alive and ours, the sha256 of the executable it runs and of its
	// command line (NUL-separated).
	AgentPID        int
	AgentExeSHA256  string
	AgentArgsSHA256 string
	StalePIDFile    bool
	// The systemd unit (systemd mode).
	UnitSHA256 string // of the unit file as installed, "" when absent
	UnitActive string // systemctl is-active
	UnitPID    int    // MainPID
	// UnitExeSHA256 is the sha256 of the executable MainPID runs.
	UnitExeSHA256 string
}

const (
	probeBegin = "berth-probe-begin"
	probeEnd   = "berth-probe-end"
)

// agentCheckFunc is a shell function, ours PID, that succeeds when PID is
// alive and is the agent of this state directory run from this binary
// path: a pidfile may name a pid since reused by another process.
func agentCheckFunc(p agentPaths) string {
	return `ours() {
	[ -n "$1" ] && [ -r "/proc/$1/cmdline" ] || return 1
	c=$(tr '\0' '\n' < "/proc/$1/cmdline") || return 1
	[ "$(printf '%s\n' "$c" | sed -n 1p)" = ` + Quote(p.Binary) + ` ] || return 1
	printf '%s\n' "$c" | grep -qxF -e ` + Quote(p.StateDir) + `
}
`
}

// probeScript prints key=value lines about the machine between markers
// (the login shell's rc files may print before them). It changes nothing.
func probeScript(p agentPaths) string {
	var b strings.Builder
	b.WriteString(agentCheckFunc(p))
	fmt.Fprintf(&b, `echo %s
echo "uname=$(uname -sm)"
echo "kernel=$(uname -r)"
if [ -r /etc/os-release ]; then
	sed -n -e 's/^PRETTY_NAME=/os_name=/p' /etc/os-release
fi
echo "init=$(cat /proc/1/comm 2>/dev/null)"
for t in runc nft sha256sum setsid nohup systemctl; do
	p=$(command -v "$t" 2>/dev/null) && echo "bin_$t=$p"
done
for d in /usr/lib/cni /opt/cni/bin; do
	[ -x "$d/bridge" ] && [ -x "$d/host-local" ] && [ -x "$d/loopback" ] && echo "cni=$d" && break
done
if command -v nft >/dev/null 2>&1; then
	echo "nftables=$(nft --version 2>/dev/null | sed -n 1p)"
elif [ -d /sys/module/nf_tables ]; then
	echo "nftables=kernel module nf_tables loaded"
elif grep -qs '/nf_tables\.ko' "/lib/modules/$(uname -r)/modules.builtin"; then
	echo "nftables=kernel nf_tables built in"
elif grep -qs '/nf_tables\.ko' "/lib/modules/$(uname -r)/modules.dep"; then
	echo "nftables=kernel module nf_tables available"
fi
grep -qsx containerd /proc/[0-9]*/comm && echo containerd_running=1
`, probeBegin)
	bin := Quote(p.Binary)
	fmt.Fprintf(&b, `if [ -f %s ] && command -v sha256sum >/dev/null; then
	echo "installed_sha256=$(sha256sum < %s | cut -c1-64)"
fi
`, bin, bin)
	reg := Quote(p.Registries)
	fmt.Fprintf(&b, `if [ -f %s ]; then
	echo "registries_sha256=$(sha256sum < %s | cut -c1-64)"
fi
`, reg, reg)
	pidfile := Quote(p.PIDFile)
	fmt.Fprintf(&b, `if [ -f %s ]; then
	pid=$(cat %s 2>/dev/null)
	if ours "$pid"; then
		echo "agent_pid=$pid"
		echo "agent_exe_sha256=$(sha256sum < "/proc/$pid/exe" | cut -c1-64)"
		echo "agent_args_sha256=$(sha256sum < "/proc/$pid/cmdline" | cut -c1-64)"
	else
		echo stale_pidfile=1
	fi
fi
`, pidfile, pidfile)
	unit := Quote(p.Unit)
	fmt.Fprintf(&b, `if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v systemctl >/dev/null; then
	[ -f %s ] && echo "unit_sha256=$(sha256sum < %s | cut -c1-64)"
	echo "unit_active=$(systemctl is-active %s 2>/dev/null)"
	pid=$(systemctl show -p MainPID --value %s 2>/dev/null)
	if [ -n "$pid" ] && [ "$pid" != 0 ]; then
		echo "unit_pid=$pid"
		echo "unit_exe_sha256=$(sha256sum < "/proc/$pid/exe" | cut -c1-64)"
	fi
fi
echo %s
`, unit, unit, Quote(unitName), Quote(unitName), probeEnd)
	return b.String()
}

// parseFacts reads probeScript's output.
func parseFacts(out []byte) (facts, error) {
	i := bytes.Index(out, []byte(probeBegin+"\n"))
	j := bytes.LastIndex(out, []byte(probeEnd))
	if i < 0 || j < i {
		return facts{}, fmt.Errorf("probe output lacks its markers: %q", truncate(string(out), 200))
	}
	f := facts{Bins: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(out[i+len(probeBegin)+1 : j]))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch {
		case k == "uname":
			p, err := parseUname(v)
			if err != nil {
				return facts{}, err
			}
			f.Platform = p
		case k == "kernel":
			f.Kernel = v
		case k == "os_name":
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			f.Distro = strings.Trim(v, `'`)
		case k == "init":
			f.Init = v
		case strings.HasPrefix(k, "bin_"):
			f.Bins[strings.TrimPrefix(k, "bin_")] = v
		case k == "cni":
			f.CNIDir = v
		case k == "nftables":
			f.NFTables = v
		case k == "containerd_running":
			f.ContainerdRunning = true
		case k == "installed_sha256":
			f.InstalledSHA256 = v
		case k == "registries_sha256":
			f.RegistriesSHA256 = v
		case k == "agent_pid":
			f.AgentPID, _ = strconv.Atoi(v)
		case k == "agent_exe_sha256":
			f.AgentExeSHA256 = v
		case k == "agent_args_sha256":
			f.AgentArgsSHA256 = v
		case k == "stale_pidfile":
			f.StalePIDFile = true
		case k == "unit_sha256":
			f.UnitSHA256 = v
		case k == "unit_active":
			f.UnitActive = v
		case k == "unit_pid":
			f.UnitPID, _ = strconv.Atoi(v)
		case k == "unit_exe_sha256":
			f.UnitExeSHA256 = v
		}
	}
	if f.Platform.OS == "" {
		return facts{}, errors.New("probe output lacks uname")
	}
	return f, nil
}

// Prerequisite is one thing the agent needs on a machine, and whether the
// machine has it.
type Prerequisite struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"` // what was found, or what to install
}

// checkPrerequisites says, for each thing the agent needs, whether the
// machine has it. containerdAnswers is whether a connection to the
// containerd socket succeeded.
func checkPrerequisites(f facts, mode InitMode, containerdAddr string, containerdAnswers bool) []Prerequisite {
	var ps []Prerequisite
	add := func(name string, ok bool, found, missing string) {
		p := Prerequisite{Name: name, OK: ok, Detail: found}
		if !ok {
			p.Detail = missing
		}
		ps = append(ps, p)
	}
	// A containerd that runs but does not answer where the agent will
	// look is as good as none to the agent (and on a host that shares
	// one kernel between lab machines, it may be another machine's).
	switch {
	case containerdAnswers:
		add("containerd", true, "answers on "+containerdAddr, "")
	case f.ContainerdRunning:
		add("containerd", false, "", "a containerd runs, but nothing answers on "+containerdAddr+" (check spec.agent.containerdAddress, or wait for it to start)")
	default:
		add("containerd", false, "", "nothing answers on "+containerdAddr+" and no containerd runs (Debian package containerd)")
	}
	add("runc", f.Bins["runc"] != "", f.Bins["runc"], "runc not found on PATH (Debian package runc)")
	add("CNI plugins", f.CNIDir != "", f.CNIDir, "bridge, host-local and loopback not found in /usr/lib/cni or /opt/cni/bin (Debian package containernetworking-plugins)")
	add("nftables", f.NFTables != "", f.NFTables, "neither nft nor the kernel's nf_tables module found (Debian package nftables)")
	add("sha256sum", f.Bins["sha256sum"] != "", f.Bins["sha256sum"], "sha256sum not found, so an upload cannot be verified (Debian package coreutils)")
	switch mode {
	case InitSystemd:
		add("systemctl", f.Bins["systemctl"] != "", f.Bins["systemctl"], "systemd runs as PID 1 but systemctl is not on PATH")
	case InitDetached:
		add("setsid", f.Bins["setsid"] != "", f.Bins["setsid"], "setsid not found (Debian package util-linux)")
		add("nohup", f.Bins["nohup"] != "", f.Bins["nohup"], "nohup not found (Debian package coreutils)")
	}
	return ps
}

// missingError lists every missing prerequisite in one error.
func missingError(ps []Prerequisite) error {
	var missing []string
	for _, p := range ps {
		if !p.OK {
			missing = append(missing, p.Name+": "+p.Detail)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrPrerequisites, strings.Join(missing, "; "))
}
