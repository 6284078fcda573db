package testenv

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// daemon is a long-running child process whose output goes to a log file.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has been waited for
	waitErr error         // valid after done
}

// startDaemon starts path with args, its stdout and stderr appended to
// logPath. The process gets its own process group, and SIGKILL if the test
// binary dies first, so that a killed test does not leave it running.
// Linux sends that signal when the forking thread ends, not the process,
// and Go ends a thread whenever a goroutine exits while locked to it (as
// network-namespace code does) — any thread, including one that once
// forked a daemon. So the daemon is started and waited for from a
// goroutine that keeps its thread locked for the daemon's whole life.
func startDaemon(name, logPath string, env []string, path string, args ...string) (*daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	d := &daemon{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return d, nil
}

// exited reports whether the process has ended.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the process.
// It reports whether the process had to be killed.
func (d *daemon) stop(grace time.Duration) (killed bool) {
	if d.exited() {
		return false
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return false
	case <-time.After(grace):
	}
	d.cmd.Process.Kill()
	<-d.done
	return true
}

// logTail returns the last max bytes of the log.
func (d *daemon) logTail(max int64) string {
	f, err := os.Open(d.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		f.Seek(fi.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
