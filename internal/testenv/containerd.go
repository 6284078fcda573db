package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// ContainerdBinary is Debian's containerd (1.6).
var ContainerdBinary = "containerd"

// defaultRuncRoot is where containerd's runc shim keeps runc's state unless
// a container's runtime options say otherwise (one directory per namespace).
const defaultRuncRoot = "/run/containerd/runc"

// stopGrace is how long containerd gets to stop on SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

// ContainerdDaemon is a containerd with its own root, state and socket
// under one directory in /run (kept short: a unix socket path has at most
// 108 bytes), the CRI plugin disabled so that it touches no CNI or
// iptables, and the overlayfs snapshotter. Registry hosts (plain HTTP and
// others) are a matter of the client's resolver, not of this daemon.
type ContainerdDaemon struct {
	dir     string
	address string
	d       *daemon
	lock    *os.File // flock held while the instance lives (see sweepStale)

	stopEvents func()
	start      func() (*daemon, error) // starts the daemon process again (Start)
	mu         sync.Mutex
	namespaces map[string]bool // every namespace an event came from
}

// Address is the path of containerd's gRPC socket.
func (c *ContainerdDaemon) Address() string { return c.address }

// Root is containerd's persistent state directory (content, snapshots,
// metadata).
func (c *ContainerdDaemon) Root() string { return filepath.Join(c.dir, "root") }

// State is containerd's runtime state directory (task bundles, shim
// sockets' addresses).
func (c *ContainerdDaemon) State() string { return filepath.Join(c.dir, "state") }

// LogPath is the file that containerd's stdout and stderr go to.
func (c *ContainerdDaemon) LogPath() string { return filepath.Join(c.dir, "containerd.log") }

// Client connects to the daemon; the connection is closed when the test
// ends.
func (c *ContainerdDaemon) Client(t testing.TB, opts ...client.Opt) *client.Client {
	t.Helper()
	cl, err := client.New(c.address, opts...)
	if err != nil {
		t.Fatalf("connect to containerd: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
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
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`

// Containerd starts a containerd for the test. When the test ends it
// removes every task and container left in it, stops the daemon (SIGTERM,
// then SIGKILL after 10 s), and then removes whatever is still there even
// if the daemon had died: shims started for it and their processes, runc
// state and the namespaces' parent cgroups, mounts under its directory,
// the directory itself. If the test failed, the daemon's log is printed.
//
// A test binary killed before its cleanup (a -timeout panic, say) leaves an
// instance behind; the next call of Containerd on the machine removes it.
func Containerd(t testing.TB) *ContainerdDaemon {
	t.Helper()
	RequireRoot(t)
	Require(t, ContainerdBinary, "containerd-shim-runc-v2", "runc")
	bin, _ := lookPath(ContainerdBinary)
	sweepStale(t)

	dir, err := os.MkdirTemp(instanceParent, instancePrefix)
	if err != nil {
		t.Fatalf("containerd: %v", err)
	}
	c := newInstance(dir)
	t.Cleanup(func() { c.cleanup(t) })
	// The lock is taken before config.toml exists: sweepStale only
	// considers directories with a config, so it never takes a new one
	// for stale.
	c.lock, err = os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = syscall.Flock(int(c.lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		t.Fatalf("containerd: lock %s: %v", dir, err)
	}

	cfg := filepath.Join(dir, "config.toml")
	data := fmt.Sprintf(containerdConfig, c.Root(), c.State(), c.address, filepath.Join(c.Root(), "opt"))
	if err := os.WriteFile(cfg, []byte(data), 0o644); err != nil {
		t.Fatalf("containerd: %v", err)
	}
	env := append(os.Environ(), "PATH="+daemonPath())
	c.start = func() (*daemon, error) {
		return startDaemon("containerd", c.LogPath(), env, bin, "--config", cfg)
	}
	c.Start(t)
	return c
}

// Stop stops the daemon (SIGTERM, then SIGKILL after 10 s) as a machine's
// containerd restarts: its shims and their containers live on. Start it
// again with Start; the test's end stops and cleans up either way.
func (c *ContainerdDaemon) Stop(t testing.TB) {
	t.Helper()
	if c.stopEvents != nil {
		c.stopEvents()
		c.stopEvents = nil
	}
	if c.d != nil && c.d.stop(stopGrace) {
		t.Logf("testenv: containerd did not stop within %v of SIGTERM; killed it", stopGrace)
	}
}

// Start starts the daemon (again, after Stop) and waits until it serves.
func (c *ContainerdDaemon) Start(t testing.TB) {
	t.Helper()
	if c.d != nil && !c.d.exited() {
		t.Fatal("testenv: containerd is running")
	}
	var err error
	if c.d, err = c.start(); err != nil {
		t.Fatal(err)
	}
	if err := waitUnixSocket(c.address, c.d, 30*time.Second); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	if err := c.watchNamespaces(); err != nil {
		t.Fatalf("containerd: %v", err)
	}
}

// Where instances live: short paths, for the socket.
const (
	instanceParent = "/run"
	instancePrefix = "berth-test-"
	lockName       = "lock"
)

func newInstance(dir string) *ContainerdDaemon {
	return &ContainerdDaemon{dir: dir, address: filepath.Join(dir, "containerd.sock"), namespaces: map[string]bool{}}
}

// watchNamespaces records the namespace of every event until cleanup, so
// that cleanup knows which namespaces' runc and cgroup directories to
// remove even when the test deleted the namespace itself.
func (c *ContainerdDaemon) watchNamespaces() error {
	cl, err := client.New(c.address)
	if err != nil {
		return fmt.Errorf("subscribe to events: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events, errs := cl.Subscribe(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case e := <-events:
				if e != nil && e.Namespace != "" {
					c.mu.Lock()
					c.namespaces[e.Namespace] = true
					c.mu.Unlock()
				}
			case <-errs:
				return
			}
		}
	}()
	c.stopEvents = func() {
		cancel()
		<-done
		cl.Close()
	}
	return nil
}

// sweepStale removes instances whose test binary died before cleaning up:
// their lock is free.
func sweepStale(t testing.TB) {
	dirs, _ := filepath.Glob(filepath.Join(instanceParent, instancePrefix+"*"))
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "config.toml")); err != nil {
			continue
		}
		f, err := os.Open(filepath.Join(dir, lockName))
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			t.Logf("testenv: removing stale containerd instance %s", dir)
			c := newInstance(dir)
			c.reap(t)
			os.RemoveAll(dir)
		}
		f.Close()
	}
}

// waitUnixSocket polls until a connection to path succeeds.
func waitUnixSocket(path string, d *daemon, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("%s exited: %v\n%s log:\n%s", d.name, d.waitErr, d.name, d.logTail(16<<10))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s socket %s not answering after %v: %w", d.name, path, timeout, err)
		}
	}
}

func (c *ContainerdDaemon) cleanup(t testing.TB) {
	if c.d != nil && !c.d.exited() {
		c.removeContainers(t)
	}
	if c.stopEvents != nil {
		c.stopEvents()
	}
	if c.d != nil {
		if c.d.stop(stopGrace) {
			t.Logf("testenv: containerd did not stop within %v of SIGTERM; killed it", stopGrace)
		}
		if t.Failed() {
			t.Logf("containerd log (%s):\n%s", c.LogPath(), c.d.logTail(64<<10))
		}
	}
	c.reap(t)
	if err := os.RemoveAll(c.dir); err != nil {
		t.Errorf("testenv: remove containerd directory: %v", err)
	}
	if c.lock != nil {
		c.lock.Close() // after the removal: see sweepStale
	}
}

// removeContainers deletes, through the API, every task and container the
// test left, in every namespace, so that the shims unmount and clean up as
// they would normally.
func (c *ContainerdDaemon) removeContainers(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.New(c.address, client.WithTimeout(5*time.Second))
	if err != nil {
		t.Logf("testenv: connect to containerd for cleanup: %v", err)
		return
	}
	defer cl.Close()
	nss, err := cl.NamespaceService().List(ctx)
	if err != nil {
		t.Logf("testenv: list containerd namespaces: %v", err)
		return
	}
	for _, ns := range nss {
		c.addNamespace(ns)
		nctx := namespaces.WithNamespace(ctx, ns)
		ctrs, err := cl.Containers(nctx)
		if err != nil {
			t.Logf("testenv: list containers in %s: %v", ns, err)
			continue
		}
		for _, ctr := range ctrs {
			if task, err := ctr.Task(nctx, nil); err == nil {
				if _, err := task.Delete(nctx, client.WithProcessKill); err != nil {
					t.Logf("testenv: delete task %s/%s: %v", ns, ctr.ID(), err)
				}
			}
			if err := ctr.Delete(nctx, client.WithSnapshotCleanup); err != nil {
				t.Logf("testenv: delete container %s/%s: %v", ns, ctr.ID(), err)
			}
		}
	}
}

// reap removes what the daemon left behind when it could not clean up
// itself (it died, or a shim hung): runc containers of its task bundles,
// shim processes started for it and everything under them, shim sockets,
// and mounts under its directory.
func (c *ContainerdDaemon) reap(t testing.TB) {
	bundles, _ := filepath.Glob(filepath.Join(c.State(), "io.containerd.runtime.v2.task", "*", "*"))
	for _, b := range bundles {
		ns, id := filepath.Base(filepath.Dir(b)), filepath.Base(b)
		c.addNamespace(ns)
		root := filepath.Join(runcRoot(b), ns)
		if _, err := os.Stat(filepath.Join(root, id)); err == nil {
			runc, _ := lookPath("runc")
			out, err := exec.Command(runc, "--root", root, "delete", "--force", id).CombinedOutput()
			if err != nil {
				t.Logf("testenv: runc delete --force %s/%s: %v: %s", ns, id, err, bytes.TrimSpace(out))
			}
		}
		if addr, err := os.ReadFile(filepath.Join(b, "address")); err == nil {
			sock := strings.TrimPrefix(strings.TrimSpace(string(addr)), "unix://")
			if strings.HasPrefix(sock, "/run/containerd/s/") {
				os.Remove(sock)
			}
		}
	}

	if procs := c.processes(); len(procs) > 0 {
		pids := withDescendants(procs)
		t.Logf("testenv: killing leftover processes %v and their descendants (%v)", procs, pids)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		waitGone(pids, 5*time.Second)
	}

	mounts, err := mountsUnder(c.dir)
	if err != nil {
		t.Logf("testenv: %v", err)
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("testenv: unmount %s: %v", m, err)
		}
	}

	// runc removes a container's state and cgroup (/<namespace>/<id> by
	// containerd's default spec) but not the namespace's directories above
	// them; rmdir removes those only if they are empty, that is, unused.
	c.mu.Lock()
	defer c.mu.Unlock()
	for ns := range c.namespaces {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns))
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", ns), filepath.Join(defaultRuncRoot, ns))
		for _, d := range dirs {
			syscall.Rmdir(d)
		}
	}
}

func (c *ContainerdDaemon) addNamespace(ns string) {
	c.mu.Lock()
	c.namespaces[ns] = true
	c.mu.Unlock()
}

// runcRoot is the runc root a task bundle's shim uses: from the runtime
// options the shim saved, else the default.
func runcRoot(bundle string) string {
	b, err := os.ReadFile(filepath.Join(bundle, "options.json"))
	if err != nil {
		return defaultRuncRoot
	}
	var opts struct {
		Root string `json:"root"`
	}
	if json.Unmarshal(b, &opts) != nil || opts.Root == "" {
		return defaultRuncRoot
	}
	return opts.Root
}

// processes finds the processes of this instance still running: the
// daemon and its shims name the directory on their command line (--config,
// -address), or run in it (a shim's working directory is its task bundle).
func (c *ContainerdDaemon) processes() []int {
	var pids []int
	for _, pid := range allPIDs() {
		if pid == os.Getpid() {
			continue
		}
		proc := filepath.Join("/proc", strconv.Itoa(pid))
		cmdline, err := os.ReadFile(filepath.Join(proc, "cmdline"))
		if err != nil {
			continue
		}
		cwd, _ := os.Readlink(filepath.Join(proc, "cwd"))
		if bytes.Contains(cmdline, []byte(c.dir+"/")) || strings.HasPrefix(cwd, c.dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat returns a process's parent and state from /proc/PID/stat.
func procStat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0][0], err == nil
}

// withDescendants returns roots and all their descendants, children first.
func withDescendants(roots []int) []int {
	children := map[int][]int{}
	for _, pid := range allPIDs() {
		if ppid, _, ok := procStat(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	var walk func(int)
	walk = func(pid int) {
		for _, c := range children[pid] {
			walk(c)
		}
		out = append(out, pid)
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}

// waitGone waits until none of pids is alive (zombies count as gone).
func waitGone(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		alive := false
		for _, pid := range pids {
			if _, state, ok := procStat(pid); ok && state != 'Z' {
				alive = true
				break
			}
		}
		if !alive {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mountsUnder lists the mount points at or under dir in this process's mount
// namespace, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	// Later mounts may sit on earlier ones: undo them in reverse, deepest
	// first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
