package sshx

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/sshx/sshtest"
)

// buildBerth builds cmd/berth with version stamped in.
func buildBerth(t testing.TB, version string) string {
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

// TestBootstrapRealAgent installs the real `berth agent` against a real
// containerd through the real sshd, upgrades it, and uninstalls it.
func TestBootstrapRealAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("testing.Short: builds berth twice and runs containerd")
	}
	cd := testenv.Containerd(t)
	mc := newMachine(t, sshtest.Options{})
	mc.m.Spec.Agent.ContainerdAddress = cd.Address()
	var err error
	if mc.paths, err = resolvePaths(mc.m); err != nil {
		t.Fatal(err)
	}
	ns := make([]byte, 4)
	rand.Read(ns)
	opts := BootstrapOptions{
		Machine:     mc.m,
		BinaryPath:  buildBerth(t, "sshx-test-1"),
		Version:     "sshx-test-1",
		Namespace:   "berth-sshx-" + hex.EncodeToString(ns),
		WaitTimeout: 30 * time.Second,
		Logger:      mc.log,
	}
	fi, _ := os.Stat(opts.BinaryPath)
	rep := mc.bootstrap(opts)
	t.Logf("install of a %d MB binary: %v", fi.Size()>>20, rep.Duration.Round(time.Millisecond))
	if rep.Action != "installed" || rep.VersionAgreement != "same version sshx-test-1" {
		t.Errorf("install: action %q, agreement %q", rep.Action, rep.VersionAgreement)
	}
	ac := agentClient(mc.conn, mc.paths.Socket)
	node, err := ac.Node(ctxT(t, 10*time.Second))
	ac.Close()
	if err != nil || node.Name != "lab1" || node.ContainerdVersion == "" {
		t.Errorf("GET /v1/node = %+v, %v", node, err)
	}

	rep = mc.bootstrap(opts)
	t.Logf("second bootstrap: %v", rep.Duration.Round(time.Millisecond))
	if rep.Action != "unchanged" || rep.Uploaded {
		t.Errorf("second bootstrap: action %q, uploaded %v", rep.Action, rep.Uploaded)
	}

	opts.BinaryPath, opts.Version = buildBerth(t, "sshx-test-2"), "sshx-test-2"
	rep = mc.bootstrap(opts)
	t.Logf("upgrade: %v", rep.Duration.Round(time.Millisecond))
	if rep.Action != "upgraded" || rep.PreviousVersion != "sshx-test-1" || rep.AgentVersion != "sshx-test-2" {
		t.Errorf("upgrade: action %q, %q -> %q", rep.Action, rep.PreviousVersion, rep.AgentVersion)
	}

	pid := mc.agentPID()
	urep, err := Uninstall(ctxT(t, 60*time.Second), mc.conn, mc.m, UninstallOptions{Purge: true, Logger: mc.log})
	if err != nil {
		t.Fatal(err)
	}
	if len(urep.Warnings) > 0 || !waitDead(pid, 5*time.Second) {
		t.Errorf("uninstall: %+v; agent %d alive %v", urep, pid, processAlive(pid))
	}
	for _, p := range []string{mc.paths.Binary, mc.paths.Socket, mc.paths.StateDir} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", p, err)
		}
	}
}
