package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/examples/images"
	"berth.dev/berth/internal/gittest"
	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/lab"
	"berth.dev/berth/nodes/lab/labtest"
	"berth.dev/berth/nodes/sshx"
	"berth.dev/berth/render/api/v1alpha1"
)

func TestMachinesUsage(t *testing.T) {
	env := map[string]string{"BERTH_REPO": t.TempDir()}
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"machines", "--help"}, exitOK, "Subcommands:"},
		{[]string{"machines", "bootstrap", "--help"}, exitOK, "-binary"},
		{[]string{"machines", "status", "--help"}, exitOK, "-output"},
		{[]string{"machines", "uninstall", "--help"}, exitOK, "-purge"},
		{[]string{"machines"}, exitUsage, ""},
		{[]string{"machines", "frob"}, exitUsage, ""},
		{[]string{"machines", "status", "-o", "yaml"}, exitUsage, ""},
		{[]string{"machines", "uninstall", "a", "b"}, exitUsage, ""},
		{[]string{"machines", "bootstrap", "--accept-new-host-keys"}, exitUsage, ""},
		{[]string{"machines", "import-image", "--help"}, exitOK, "-parallel"},
		{[]string{"machines", "import-image"}, exitUsage, ""},
		{[]string{"machines", "import-image", "/nonexistent/echo.tar"}, exitUsage, ""},
		{[]string{"machines", "import-image", "machines_e2e_test.go"}, exitUsage, ""}, // not a tar archive
		{[]string{"machines", "import-image", "--parallel", "0", "x.tar"}, exitUsage, ""},
	} {
		code, out, errOut := berth(t, env, c.args...)
		if code != c.code || !strings.Contains(out, c.out) {
			t.Errorf("berth %s: exit %d, want %d; stdout:\n%s\nstderr:\n%s", strings.Join(c.args, " "), code, c.code, out, errOut)
		}
	}
	if code, _, errOut := berth(t, map[string]string{}, "machines", "status"); code != exitUsage || !strings.Contains(errOut, "BERTH_REPO") {
		t.Errorf("status without a repository: exit %d, stderr %s", code, errOut)
	}
}

// buildBerth builds cmd/berth with its version stamped in, for the
// machines: the agent runs there as a built binary.
func buildBerth(t *testing.T, version string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(t.TempDir(), "berth")
	cmd := exec.Command(goBin, "build", "-o", out, "-ldflags", "-X main.version="+version, "berth.dev/berth/cmd/berth")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build berth: %v\n%s", err, b)
	}
	return out
}

// TestMachinesE2E runs berth machines against a lab of three machines:
// bootstrap, status, a killed agent restarted, a changed host key refused,
// an upgrade that keeps a pod running, and uninstall.
func TestMachinesE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("testing.Short: brings up a lab and builds berth twice")
	}
	l := labtest.Start(t, lab.Options{Nodes: 3})
	bin1, bin2 := buildBerth(t, "e2e-1"), buildBerth(t, "e2e-2")
	env := map[string]string{"BERTH_REPO": l.Repo, "BERTH_SSH_KEY": l.SSHKey, "BERTH_KNOWN_HOSTS": l.KnownHosts}
	machines := func(args ...string) (int, string, string) {
		t.Helper()
		code, out, errOut := berth(t, env, append([]string{"machines"}, args...)...)
		t.Logf("berth machines %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		return code, out, errOut
	}
	t.Cleanup(func() {
		for _, m := range l.Machines {
			berth(t, env, "machines", "uninstall", m.Name, "--purge")
		}
	})

	// Usage errors.
	if code, _, _ := machines("uninstall"); code != exitUsage {
		t.Errorf("uninstall without NAME: exit %d, want %d", code, exitUsage)
	}
	if code, _, _ := machines("bootstrap", "nosuch"); code != exitUsage {
		t.Errorf("bootstrap of an unknown machine: exit %d, want %d", code, exitUsage)
	}

	// Bootstrap all three.
	began := time.Now()
	code, out, _ := machines("bootstrap", "--binary", bin1)
	took := time.Since(began)
	if code != exitOK || countAction(out, "installed") != 3 {
		t.Fatalf("bootstrap: exit %d\n%s", code, out)
	}
	t.Logf("FIGURE bootstrap of 3 machines: %v", took.Round(time.Millisecond))

	status := func() (int, []machineStatus) {
		t.Helper()
		code, out, _ := machines("status", "-o", "json")
		var st []machineStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, out)
		}
		return code, st
	}
	code, st := status()
	if code != exitOK || len(st) != 3 {
		t.Fatalf("status: exit %d, %d machines", code, len(st))
	}
	for _, s := range st {
		if !s.Healthy || !s.Reachable || s.Node == nil || s.Node.AgentVersion != "e2e-1" || s.Node.ContainerdVersion == "" {
			t.Errorf("status of %s: %+v", s.Machine, s)
		}
	}
	if code, out, _ := machines("status"); code != exitOK || !strings.HasPrefix(out, "MACHINE") || strings.Count(out, "e2e-1") != 3 {
		t.Errorf("status table: exit %d\n%s", code, out)
	}

	// A killed agent is seen, then restarted by bootstrap.
	lab2 := l.Machines[1]
	pid := readPID(t, filepath.Join(lab2.Agent.StateDir, "agent.pid"))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill agent of lab2: %v", err)
	}
	waitFor(t, 10*time.Second, "lab2 unhealthy", func() bool {
		code, st := status()
		i := slices.IndexFunc(st, func(s machineStatus) bool { return s.Machine == "lab2" })
		return code == exitError && i >= 0 && !st[i].Healthy && st[i].Reachable
	})
	code, out, _ = machines("bootstrap", "--binary", bin1)
	if code != exitOK || !actionLine(out, "lab2", "started", "restarted") || countAction(out, "unchanged") != 2 {
		t.Errorf("bootstrap after a kill: exit %d\n%s", code, out)
	}
	if code, _ := status(); code != exitOK {
		t.Errorf("status after the restart: exit %d", code)
	}

	// An unreachable machine is listed, not fatal.
	gone := repoReplacing(t, l, "address: "+l.Machines[2].Address.Addr().String(), "address: 198.18.0.99")
	code, out, _ = machines("status", "--repo", gone)
	if code != exitError || !actionLine(out, "lab3", "198.18.0.99") || strings.Count(out, " yes ") != 2 || !strings.Contains(out, " no ") {
		t.Errorf("status with lab3 unreachable: exit %d\n%s", code, out)
	}

	// A changed host key is refused, and nothing is uploaded.
	lab1 := l.Machines[0]
	before := fileState(t, lab1.Agent.BinaryPath)
	badRepo := repoReplacing(t, l, lab1.HostKey, newHostKey(t))
	code, out, _ = machines("bootstrap", "--repo", badRepo, "--binary", bin2, "lab1")
	if code != exitError || !strings.Contains(out, "host key mismatch") {
		t.Errorf("bootstrap with a changed host key: exit %d\n%s", code, out)
	}
	if after := fileState(t, lab1.Agent.BinaryPath); after != before {
		t.Errorf("binary changed under a refused host key: %s -> %s", before, after)
	}
	if m, _ := filepath.Glob(lab1.Agent.BinaryPath + ".upload-*"); len(m) > 0 {
		t.Errorf("upload left under a refused host key: %v", m)
	}

	// An unknown host key is refused with the line to pin, then accepted
	// and recorded when asked for.
	lab3 := l.Machines[2]
	unpinned := repoReplacing(t, l, lab3.HostKey, `""`)
	known := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(known, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	keyB64 := strings.Fields(lab3.HostKey)[1]
	code, out, _ = machines("bootstrap", "--repo", unpinned, "--known-hosts", known, "--binary", bin1, "lab3")
	if code != exitError || !strings.Contains(out, "unknown host key") || !strings.Contains(out, "spec.ssh.hostKey: "+strings.Fields(lab3.HostKey)[0]+" "+keyB64) {
		t.Errorf("bootstrap of an unknown host: exit %d\n%s", code, out)
	}
	code, out, _ = machines("bootstrap", "--repo", unpinned, "--known-hosts", known, "--accept-new-host-keys", "--binary", bin1, "lab3")
	if b, _ := os.ReadFile(known); code != exitOK || !strings.Contains(string(b), keyB64) {
		t.Errorf("bootstrap accepting new host keys: exit %d\n%s\nknown_hosts:\n%s", code, out, b)
	}
	if code, _, _ = machines("bootstrap", "--repo", unpinned, "--known-hosts", known, "--binary", bin1, "lab3"); code != exitOK {
		t.Errorf("bootstrap with the recorded key: exit %d", code)
	}

	// A pod on lab1, through agentclient over SSH; the Node latency.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m1 := fleetMachine(t, l, "lab1")
	auth, err := sshx.AuthFrom(l.SSHKey)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sshx.New(m1, sshx.Config{Auth: auth, KnownHostsFile: l.KnownHosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ac := agentclient.New(conn.UnixDialer(m1.Spec.Agent.Socket), agentclient.Options{MaxConns: 4})
	t.Cleanup(ac.Close)
	lat := make([]time.Duration, 200)
	for i := range lat {
		s := time.Now()
		if _, err := ac.Node(ctx); err != nil {
			t.Fatalf("Node call %d: %v", i, err)
		}
		lat[i] = time.Since(s)
	}
	slices.Sort(lat)
	t.Logf("FIGURE agent Node call over a reused SSH connection, 200 calls: p50 %v, p99 %v",
		lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond))

	pod := api.Pod{
		Namespace: "default", Name: "echo", UID: "e2e-echo-1", Hash: "e2e-1",
		Spec: api.PodSpec{
			Containers:    []corev1.Container{{Name: "echo", Image: lab.RegistryHost + "/berth/echo:1"}},
			RestartPolicy: corev1.RestartPolicyAlways,
		},
	}
	if err := ac.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: []api.Pod{pod}}); err != nil {
		t.Fatalf("SetPods: %v", err)
	}
	running := func() string {
		ps, err := ac.Pods(ctx)
		if err != nil || len(ps) != 1 || ps[0].Phase != corev1.PodRunning || len(ps[0].ContainerStatuses) != 1 {
			return ""
		}
		c := ps[0].ContainerStatuses[0]
		if c.State.Running == nil {
			return ""
		}
		return c.ContainerID
	}
	var cid string
	waitFor(t, 2*time.Minute, "the echo pod running", func() bool { cid = running(); return cid != "" })

	// The upgrade: one machine at a time, the pod running on.
	code, out, _ = machines("bootstrap", "--binary", bin2)
	if code != exitOK || countAction(out, "upgraded") != 3 {
		t.Errorf("upgrade: exit %d\n%s", code, out)
	}
	code, st = status()
	for _, s := range st {
		if s.Node == nil || s.Node.AgentVersion != "e2e-2" {
			t.Errorf("after the upgrade, %s: %+v", s.Machine, s)
		}
	}
	var after string
	waitFor(t, 30*time.Second, "the echo pod running after the upgrade", func() bool { after = running(); return after != "" })
	if after != cid {
		t.Errorf("the upgrade replaced the pod's container: %s -> %s", cid, after)
	}

	// An image archive imported onto lab1, streamed through SSH, runs
	// there with imagePullPolicy Never; a truncated one is refused by the
	// agent, and lab2 never had the image.
	archive := filepath.Join(t.TempDir(), "echo-2.tar")
	if err := images.WriteOCIArchive(testenv.EchoImage(t, "2"), images.EchoRef("", "2"), archive); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.tar")
	if err := os.WriteFile(truncated, whole[:len(whole)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = machines("import-image", truncated, "lab1")
	if code != exitError || !actionLine(out, "lab1", "failed") || !strings.Contains(out, "invalid request") {
		t.Errorf("import of a truncated archive: exit %d\n%s", code, out)
	}
	began = time.Now()
	code, out, _ = machines("import-image", archive, "lab1")
	if code != exitOK || !strings.Contains(out, "lab1         imported docker.io/berth/echo:2 (id ") {
		t.Fatalf("import-image: exit %d\n%s", code, out)
	}
	t.Logf("FIGURE import-image of a %d KiB archive onto one machine over SSH: %v", len(whole)>>10, time.Since(began).Round(time.Millisecond))
	local := api.Pod{
		Namespace: "default", Name: "echo-local", UID: "e2e-echo-local-1", Hash: "e2e-1",
		Spec: api.PodSpec{
			Containers:    []corev1.Container{{Name: "echo", Image: "berth/echo:2", ImagePullPolicy: corev1.PullNever}},
			RestartPolicy: corev1.RestartPolicyAlways,
		},
	}
	if err := ac.SetPods(ctx, api.DesiredPods{Generation: 2, Pods: []api.Pod{pod, local}}); err != nil {
		t.Fatalf("SetPods: %v", err)
	}
	waitFor(t, time.Minute, "the pod of the imported image running on lab1", func() bool {
		ps, err := ac.Pods(ctx)
		i := slices.IndexFunc(ps, func(p api.PodStatus) bool { return p.Name == "echo-local" })
		return err == nil && i >= 0 && len(ps[i].ContainerStatuses) == 1 && ps[i].ContainerStatuses[0].State.Running != nil
	})
	m2 := fleetMachine(t, l, "lab2")
	conn2, err := sshx.New(m2, sshx.Config{Auth: auth, KnownHostsFile: l.KnownHosts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn2.Close() })
	ac2 := agentclient.New(conn2.UnixDialer(m2.Spec.Agent.Socket), agentclient.Options{MaxConns: 2})
	t.Cleanup(ac2.Close)
	local.UID = "e2e-echo-local-2"
	if err := ac2.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: []api.Pod{local}}); err != nil {
		t.Fatalf("SetPods on lab2: %v", err)
	}
	waitFor(t, 30*time.Second, "ErrImageNeverPull on lab2", func() bool {
		ps, err := ac2.Pods(ctx)
		if err != nil || len(ps) != 1 || len(ps[0].ContainerStatuses) != 1 {
			return false
		}
		w := ps[0].ContainerStatuses[0].State.Waiting
		return w != nil && w.Reason == "ErrImageNeverPull"
	})
	if err := ac2.SetPods(ctx, api.DesiredPods{Generation: 2, Pods: []api.Pod{}}); err != nil {
		t.Fatalf("SetPods on lab2: %v", err)
	}

	// Uninstall with purge.
	code, out, _ = machines("uninstall", "lab1", "--purge")
	if code != exitOK || !strings.Contains(out, "2 pods stopped") {
		t.Errorf("uninstall --purge: exit %d\n%s", code, out)
	}
	for _, p := range []string{lab1.Agent.BinaryPath, lab1.Agent.StateDir, lab1.Agent.Socket} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("after uninstall --purge, %s: %v", p, err)
		}
	}
	if code, _ := status(); code != exitError {
		t.Errorf("status with lab1 uninstalled: exit %d, want %d", code, exitError)
	}
}

// countAction counts the machines whose line says action.
func countAction(out, action string) int {
	n := 0
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[0], "lab") && f[1] == action {
			n++
		}
	}
	return n
}

// actionLine reports whether out has a line of machine whose second
// column is one of actions.
func actionLine(out, machine string, actions ...string) bool {
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == machine && slices.Contains(actions, f[1]) {
			return true
		}
	}
	return false
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pidfile %s: %v", file, err)
	}
	return pid
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(d); ; {
		if ok() {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("no %s after %v", what, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fileState is a file's size, mtime and content, to tell whether it was
// replaced.
func fileState(t *testing.T, p string) string {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := fileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime().String() + " " + sum
}

// fleetMachine is a Machine of the lab's fleet repository.
func fleetMachine(t *testing.T, l *lab.Lab, name string) *v1alpha1.Machine {
	t.Helper()
	d, err := loadRevision(context.Background(), l.Repo, "main", ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range d.Machines() {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no machine %s in %s", name, l.Repo)
	return nil
}

// newHostKey is a fresh ed25519 public key in authorized_keys format.
func newHostKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

// repoReplacing copies the lab's fleet repository with old replaced by
// newText in machines.yaml: a pinned host key by a fresh one, as if the
// machine had been reinstalled (or someone sat in the middle), or by none;
// an address by one where nothing answers.
func repoReplacing(t *testing.T, l *lab.Lab, old, newText string) string {
	t.Helper()
	r, err := git.PlainOpen(l.Repo)
	if err != nil {
		t.Fatal(err)
	}
	head, err := r.Head()
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.CommitObject(head.Hash())
	if err != nil {
		t.Fatal(err)
	}
	tree, err := c.Tree()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	if err := tree.Files().ForEach(func(f *object.File) error {
		s, err := f.Contents()
		files[f.Name] = s
		return err
	}); err != nil {
		t.Fatal(err)
	}
	old = strings.TrimSpace(old)
	if !strings.Contains(files["machines.yaml"], old) {
		t.Fatalf("machines.yaml has no %q:\n%s", old, files["machines.yaml"])
	}
	files["machines.yaml"] = strings.Replace(files["machines.yaml"], old, newText, 1)
	repo := gittest.New(t)
	repo.Commit(files, "host key changed")
	return repo.Path()
}
