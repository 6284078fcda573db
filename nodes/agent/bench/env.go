package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// sbinPath is searched after $PATH for the Debian binaries.
var sbinPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinPath {
		c := filepath.Join(d, name)
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s not found on $PATH or in %s", name, strings.Join(sbinPath, ":"))
}

func daemonPath() string {
	p := os.Getenv("PATH")
	for _, d := range sbinPath {
		if !strings.Contains(":"+p+":", ":"+d+":") {
			p += ":" + d
		}
	}
	return strings.TrimPrefix(p, ":")
}

// child is a daemon started for the bench: own process group, SIGKILL
// when this process dies, output to a log file.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func startChild(name, logPath string, path string, args ...string) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "PATH="+daemonPath())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

func (c *child) logTail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %q

[debug]
  address = ""
  level = "warn"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`

// containerdDaemon is a private containerd under dir: its own root, state
// and socket, the CRI plugin disabled.
type containerdDaemon struct {
	dir, address string
	d            *child
}

func startContainerd(dir string) (*containerdDaemon, error) {
	bin, err := lookPath("containerd")
	if err != nil {
		return nil, err
	}
	for _, b := range []string{"containerd-shim-runc-v2", "runc"} {
		if _, err := lookPath(b); err != nil {
			return nil, err
		}
	}
	c := &containerdDaemon{dir: dir, address: filepath.Join(dir, "c.sock")}
	cfg := filepath.Join(dir, "containerd.toml")
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, containerdConfig, root, state, c.address, filepath.Join(root, "opt")), 0o644); err != nil {
		return nil, err
	}
	c.d, err = startChild("containerd", filepath.Join(dir, "containerd.log"), bin, "--config", cfg)
	if err != nil {
		return nil, err
	}
	if err := waitDial("unix", c.address, c.d, 30*time.Second); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

func waitDial(network, addr string, d *child, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("%s exited:\n%s", d.name, d.logTail())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering on %s after %v: %w", d.name, addr, timeout, err)
		}
	}
}

// removeAll deletes every task and container in namespace ns, so that the
// shims clean up as they normally do.
func (c *containerdDaemon) removeAll(ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.New(c.address, client.WithTimeout(5*time.Second))
	if err != nil {
		return
	}
	defer cl.Close()
	nctx := namespaces.WithNamespace(ctx, ns)
	ctrs, _ := cl.Containers(nctx)
	for _, ctr := range ctrs {
		if task, err := ctr.Task(nctx, nil); err == nil {
			task.Delete(nctx, client.WithProcessKill)
		}
		ctr.Delete(nctx, client.WithSnapshotCleanup)
	}
	// The shims leave runc's directory for the namespace (default root).
	os.Remove(filepath.Join("/run/containerd/runc", ns))
}

// stop stops the daemon and removes what it left: processes of this
// instance (shims, containers under them), mounts under dir.
func (c *containerdDaemon) stop() {
	if c.d != nil {
		c.d.stop(10 * time.Second)
	}
	killUnder(c.dir)
	unmountUnder(c.dir)
}

// killUnder kills processes whose command line names dir or whose working
// directory is under it (containerd's shims run in their task bundles).
func killUnder(dir string) {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		proc := filepath.Join("/proc", e.Name())
		cmdline, _ := os.ReadFile(filepath.Join(proc, "cmdline"))
		cwd, _ := os.Readlink(filepath.Join(proc, "cwd"))
		if strings.Contains(string(cmdline), dir+"/") || strings.HasPrefix(cwd, dir+"/") {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(pids) > 0 {
		time.Sleep(200 * time.Millisecond)
	}
}

// unmountUnder detaches every mount at or below dir, deepest first
// (network namespaces bind-mounted by the runtime, rootfs overlays).
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mounts = append(mounts, mp)
		}
	}
	f.Close()
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

const registryConfig = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: berth-bench
health:
  storagedriver:
    enabled: false
`

// startRegistry runs Debian's docker-registry on a free loopback port.
func startRegistry(dir string) (*child, string, error) {
	bin, err := lookPath("docker-registry")
	if err != nil {
		return nil, "", err
	}
	var lastErr error
	for attempt := range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, "", err
		}
		addr := l.Addr().String()
		l.Close()
		cfg := filepath.Join(dir, fmt.Sprintf("registry-%d.yml", attempt))
		if err := os.WriteFile(cfg, fmt.Appendf(nil, registryConfig, filepath.Join(dir, "registry"), addr), 0o644); err != nil {
			return nil, "", err
		}
		d, err := startChild("registry", filepath.Join(dir, "registry.log"), bin, "serve", cfg)
		if err != nil {
			return nil, "", err
		}
		if lastErr = waitDial("tcp", addr, d, 15*time.Second); lastErr == nil {
			return d, addr, nil
		}
		d.stop(time.Second)
	}
	return nil, "", lastErr
}
