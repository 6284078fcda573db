// Package sshtest runs Debian's real sshd for tests: one per test, on a
// free loopback port, with a generated ed25519 host key and a generated
// client key as its only authorized key, stopped with everything it
// started when the test ends. It can freeze, kill and restart that sshd,
// so that tests see what a dead or hung machine looks like to a client.
//
// It lives beside sshx rather than under internal/ so that the lab's tests
// can use it too.
package sshtest

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/render/api/v1alpha1"
)

// SSHD is Debian's sshd (package openssh-server).
const SSHD = "/usr/sbin/sshd"

// privsepDir is the directory sshd insists on before it accepts a
// connection; Debian's init script makes it, and nothing does without one.
const privsepDir = "/run/sshd"

// Options change the sshd a test gets. The zero value is Debian's defaults
// plus what a test needs (see Start).
type Options struct {
	// MaxSessions sets sshd's MaxSessions (sessions per connection);
	// 0 keeps its default, 10.
	MaxSessions int
	// Env is set in every session's environment (sshd's SetEnv), after
	// sshd's own: PATH here replaces the default PATH (though the login
	// shell's rc files may still add to it). HOME defaults to the server's
	// directory, so that the host's own ~/.bashrc, which Debian's bash
	// reads for every SSH command and which may take a second on a
	// developer's machine, stays out of the tests.
	Env map[string]string
	// Config is appended to the generated sshd_config.
	Config string
}

// Server is a running sshd.
type Server struct {
	// Dir holds the server's files: config, keys, pidfile, log.
	Dir string
	// Host and Port are where it listens (127.0.0.1 and a free port).
	Host string
	Port int
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey
	// ClientKeyFile is the authorized client's private key, in OpenSSH
	// format, mode 0600; ClientSigner is the same key.
	ClientKeyFile string
	ClientSigner  ssh.Signer

	t       testing.TB
	config  string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts sshd for t and stops it, and every process it started for
// a connection, when t ends; its log is printed if t failed. It needs root
// (sshd must switch to the logged-in user) and Debian's openssh-server:
// without them the test is skipped, or fails under BERTH_E2E=required.
//
// The sshd listens on 127.0.0.1 only, accepts only the generated client
// key (also for root: PermitRootLogin prohibit-password), has no PAM and no
// StrictModes (the test's files are in a temporary directory), and
// otherwise keeps Debian's defaults: streamlocal forwarding allowed, no
// SFTP subsystem.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.Require(t, SSHD, "ssh-keygen")

	dir := t.TempDir()
	s := &Server{
		Dir:     dir,
		Host:    "127.0.0.1",
		Port:    testenv.FreePort(t),
		t:       t,
		config:  filepath.Join(dir, "sshd_config"),
		logPath: filepath.Join(dir, "sshd.log"),
	}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	hostSigner, err := writeKey(hostKey)
	if err != nil {
		t.Fatalf("sshtest: host key: %v", err)
	}
	s.HostKey = hostSigner.PublicKey()
	s.ClientKeyFile = filepath.Join(dir, "client_ed25519")
	if s.ClientSigner, err = writeKey(s.ClientKeyFile); err != nil {
		t.Fatalf("sshtest: client key: %v", err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, ssh.MarshalAuthorizedKey(s.ClientSigner.PublicKey()), 0o600); err != nil {
		t.Fatalf("sshtest: %v", err)
	}

	var cfg strings.Builder
	fmt.Fprintf(&cfg, "ListenAddress %s\nPort %d\n", s.Host, s.Port)
	fmt.Fprintf(&cfg, "HostKey %s\nPidFile %s\nAuthorizedKeysFile %s\n", hostKey, filepath.Join(dir, "sshd.pid"), authorized)
	cfg.WriteString("StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n")
	cfg.WriteString("PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel VERBOSE\n")
	if opts.MaxSessions > 0 {
		fmt.Fprintf(&cfg, "MaxSessions %d\n", opts.MaxSessions)
	}
	env := map[string]string{"HOME": dir}
	for k, v := range opts.Env {
		env[k] = v
	}
	{
		keys := make([]string, 0, len(env))
		for k := range env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		cfg.WriteString("SetEnv")
		for _, k := range keys {
			fmt.Fprintf(&cfg, " %s", strconv.Quote(k+"="+env[k]))
		}
		cfg.WriteString("\n")
	}
	cfg.WriteString(opts.Config)
	if err := os.WriteFile(s.config, []byte(cfg.String()), 0o600); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	if err := os.MkdirAll(privsepDir, 0o755); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	if out, err := exec.Command(SSHD, "-t", "-f", s.config).CombinedOutput(); err != nil {
		t.Fatalf("sshtest: sshd -t: %v: %s", err, out)
	}

	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("sshd log (%s):\n%s", s.logPath, s.Log())
		}
	})
	s.Restart()
	return s
}

// writeKey generates an ed25519 key and writes it to path in OpenSSH
// format, mode 0600.
func writeKey(path string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// HostKeyLine is the host key in authorized_keys format, as a Machine's
// spec.ssh.hostKey holds it.
func (s *Server) HostKeyLine() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey)))
}

// KnownHostsLine is the host key as a known_hosts line ([host]:port key).
func (s *Server) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, s.HostKey)
}

// Machine is a Machine named name that reaches this server as root, with
// its host key pinned.
func (s *Server) Machine(name string) *v1alpha1.Machine {
	m := &v1alpha1.Machine{}
	m.APIVersion, m.Kind = v1alpha1.APIVersion, "Machine"
	m.Name = name
	m.Spec.Address = s.Host
	m.Spec.SSH = v1alpha1.SSHSpec{User: "root", Port: int32(s.Port), HostKey: s.HostKeyLine()}
	return m
}

// Log is what sshd has logged so far.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Restart starts sshd again after Kill (or for the first time), on the
// same port with the same keys, and waits until it greets a client.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("sshtest: Restart while sshd runs; Kill it first")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatalf("sshtest: %v", err)
	}
	defer logf.Close()
	cmd := exec.Command(SSHD, "-D", "-e", "-f", s.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the forking thread ends, and Go ends threads
	// that goroutines leave locked (network-namespace code does): start
	// and wait from a goroutine that keeps its thread for sshd's life.
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		s.t.Fatalf("sshtest: start sshd: %v", err)
	}
	s.cmd, s.done = cmd, done
	if err := s.waitGreeting(10 * time.Second); err != nil {
		s.t.Fatalf("sshtest: %v\nsshd log:\n%s", err, s.Log())
	}
}

// waitGreeting waits until a connection to the port gets sshd's banner.
func (s *Server) waitGreeting(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "SSH-2.0-") {
				return nil
			}
			err = fmt.Errorf("banner %q: %v", line, rerr)
		}
		select {
		case <-s.done:
			return fmt.Errorf("sshd exited")
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd on %s not answering after %v: %w", s.Addr(), timeout, err)
		}
	}
}

// Kill kills sshd and every process it started for a connection (SIGKILL,
// after SIGCONT in case they were frozen), as a machine that lost power
// would vanish: clients see no goodbye. Processes that a session detached
// (setsid) are not its descendants any more and stay.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	pids := withDescendants(s.cmd.Process.Pid)
	signalAll(pids, syscall.SIGKILL)
	signalAll(pids, syscall.SIGCONT)
	<-s.done
	waitGone(pids, 5*time.Second)
	s.cmd, s.done = nil, nil
}

// Freeze stops sshd and its connection processes with SIGSTOP: connections
// stay open at the TCP level but nothing answers, as with a hung machine or
// a dropped route. Thaw resumes them.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen sshd (SIGCONT).
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	signalAll(withDescendants(s.cmd.Process.Pid), sig)
}

// Sessions counts the processes sshd runs for connections now (its
// descendants), for tests that look for leaks.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return len(withDescendants(s.cmd.Process.Pid)) - 1
}

func signalAll(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		syscall.Kill(pid, sig)
	}
}

// withDescendants returns root and all its descendants, children first.
func withDescendants(root int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
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
	walk(root)
	return out
}

// procStat reads a process's parent and state from /proc/PID/stat.
func procStat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')') // comm may hold spaces and parentheses
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
		time.Sleep(5 * time.Millisecond)
	}
}
