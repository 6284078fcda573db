package sshx

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/sshx/sshtest"
	"berth.dev/berth/render/api/v1alpha1"
)

// fakeAgentSource stands in for `berth agent` until the real one can run
// here without containerd: it takes the agent's flags, serves the few
// routes bootstrap and uninstall use on the socket, keeps its pods in the
// state directory across restarts (as the real agent adopts its pods),
// and stops on SIGTERM, removing its socket.
const fakeAgentSource = `package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
)

var version = "dev"

type state struct {
	Generation int64             ` + "`json:\"generation\"`" + `
	Pods       []json.RawMessage ` + "`json:\"pods\"`" + `
}

func main() {
	log.SetPrefix("fake agent: ")
	if len(os.Args) < 2 || os.Args[1] != "agent" {
		fmt.Fprintln(os.Stderr, "usage: berth agent [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	stateDir := fs.String("state-dir", "", "")
	socket := fs.String("socket", "", "")
	fs.String("containerd-address", "", "")
	fs.String("log-dir", "", "")
	node := fs.String("node-name", "", "")
	fs.String("namespace", "", "")
	fs.String("registries", "", "")
	fail := fs.Bool("fail-start", false, "")
	fs.Parse(os.Args[2:])
	if *fail {
		log.Fatal("asked to fail at start")
	}
	if c, err := net.Dial("unix", *socket); err == nil {
		c.Close()
		log.Fatalf("%s: socket in use", *socket)
	}
	os.MkdirAll(filepath.Dir(*socket), 0o700)
	os.MkdirAll(*stateDir, 0o700)
	os.Remove(*socket)
	l, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	var st state
	stateFile := filepath.Join(*stateDir, "pods.json")
	if b, err := os.ReadFile(stateFile); err == nil {
		json.Unmarshal(b, &st)
	}
	if st.Pods == nil {
		st.Pods = []json.RawMessage{}
	}
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]string{"version": version, "apiVersion": "v1"})
	})
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		reply(w, map[string]any{"name": *node, "agentVersion": version, "apiVersion": "v1", "generation": st.Generation, "pods": len(st.Pods)})
	})
	mux.HandleFunc("GET /v1/pods", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		reply(w, st.Pods)
	})
	mux.HandleFunc("PUT /v1/pods", func(w http.ResponseWriter, r *http.Request) {
		var d state
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil || d.Pods == nil {
			http.Error(w, "bad desired pods", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if d.Generation > st.Generation {
			st = d
			b, _ := json.Marshal(st)
			os.WriteFile(stateFile, b, 0o600)
		}
		reply(w, map[string]int64{"generation": d.Generation})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	log.Printf("version %s serving on %s", version, *socket)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Close()
	os.Remove(*socket)
	log.Printf("stopped")
}
`

// fakeAgents builds the fake agent once per test binary and version.
var fakeAgents struct {
	once sync.Once
	dir  string
	err  error
	mu   sync.Mutex
	bins map[string]string
}

// fakeAgent returns the path of the fake agent built for version (and
// GOARCH arch; "" for this machine's).
func fakeAgent(t testing.TB, version, arch string) string {
	t.Helper()
	fa := &fakeAgents
	fa.once.Do(func() {
		fa.dir, fa.err = os.MkdirTemp("", "sshx-fakeagent")
		if fa.err != nil {
			return
		}
		fa.bins = map[string]string{}
		fa.err = os.WriteFile(filepath.Join(fa.dir, "go.mod"), []byte("module fakeagent\n\ngo 1.22\n"), 0o644)
		if fa.err == nil {
			fa.err = os.WriteFile(filepath.Join(fa.dir, "main.go"), []byte(fakeAgentSource), 0o644)
		}
	})
	if fa.err != nil {
		t.Fatal(fa.err)
	}
	if arch == "" {
		arch = runtime.GOARCH
	}
	key := version + "-" + arch
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if p, ok := fa.bins[key]; ok {
		return p
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(fa.dir, "berth-"+key)
	cmd := exec.Command(goBin, "build", "-o", out, "-ldflags", "-X main.version="+version, ".")
	cmd.Dir = fa.dir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the fake agent: %v\n%s", err, b)
	}
	fa.bins[key] = out
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fakeAgents.dir != "" {
		os.RemoveAll(fakeAgents.dir)
	}
	os.Exit(code)
}

// machine is a "machine" for bootstrap tests: the local sshd, with the
// agent's paths all under one temporary directory, and a stand-in for
// containerd's socket that accepts connections.
type machine struct {
	t     testing.TB
	s     *sshtest.Server
	root  string
	m     *v1alpha1.Machine
	conn  *Conn
	log   *slog.Logger
	logs  *logBuffer
	paths agentPaths
}

func newMachine(t testing.TB, opts sshtest.Options) *machine {
	t.Helper()
	s := sshtest.Start(t, opts)
	root := shortTempDir(t)
	m := s.Machine("lab1")
	m.Spec.Agent = v1alpha1.AgentSpec{
		StateDir:          filepath.Join(root, "var/lib/berth"),
		Socket:            filepath.Join(root, "run/berth/agent.sock"),
		LogDir:            filepath.Join(root, "var/log/berth/pods"),
		ContainerdAddress: filepath.Join(root, "run/containerd/containerd.sock"),
		BinaryPath:        filepath.Join(root, "usr/local/bin/berth"),
	}
	mc := &machine{t: t, s: s, root: root, m: m}
	var err error
	if mc.paths, err = resolvePaths(m); err != nil {
		t.Fatal(err)
	}
	mc.log, mc.logs = testLogger(t)
	mc.conn, err = New(m, Config{Auth: keyAuth(t, s), Logger: mc.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mc.conn.Close()
		mc.killAgent()
	})
	return mc
}

// serveContainerd makes the containerd socket answer (accept connections).
func (mc *machine) serveContainerd() {
	mc.t.Helper()
	os.MkdirAll(filepath.Dir(mc.paths.Containerd), 0o700)
	l, err := net.Listen("unix", mc.paths.Containerd)
	if err != nil {
		mc.t.Fatal(err)
	}
	mc.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// agentPID is the pid in the pidfile, if that process runs our binary.
func (mc *machine) agentPID() int {
	b, err := os.ReadFile(mc.paths.PIDFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !processAlive(pid) {
		return 0
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !bytes.HasPrefix(cmdline, []byte(mc.paths.Binary+"\x00agent\x00")) {
		return 0
	}
	return pid
}

// killAgent kills a detached agent the test left running.
func (mc *machine) killAgent() {
	if pid := mc.agentPID(); pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
		waitDead(pid, 5*time.Second)
	}
}

func waitDead(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func (mc *machine) opts(version string) BootstrapOptions {
	return BootstrapOptions{
		Machine:     mc.m,
		BinaryPath:  fakeAgent(mc.t, version, ""),
		Version:     version,
		WaitTimeout: 10 * time.Second,
		StopTimeout: 5 * time.Second,
		Logger:      mc.log,
	}
}

func (mc *machine) bootstrap(opts BootstrapOptions) Report {
	mc.t.Helper()
	rep, err := Bootstrap(ctxT(mc.t, 60*time.Second), mc.conn, opts)
	if err != nil {
		mc.t.Fatalf("Bootstrap: %v", err)
	}
	return rep
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// setPods gives the agent pods to run.
func (mc *machine) setPods(generation int64, names ...string) {
	mc.t.Helper()
	ac := agentClient(mc.conn, mc.paths.Socket)
	defer ac.Close()
	var pods []api.Pod
	for _, n := range names {
		var p api.Pod
		p.Name = n
		pods = append(pods, p)
	}
	if err := ac.SetPods(ctxT(mc.t, 5*time.Second), api.DesiredPods{Generation: generation, Pods: pods}); err != nil {
		mc.t.Fatal(err)
	}
}

// uploads lists partial uploads left beside the binary.
func (mc *machine) uploads() []string {
	m, _ := filepath.Glob(mc.paths.Binary + ".upload-*")
	return m
}

func TestBootstrapInstallThenNothingToDo(t *testing.T) {
	mc := newMachine(t, sshtest.Options{})
	mc.serveContainerd()
	opts := mc.opts("1.0.0")

	rep := mc.bootstrap(opts)
	t.Logf("fresh install: %v", rep.Duration.Round(time.Millisecond))
	if rep.Action != "installed" || !rep.Uploaded || rep.Init != InitDetached {
		t.Errorf("first bootstrap: action %q, uploaded %v, init %q; want installed, true, detached", rep.Action, rep.Uploaded, rep.Init)
	}
	if rep.AgentVersion != "1.0.0" || rep.AgentAPIVersion != "v1" || rep.VersionAgreement != "same version 1.0.0" {
		t.Errorf("versions: agent %q API %q, agreement %q", rep.AgentVersion, rep.AgentAPIVersion, rep.VersionAgreement)
	}
	if want := (Platform{OS: "linux", Arch: runtime.GOARCH}); rep.Platform != want || rep.Kernel == "" {
		t.Errorf("platform %v kernel %q, want %v", rep.Platform, rep.Kernel, want)
	}
	for _, p := range rep.Prerequisites {
		if !p.OK {
			t.Errorf("prerequisite %s missing: %s", p.Name, p.Detail)
		}
	}
	if got, want := fileSHA(t, mc.paths.Binary), fileSHA(t, opts.BinaryPath); got != want || rep.SHA256 != want {
		t.Errorf("installed sha256 %s, report %s, want %s", got, rep.SHA256, want)
	}
	if fi, err := os.Stat(mc.paths.Binary); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("installed binary: %v, %v; want mode 0755", fi.Mode(), err)
	}
	if u := mc.uploads(); len(u) > 0 {
		t.Errorf("uploads left: %v", u)
	}
	pid := mc.agentPID()
	if pid == 0 || pid != rep.PID {
		t.Fatalf("pidfile names %d, report %d; want the running agent", pid, rep.PID)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	want := []string{mc.paths.Binary, "agent", "--state-dir", mc.paths.StateDir, "--socket", mc.paths.Socket,
		"--containerd-address", mc.paths.Containerd, "--log-dir", mc.paths.LogDir, "--node-name", "lab1"}
	if strings.Join(args, " ") != strings.Join(want, " ") {
		t.Errorf("agent command line %q, want %q", args, want)
	}
	// Detached: its own session, not a child of sshd.
	if sid := procField(pid, 4); sid != pid {
		t.Errorf("agent session id %d, want its own (%d)", sid, pid)
	}
	if b, _ := os.ReadFile(mc.paths.LogFile); !strings.Contains(string(b), "serving on") {
		t.Errorf("agent.log = %q", b)
	}

	rep = mc.bootstrap(opts)
	t.Logf("second run: %v", rep.Duration.Round(time.Millisecond))
	if rep.Action != "unchanged" || rep.Uploaded || rep.PID != pid || rep.PreviousVersion != "1.0.0" {
		t.Errorf("second bootstrap: action %q, uploaded %v, pid %d (was %d), previous %q; want unchanged, no upload, same pid",
			rep.Action, rep.Uploaded, rep.PID, pid, rep.PreviousVersion)
	}
	if strings.Contains(mc.logs.String(), "PRIVATE KEY") {
		t.Errorf("key material in the logs")
	}
	for _, want := range []string{"step=\"upload agent\"", "step=\"wait for agent\"", "machine=lab1"} {
		if !strings.Contains(mc.logs.String(), want) {
			t.Errorf("logs lack %s", want)
		}
	}
}

// procField reads field n (1-based, after the command) of /proc/PID/stat:
// 2 is the parent, 3 the process group, 4 the session.
func procField(pid, n int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < n {
		return 0
	}
	v, _ := strconv.Atoi(f[n-1])
	return v
}

func TestBootstrapUpgradeRestartsAgent(t *testing.T) {
	mc := newMachine(t, sshtest.Options{})
	mc.serveContainerd()
	mc.bootstrap(mc.opts("1.0.0"))
	old := mc.agentPID()
	// The agent's pods outlive its restart.
	mc.setPods(1, "web")

	rep := mc.bootstrap(mc.opts("1.1.0"))
	t.Logf("upgrade: %v (%s)", rep.Duration.Round(time.Millisecond), rep.Reason)
	if rep.Action != "upgraded" || !rep.Uploaded || rep.PreviousVersion != "1.0.0" || rep.AgentVersion != "1.1.0" {
		t.Errorf("upgrade: action %q uploaded %v previous %q agent %q; want upgraded, true, 1.0.0, 1.1.0",
			rep.Action, rep.Uploaded, rep.PreviousVersion, rep.AgentVersion)
	}
	if !waitDead(old, time.Second) {
		t.Errorf("old agent %d still runs", old)
	}
	if pid := mc.agentPID(); pid == 0 || pid == old || pid != rep.PID {
		t.Errorf("agent pid %d (report %d), old %d", pid, rep.PID, old)
	}
	ac := agentClient(mc.conn, mc.paths.Socket)
	defer ac.Close()
	if node, err := ac.Node(ctxT(t, 5*time.Second)); err != nil || node.Pods != 1 {
		t.Errorf("after the upgrade the agent has %d pods (%v), want 1", node.Pods, err)
	}

	// A controller one version ahead agrees on the API.
	opts := mc.opts("1.1.0")
	opts.Version = "1.2.0"
	rep = mc.bootstrap(opts)
	if rep.Action != "unchanged" || !strings.Contains(rep.VersionAgreement, "same API v1") {
		t.Errorf("controller 1.2.0, agent 1.1.0: action %q, agreement %q", rep.Action, rep.VersionAgreement)
	}
	opts.APIVersion = "v2"
	if _, err := Bootstrap(ctxT(t, 30*time.Second), mc.conn, opts); !errors.Is(err, ErrVersionMismatch) || !strings.Contains(err.Error(), "agree on version") {
		t.Errorf("controller speaking API v2: %v, want ErrVersionMismatch", err)
	}
}

func TestBootstrapRestartsKilledAgentAndReplacesStalePidfile(t *testing.T) {
	mc := newMachine(t, sshtest.Options{})
	mc.serveContainerd()
	opts := mc.opts("1.0.0")
	mc.bootstrap(opts)

	// Killed: found not running, started again, no upload.
	mc.killAgent()
	rep := mc.bootstrap(opts)
	if rep.Action != "started" || rep.Uploaded || mc.agentPID() == 0 {
		t.Errorf("after a kill: action %q uploaded %v pid %d; want started, no upload, running", rep.Action, rep.Uploaded, mc.agentPID())
	}

	// A pidfile naming someone else's live process is stale: that process
	// is left alone and a new agent starts.
	mc.killAgent()
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer other.Process.Kill()
	os.WriteFile(mc.paths.PIDFile, []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o600)
	rep = mc.bootstrap(opts)
	if rep.Action != "started" || !strings.Contains(rep.Reason, "stale pidfile") {
		t.Errorf("stale pidfile: action %q reason %q", rep.Action, rep.Reason)
	}
	if !processAlive(other.Process.Pid) {
		t.Errorf("the process a stale pidfile named was killed")
	}
	if pid := mc.agentPID(); pid == 0 || pid == other.Process.Pid {
		t.Errorf("pidfile names %d after the restart", pid)
	}

	// A pidfile naming a dead process, likewise.
	mc.killAgent()
	os.WriteFile(mc.paths.PIDFile, []byte("999999999\n"), 0o600)
	if rep := mc.bootstrap(opts); rep.Action != "started" || mc.agentPID() == 0 {
		t.Errorf("dead pidfile: action %q, pid %d", rep.Action, mc.agentPID())
	}
}

// TestBootstrapRegistries: the Cluster's registries reach the agent as a
// file and a flag; a change restarts the agent, no change does nothing.
func TestBootstrapRegistries(t *testing.T) {
	mc := newMachine(t, sshtest.Options{})
	mc.serveContainerd()
	opts := mc.opts("1.0.0")
	opts.Registries = []v1alpha1.Registry{{Host: "198.18.0.1:5000", PlainHTTP: true}}
	mc.bootstrap(opts)
	b, err := os.ReadFile(mc.paths.Registries)
	if err != nil || !strings.Contains(string(b), `"host": "198.18.0.1:5000"`) || !strings.Contains(string(b), `"plainHTTP": true`) {
		t.Errorf("registries file %q, %v", b, err)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", mc.agentPID()))
	if !strings.Contains(string(cmdline), "\x00--registries\x00"+mc.paths.Registries+"\x00") {
		t.Errorf("agent command line %q lacks --registries", cmdline)
	}
	if rep := mc.bootstrap(opts); rep.Action != "unchanged" {
		t.Errorf("same registries: action %q (%s)", rep.Action, rep.Reason)
	}
	opts.Registries = append(opts.Registries, v1alpha1.Registry{Host: "registry.example", Mirrors: []string{"mirror.example"}})
	if rep := mc.bootstrap(opts); rep.Action != "restarted" || rep.Reason != "its registries changed" {
		t.Errorf("new registries: action %q (%s), want restarted", rep.Action, rep.Reason)
	}
	opts.Registries = nil
	if rep := mc.bootstrap(opts); rep.Action != "restarted" || !strings.Contains(rep.Reason, "command line changed") {
		t.Errorf("no registries: action %q (%s), want restarted", rep.Action, rep.Reason)
	}
	if _, err := os.Stat(mc.paths.Registries); !os.IsNotExist(err) {
		t.Errorf("registries file left: %v", err)
	}
}

// TestBootstrapBrokenUploadNeverRuns cuts the upload of a new version in
// three ways; each time the installed binary and the running agent stay
// the old ones, and a later bootstrap completes the upgrade.
func TestBootstrapBrokenUploadNeverRuns(t *testing.T) {
	mc := newMachine(t, sshtest.Options{})
	mc.serveContainerd()
	mc.bootstrap(mc.opts("1.0.0"))
	oldSHA := fileSHA(t, mc.paths.Binary)
	oldPID := mc.agentPID()

	check := func(t *testing.T, err error, step string, kind error) {
		t.Helper()
		if err == nil {
			t.Fatal("bootstrap with a broken upload succeeded")
		}
		if want := "bootstrap lab1: " + step + ": "; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %q, want it to start with %q", err, want)
		}
		if kind != nil && !errors.Is(err, kind) {
			t.Errorf("error %v, want %v", err, kind)
		}
		if got := fileSHA(t, mc.paths.Binary); got != oldSHA {
			t.Errorf("installed binary changed to %s", got)
		}
		if pid := mc.agentPID(); pid != oldPID {
			t.Errorf("agent pid %d, want the old agent %d still running", pid, oldPID)
		}
		v, verr := getAgentVersion(ctxT(t, 10*time.Second), mc.conn, mc.paths.Socket)
		if verr != nil || v.Version != "1.0.0" {
			t.Errorf("agent answers %+v, %v; want 1.0.0", v, verr)
		}
	}

	t.Run("read error", func(t *testing.T) {
		opts := mc.opts("1.1.0")
		opts.uploadFilter = func(r io.Reader) io.Reader { return &failAfter{r: r, n: 1 << 20, err: errors.New("disk read failed")} }
		_, err := Bootstrap(ctxT(t, 30*time.Second), mc.conn, opts)
		check(t, err, "upload agent", nil)
		if u := mc.uploads(); len(u) > 0 {
			t.Errorf("partial upload left: %v", u)
		}
	})
	t.Run("corrupted in transit", func(t *testing.T) {
		opts := mc.opts("1.1.0")
		opts.uploadFilter = func(r io.Reader) io.Reader { return &flipByte{r: r, at: 4096} }
		_, err := Bootstrap(ctxT(t, 30*time.Second), mc.conn, opts)
		check(t, err, "verify agent", ErrUploadCorrupt)
		if u := mc.uploads(); len(u) > 0 {
			t.Errorf("corrupt upload left: %v", u)
		}
	})
	t.Run("connection cut", func(t *testing.T) {
		opts := mc.opts("1.1.0")
		opts.uploadFilter = func(r io.Reader) io.Reader {
			return &hookAfter{r: r, n: 1 << 20, hook: func() {
				cl := mc.conn.current()
				cl.end(errors.New("cable pulled"))
				<-cl.done
			}}
		}
		_, err := Bootstrap(ctxT(t, 30*time.Second), mc.conn, opts)
		check(t, err, "upload agent", ErrConnectionLost)
	})

	rep := mc.bootstrap(mc.opts("1.1.0"))
	if rep.Action != "upgraded" || rep.AgentVersion != "1.1.0" {
		t.Errorf("after the broken uploads: action %q, agent %q", rep.Action, rep.AgentVersion)
	}
	if u := mc.uploads(); len(u) > 0 {
		t.Errorf("uploads left after a good bootstrap: %v", u)
	}
}

// failAfter fails with err after n bytes.
type failAfter struct {
	r   io.Reader
	n   int
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// flipByte changes the byte at offset at.
type flipByte struct {
	r   io.Reader
	off int
	at  int
}

func (f *flipByte) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.off <= f.at && f.at < f.off+n {
		p[f.at-f.off] ^= 0xff
	}
	f.off += n
	return n, err
}

// hookAfter calls hook once n bytes have been read, then goes on.
type hookAfter struct {
	r    io.Reader
	n    int
	hook func()
	done bool
}

func (h *hookAfter) Read(p []byte) (int, error) {
	if !h.done && h.n <= 0 {
		h.done = true
		h.hook()
	}
	if !h.done && len(p) > h.n {
		p = p[:h.n]
	}
	n, err := h.r.Read(p)
	h.n -= n
	return n, err
}

func TestBootstrapPrerequisitesMissing(t *testing.T) {
	// No runc on PATH, and no containerd.
	mc := newMachine(t, sshtest.Options{Env: map[string]string{"PATH": pathWithout(t, "runc")}})
	rep, err := Bootstrap(ctxT(t, 30*time.Second), mc.conn, mc.opts("1.0.0"))
	if !errors.Is(err, ErrPrerequisites) || !strings.HasPrefix(err.Error(), "bootstrap lab1: check prerequisites: ") {
		t.Fatalf("Bootstrap without runc and containerd: %v, want ErrPrerequisites", err)
	}
	missing := map[string]bool{}
	for _, p := range rep.Prerequisites {
		if !p.OK {
			missing[p.Name] = true
			if !strings.Contains(err.Error(), p.Name+": "+p.Detail) {
				t.Errorf("error does not report missing %s", p.Name)
			}
		}
	}
	if len(missing) != 2 || !missing["runc"] || !missing["containerd"] {
		t.Errorf("missing %v, want runc and containerd", missing)
	}
	t.Logf("%v", err)
	if _, err := os.Stat(mc.paths.Binary); !os.IsNotExist(err) {
		t.Errorf("binary uploaded although prerequisites were missing")
	}
}

// pathWithout is a directory of links to every command in the usual
// directories but those named, for a PATH that lacks them.
func pathWithout(t testing.TB, omit ...string) string {
	dir := t.TempDir()
	skip := map[string]bool{}
	for _, o := range omit {
		skip[o] = true
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if !skip[e.Name()] {
				os.Symlink(filepath.Join(d, e.Name()), filepath.Join(dir, e.Name())) // the first wins
			}
		}
	}
	return dir
}

func TestBootstrapRefusals(t *testing.T) {
	mc := newMachine(t, sshtest.Options{})
	mc.serveContainerd()

	t.Run("other architecture", func(t *testing.T) {
		arch := "arm64"
		if runtime.GOARCH == "arm64" {
			arch = "amd64"
		}
		opts := mc.opts("1.0.0")
		opts.BinaryPath = fakeAgent(t, "1.0.0", arch)
		_, err := Bootstrap(ctxT(t, 30*time.Second), mc.conn, opts)
		if !errors.Is(err, ErrPlatformMismatch) || !strings.Contains(err.Error(), "linux/"+arch) || !strings.Contains(err.Error(), "linux/"+runtime.GOARCH) {
			t.Errorf("Bootstrap of a linux/%s binary: %v, want ErrPlatformMismatch naming both", arch, err)
		}
	})
	t.Run("not an executable", func(t *testing.T) {
		opts := mc.opts("1.0.0")
		opts.BinaryPath = filepath.Join(t.TempDir(), "berth")
		os.WriteFile(opts.BinaryPath, []byte("#!/bin/sh\necho hi\n"), 0o755)
		if _, err := Bootstrap(ctxT(t, 30*time.Second), mc.conn, opts); err == nil || !strings.Contains(err.Error(), "read binary") {
			t.Errorf("Bootstrap of a shell script: %v", err)
		}
	})
	t.Run("wrong host key", func(t *testing.T) {
		other, _ := genSigner(t)
		m := *mc.m
		m.Spec.SSH.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other.PublicKey())))
		c, err := New(&m, Config{Auth: keyAuth(t, mc.s)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		opts := mc.opts("1.0.0")
		opts.Machine = &m
		_, err = Bootstrap(ctxT(t, 30*time.Second), c, opts)
		if !errors.Is(err, ErrHostKeyMismatch) {
			t.Errorf("Bootstrap with a wrong host key: %v", err)
		}
	})
	if _, err := os.Stat(mc.paths.Binary); !os.IsNotExist(err) {
		t.Errorf("something was uploaded")
	}
	t.Run("agent exits at start", func(t *testing.T) {
		opts := mc.opts("1.0.0")
		opts.AgentArgs = []string{"--fail-start"}
		start := time.Now()
		_, err := Bootstrap(ctxT(t, 30*time.Second), mc.conn, opts)
		if err == nil || !strings.Contains(err.Error(), "wait for agent") || !strings.Contains(err.Error(), "asked to fail at start") {
			t.Errorf("Bootstrap of an agent that exits: %v, want its log in the error", err)
		}
		if time.Since(start) > 8*time.Second {
			t.Errorf("took %v to notice the agent exited", time.Since(start))
		}
	})
}

func TestUninstall(t *testing.T) {
	mc := newMachine(t, sshtest.Options{})
	mc.serveContainerd()
	opts := mc.opts("1.0.0")
	mc.bootstrap(opts)
	pid := mc.agentPID()
	ctx := ctxT(t, 60*time.Second)

	rep, err := Uninstall(ctx, mc.conn, mc.m, UninstallOptions{Logger: mc.log})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stopped != fmt.Sprintf("stopped %d", pid) {
		t.Errorf("Stopped = %q", rep.Stopped)
	}
	if !waitDead(pid, time.Second) {
		t.Errorf("agent still runs")
	}
	for _, p := range []string{mc.paths.Binary, mc.paths.Socket, mc.paths.PIDFile} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	if _, err := os.Stat(mc.paths.StateDir); err != nil {
		t.Errorf("state directory removed without a purge: %v", err)
	}
	rep, err = Uninstall(ctx, mc.conn, mc.m, UninstallOptions{})
	if err != nil || rep.Stopped != "not running" || len(rep.Removed) != 0 {
		t.Errorf("second Uninstall: %+v, %v", rep, err)
	}

	// Purge: pods are stopped through the agent first, then everything goes.
	mc.bootstrap(opts)
	mc.setPods(5, "a", "b")
	os.MkdirAll(mc.paths.LogDir, 0o700)
	rep, err = Uninstall(ctx, mc.conn, mc.m, UninstallOptions{Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PodsStopped != 2 || len(rep.Warnings) > 0 {
		t.Errorf("purge: %d pods stopped, warnings %v", rep.PodsStopped, rep.Warnings)
	}
	for _, p := range []string{mc.paths.StateDir, mc.paths.LogDir, mc.paths.Binary} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after a purge", p)
		}
	}
	t.Logf("purge removed %v", rep.Removed)
}
