package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sbinPath is searched for the Debian daemons and handed to them (containerd
// looks up its shims, the shims runc), since root's sbin directories are not
// always on a test runner's PATH.
var sbinPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// lookPath finds a binary on $PATH, then in sbinPath.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range sbinPath {
		c := filepath.Join(dir, name)
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in %s", name, strings.Join(sbinPath, ":"))
}

// daemonEnv is the environment of the lab's daemons: the caller's, with
// sbinPath appended to PATH.
func daemonEnv() []string {
	p := os.Getenv("PATH")
	for _, d := range sbinPath {
		if !strings.Contains(":"+p+":", ":"+d+":") {
			p += ":" + d
		}
	}
	env := []string{"PATH=" + strings.TrimPrefix(p, ":")}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PATH=") {
			env = append(env, e)
		}
	}
	return env
}

// daemon is a long-running process of the lab, started detached (its own
// session, stdin from /dev/null, output to a log file) so that it outlives
// the process that ran Up.
type daemon struct {
	name    string
	log     string
	proc    process
	done    chan struct{} // closed once the process has been reaped
	waitErr error         // valid after done
}

// startDaemon starts path with args in the network namespace at netns (the
// caller's when empty). The child enters the namespace by being forked from
// an OS thread that joined it (setns on a locked thread that is then thrown
// away), so nothing but the child ever runs in it.
func startDaemon(name, netns, logPath, path string, args ...string) (*daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer devnull.Close()

	cmd := exec.Command(path, args...)
	cmd.Env = daemonEnv()
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if netns == "" {
		err = cmd.Start()
	} else {
		err = inNetns(netns, cmd.Start)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	start, err := startTime(cmd.Process.Pid)
	if err != nil {
		// It died already and was not yet reaped; waiting tells why.
		start = 0
	}
	d := &daemon{name: name, log: logPath, proc: process{Name: name, PID: cmd.Process.Pid, Start: start}, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// exited reports whether the daemon has ended (while this process watches
// it).
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// failure describes how a daemon that ended did so, with its log's tail.
func (d *daemon) failure() error {
	return fmt.Errorf("%s exited: %v; log %s:\n%s", d.name, d.waitErr, d.log, tail(d.log, 4<<10))
}

// tail returns the last max bytes of a file.
func tail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		f.Seek(fi.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// inNetns runs fn on an OS thread that joined the network namespace bound
// at path. The thread stays locked and is discarded when fn returns, so no
// other goroutine ever runs in the namespace.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the goroutine ends locked, and the runtime
		// then ends the thread rather than reuse it.
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// procStat is what /proc/PID/stat says of a process.
type procStat struct {
	ppid  int
	state byte
	start uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After comm: state(3) ppid(4) ... starttime(22), so index 19.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	var st procStat
	st.state = f[0][0]
	if st.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	if st.start, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

func startTime(pid int) (uint64, error) {
	st, err := readStat(pid)
	return st.start, err
}

// alive reports whether p still runs (a zombie does not).
func (p process) alive() bool {
	st, err := readStat(p.PID)
	return err == nil && st.start == p.Start && st.state != 'Z' && st.state != 'X'
}

// signal sends sig to p if p is still the process that was recorded: the
// pid is pinned with a pidfd before its start time is compared, so a pid
// reused by another process in between is never signalled.
func (p process) signal(sig unix.Signal) error {
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.PID, err)
	}
	defer unix.Close(fd)
	if st, err := startTime(p.PID); err != nil || st != p.Start {
		return nil // gone, or another process now
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.PID, err)
	}
	return nil
}

// stopProcesses sends SIGTERM to every process, waits up to grace for them
// to end, then SIGKILLs the rest and waits for them.
func stopProcesses(procs []process, grace time.Duration) error {
	var errs []error
	for _, p := range procs {
		errs = append(errs, p.signal(unix.SIGTERM))
	}
	if waitGone(procs, grace) {
		return errors.Join(errs...)
	}
	for _, p := range procs {
		if p.alive() {
			errs = append(errs, p.signal(unix.SIGKILL))
		}
	}
	if !waitGone(procs, 10*time.Second) {
		var left []string
		for _, p := range procs {
			if p.alive() {
				left = append(left, fmt.Sprintf("%s (pid %d)", p.Name, p.PID))
			}
		}
		errs = append(errs, fmt.Errorf("still running after SIGKILL: %s", strings.Join(left, ", ")))
	}
	return errors.Join(errs...)
}

// waitGone waits until none of procs is alive, or timeout passes.
func waitGone(procs []process, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		alive := false
		for _, p := range procs {
			if p.alive() {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// allPIDs lists the processes in /proc.
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

// cmdline returns a process's arguments.
func cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// nsID identifies a namespace by the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, false
	}
	return nsID{uint64(st.Dev), st.Ino}, true
}

// labProcesses finds the processes that belong to a lab: those whose command
// line names one of dirs (or a path under one), those that run in one of the
// namespaces netns, containerd shims whose -address lies under one of dirs,
// and every descendant of those. The calling process and its ancestors are
// never included.
func labProcesses(dirs []string, netns []nsID) []process {
	self := os.Getpid()
	spare := map[int]bool{1: true}
	for pid := self; pid > 1 && !spare[pid]; {
		spare[pid] = true
		st, err := readStat(pid)
		if err != nil {
			break
		}
		pid = st.ppid
	}
	inNS := map[nsID]bool{}
	for _, id := range netns {
		inNS[id] = true
	}
	names := func(args []string) bool {
		for _, a := range args {
			for _, d := range dirs {
				if d == "" {
					continue
				}
				if a == d || strings.Contains(a, d+"/") || strings.HasSuffix(a, "="+d) {
					return true
				}
			}
		}
		return false
	}
	children := map[int][]int{}
	stats := map[int]procStat{}
	var roots []int
	for _, pid := range allPIDs() {
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		stats[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
		if spare[pid] || st.state == 'Z' {
			continue
		}
		mine := names(cmdline(pid))
		if !mine && len(inNS) > 0 {
			if id, ok := statNS("/proc/" + strconv.Itoa(pid) + "/ns/net"); ok && inNS[id] {
				mine = true
			}
		}
		if mine {
			roots = append(roots, pid)
		}
	}
	seen := map[int]bool{}
	var out []process
	var walk func(int)
	walk = func(pid int) {
		if seen[pid] || spare[pid] {
			return
		}
		seen[pid] = true
		for _, c := range children[pid] {
			walk(c)
		}
		st := stats[pid]
		if st.state == 'Z' {
			return
		}
		name := "process"
		if args := cmdline(pid); len(args) > 0 {
			name = filepath.Base(args[0])
		}
		out = append(out, process{Name: name, PID: pid, Start: st.start})
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}
