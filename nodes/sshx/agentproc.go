package sshx

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"berth.dev/berth/render/api/v1alpha1"
)

// DefaultBinaryPath is where the berth binary is installed on a machine
// whose Machine document sets no spec.agent.binaryPath.
const DefaultBinaryPath = "/usr/local/bin/berth"

// unitName is the agent's systemd unit; unitPath where bootstrap writes it.
const (
	unitName = "berth-agent.service"
	unitPath = "/etc/systemd/system/" + unitName
)

// InitMode is how the agent is kept running on a machine.
type InitMode string

const (
	// InitAuto picks InitSystemd where systemd is PID 1, InitDetached
	// elsewhere.
	InitAuto InitMode = ""
	// InitSystemd runs the agent as the systemd unit berth-agent.service.
	InitSystemd InitMode = "systemd"
	// InitDetached runs the agent as a detached process (setsid, nohup)
	// whose pid is kept in agent.pid under the state directory.
	InitDetached InitMode = "detached"
)

// agentPaths are the agent's files on a machine.
type agentPaths struct {
	Binary, StateDir, Socket, LogDir, Containerd string
	PIDFile, LogFile, Unit                       string
	// Registries is the registries file (--registries) bootstrap writes
	// from the Cluster document's registries.
	Registries string
}

// resolvePaths reads the agent's paths from the Machine, defaults filled
// in, and checks them: they come from a repository and go into shell
// commands, a unit file and rm -rf.
func resolvePaths(m *v1alpha1.Machine) (agentPaths, error) {
	a := m.Spec.Agent
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	p := agentPaths{
		Binary:     or(a.BinaryPath, DefaultBinaryPath),
		StateDir:   or(a.StateDir, v1alpha1.DefaultStateDir),
		Socket:     or(a.Socket, v1alpha1.DefaultSocket),
		LogDir:     or(a.LogDir, v1alpha1.DefaultLogDir),
		Containerd: or(a.ContainerdAddress, v1alpha1.DefaultContainerd),
		Unit:       unitPath,
	}
	p.Containerd = strings.TrimPrefix(p.Containerd, "unix://")
	p.PIDFile = path.Join(p.StateDir, "agent.pid")
	p.LogFile = path.Join(p.StateDir, "agent.log")
	p.Registries = path.Join(p.StateDir, "registries.json")
	var errs []error
	for _, f := range []struct {
		field, v string
		dir      bool // removed whole by a purge
	}{
		{"binaryPath", p.Binary, false},
		{"stateDir", p.StateDir, true},
		{"socket", p.Socket, false},
		{"logDir", p.LogDir, true},
		{"containerdAddress", p.Containerd, false},
	} {
		if err := checkPath(f.v, f.dir); err != nil {
			errs = append(errs, fmt.Errorf("spec.agent.%s: %w", f.field, err))
		}
	}
	if len(p.Socket) > 107 {
		errs = append(errs, fmt.Errorf("spec.agent.socket: %q is longer than a unix socket path may be (107 bytes)", p.Socket))
	}
	return p, errors.Join(errs...)
}

// systemDirs are never an agent directory: a purge removes those whole.
var systemDirs = map[string]bool{
	"/bin": true, "/boot": true, "/dev": true, "/etc": true, "/home": true, "/lib": true, "/lib64": true,
	"/opt": true, "/proc": true, "/root": true, "/run": true, "/sbin": true, "/srv": true, "/sys": true,
	"/tmp": true, "/usr": true, "/var": true, "/usr/bin": true, "/usr/lib": true, "/usr/local": true,
	"/usr/local/bin": true, "/usr/sbin": true, "/var/lib": true, "/var/log": true, "/var/run": true,
}

func checkPath(p string, dir bool) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case !path.IsAbs(p):
		return fmt.Errorf("%q is not an absolute path", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not a clean path (want %q)", p, path.Clean(p))
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%q holds a control character", p)
	case p == "/":
		return errors.New(`"/" is not a place for the agent's files`)
	case dir && systemDirs[p]:
		return fmt.Errorf("%q is a system directory; give the agent a directory of its own", p)
	}
	return nil
}

// agentArgs is the agent's command line, binary first.
func agentArgs(p agentPaths, node, namespace string, registries bool, extra []string) []string {
	args := []string{p.Binary, "agent",
		"--state-dir", p.StateDir,
		"--socket", p.Socket,
		"--containerd-address", p.Containerd,
		"--log-dir", p.LogDir,
		"--node-name", node,
	}
	if namespace != "" {
		args = append(args, "--namespace", namespace)
	}
	if registries {
		args = append(args, "--registries", p.Registries)
	}
	return append(args, extra...)
}

// argsSHA256 is the sha256 of a command line as /proc/PID/cmdline holds
// it, to tell whether a running agent was started with these arguments.
func argsSHA256(args []string) string {
	h := sha256.Sum256([]byte(strings.Join(args, "\x00") + "\x00"))
	return hex.EncodeToString(h[:])
}

// systemdQuote quotes one word of an ExecStart= line: systemd splits on
// white space, honours double quotes and backslash escapes, and expands
// % specifiers and $ variables even inside quotes.
func systemdQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	return `"` + s + `"`
}

// renderUnit is the agent's systemd unit. KillMode=process: stopping or
// restarting the agent signals the agent alone; pods run under
// containerd's shims, outside the unit, and keep running while the agent
// restarts (the new agent adopts them).
func renderUnit(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = systemdQuote(a)
	}
	return `# Written by berth bootstrap; berth machines uninstall removes it.
[Unit]
Description=berth node agent
After=network-online.target containerd.service
Wants=network-online.target

[Service]
ExecStart=` + strings.Join(q, " ") + `
Restart=always
RestartSec=2
KillMode=process
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
`
}

// installUnitScript writes the unit read from stdin (atomically), reloads
// systemd and enables the unit; restart also (re)starts it, otherwise it
// is started if it is not running.
func installUnitScript(p agentPaths, restart bool) string {
	tmp := Quote(p.Unit + ".berth-new")
	verb := "start"
	if restart {
		verb = "restart"
	}
	return fmt.Sprintf(`set -e
umask 022
cat > %s
mv -f %s %s
systemctl daemon-reload
systemctl enable %s >/dev/null 2>&1
systemctl %s %s
`, tmp, tmp, Quote(p.Unit), Quote(unitName), verb, Quote(unitName))
}

// startDetachedScript starts the agent as a detached process: a session of
// its own (setsid, so it outlives the SSH session and no terminal hangup
// reaches it), stdin from /dev/null, output appended to agent.log, and its
// pid in agent.pid. A pidfile that names a live agent of ours makes it do
// nothing (say "running PID"); a stale one, naming a dead process or
// someone else's, is replaced. It prints "started PID".
func startDetachedScript(p agentPaths, args []string) string {
	pidfile := Quote(p.PIDFile)
	return agentCheckFunc(p) + fmt.Sprintf(`set -e
umask 077
mkdir -p %s
pid=$(cat %s 2>/dev/null) || pid=
if ours "$pid"; then echo "running $pid"; exit 0; fi
rm -f %s
cd /
setsid nohup %s </dev/null >>%s 2>&1 &
pid=$!
echo "$pid" > %s.new
mv -f %s.new %s
echo "started $pid"
`, Quote(p.StateDir), pidfile, pidfile, QuoteArgs(args...), Quote(p.LogFile), pidfile, pidfile, pidfile)
}

// stopDetachedScript stops the agent that the pidfile names, if it is
// ours: SIGTERM, then SIGKILL after the grace period. The agent leaves
// pods running when it stops. It prints "stopped PID" or "not running".
func stopDetachedScript(p agentPaths, grace time.Duration) string {
	pidfile := Quote(p.PIDFile)
	tenths := int(grace / (100 * time.Millisecond))
	return agentCheckFunc(p) + fmt.Sprintf(`pid=$(cat %s 2>/dev/null) || pid=
if ours "$pid"; then
	kill -TERM "$pid" 2>/dev/null || true
	i=0
	while ours "$pid" && [ "$i" -lt %d ]; do sleep 0.1; i=$((i+1)); done
	if ours "$pid"; then
		echo "killed $pid"
		kill -KILL "$pid" 2>/dev/null || true
		i=0
		while ours "$pid" && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
	else
		echo "stopped $pid"
	fi
else
	echo "not running"
fi
rm -f %s
`, pidfile, tenths, pidfile)
}
