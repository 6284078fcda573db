package fleet_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/agent/httpapi"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/fleet"
	"berth.dev/berth/nodes/logs"
	"berth.dev/berth/nodes/runtime"
	"berth.dev/berth/nodes/sshx"
	"berth.dev/berth/nodes/sshx/sshtest"
	"berth.dev/berth/render/api/v1alpha1"
)

// TestMain lets the test binary stand in for the berth binary as the
// containers' log driver (the runtime's LoggerPath is this executable).
func TestMain(m *testing.M) {
	logs.RunIfDriver()
	os.Exit(m.Run())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startAgent runs a real agent (pod manager on containerd, HTTP API on a
// unix socket) in this process until the test ends, and returns its socket.
func startAgent(t *testing.T, cd *testenv.ContainerdDaemon, reg *testenv.RegistryDaemon, node string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-fleet-")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rt, err := runtime.New(context.Background(), runtime.Options{
		Address: cd.Address(), Namespace: "berth-fleet-" + hex.EncodeToString(b), StateDir: filepath.Join(dir, "rt"),
		Registries: []v1alpha1.Registry{{Host: reg.Host(), PlainHTTP: true}},
		Logger:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := agent.New(agent.Options{Runtime: rt, StateDir: filepath.Join(dir, "agent"), LogDir: filepath.Join(dir, "logs"), NodeName: node, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	l, err := httpapi.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { m.Run(ctx); done <- struct{}{} }()
	go func() { httpapi.Serve(ctx, l, httpapi.NewHandler(m, httpapi.Options{Logger: log})); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		l.Close()
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		ctrs, _ := rt.ListContainers(cctx)
		for _, c := range ctrs {
			rt.StopContainer(cctx, c.ID, 0)
			rt.RemoveContainer(cctx, c.ID)
		}
		sbs, _ := rt.ListSandboxes(cctx)
		for _, sb := range sbs {
			rt.RemoveSandbox(cctx, sb.PodUID)
		}
		rt.Close()
		os.RemoveAll(dir)
	})
	return sock
}

func machine(name, addr string, port int, hostKey, socket string) *v1alpha1.Machine {
	m := &v1alpha1.Machine{ObjectMeta: metav1.ObjectMeta{Name: name}}
	m.Spec.Address = addr
	m.Spec.SSH = v1alpha1.SSHSpec{User: "root", Port: int32(port), HostKey: hostKey}
	m.Spec.Agent.Socket = socket
	return m
}

// A fleet of three: one machine with a real agent behind a real sshd, one
// that does not answer, one whose host key is not the pinned one.
func TestFleet(t *testing.T) {
	testenv.RequireRoot(t)
	cd := testenv.Containerd(t)
	reg := testenv.EchoRegistry(t)
	srv := sshtest.Start(t, sshtest.Options{})
	sock := startAgent(t, cd, reg, "m1")

	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewPublicKey(pub)
	wrongKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other)))
	machines := []*v1alpha1.Machine{
		machine("m1", srv.Host, srv.Port, srv.HostKeyLine(), sock),
		machine("m2", "127.0.0.1", testenv.FreePort(t), srv.HostKeyLine(), sock),
		machine("m3", srv.Host, srv.Port, wrongKey, sock),
	}
	auth, err := sshx.KeyFile(srv.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fleet.New(machines, fleet.Options{
		SSH:            sshx.Config{Auth: auth, HandshakeTimeout: 3 * time.Second, MinBackoff: 10 * time.Millisecond},
		ObserveTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	obs, err := f.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(obs) != 3 || obs[0].Machine != "m1" || obs[1].Machine != "m2" || obs[2].Machine != "m3" {
		t.Fatalf("observations %+v", obs)
	}
	if !obs[0].Reachable || obs[0].Node.Name != "m1" || obs[0].Err != nil {
		t.Errorf("m1: reachable %v node %q err %v", obs[0].Reachable, obs[0].Node.Name, obs[0].Err)
	}
	if obs[1].Reachable || !errors.Is(obs[1].Err, sshx.ErrUnreachable) {
		t.Errorf("m2 (nothing listening): reachable %v err %v; want ErrUnreachable", obs[1].Reachable, obs[1].Err)
	}
	if obs[2].Reachable || !errors.Is(obs[2].Err, sshx.ErrHostKeyMismatch) || !strings.Contains(obs[2].Err.Error(), "m3") {
		t.Errorf("m3 (wrong pin): reachable %v err %v; want a host key mismatch naming m3", obs[2].Reachable, obs[2].Err)
	}

	pod := api.Pod{Namespace: "default", Name: "web", UID: "fleet-web-1", Hash: "h1", Spec: api.PodSpec{
		RestartPolicy: corev1.RestartPolicyAlways,
		Containers: []corev1.Container{{Name: "echo", Image: reg.Ref("berth/echo:1"),
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1}}},
	}}
	if err := f.SetPods(ctx, "m1", api.DesiredPods{Generation: 1, Pods: []api.Pod{pod}}); err != nil {
		t.Fatal(err)
	}
	if err := f.SetPods(ctx, "m1", api.DesiredPods{Generation: 0, Pods: []api.Pod{}}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("an older generation: %v; want ErrConflict", err)
	}
	if err := f.SetPods(ctx, "m2", api.DesiredPods{Generation: 1}); !errors.Is(err, sshx.ErrUnreachable) || !strings.Contains(err.Error(), "machine m2") {
		t.Errorf("SetPods to an unreachable machine: %v", err)
	}
	for {
		obs, err := f.Observe(ctx)
		if err != nil {
			t.Fatalf("pod web never ready: %v", err)
		}
		if p := obs[0].Pods; len(p) == 1 && p[0].Ready {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := f.Update(machines[:2]); err != nil {
		t.Fatal(err)
	}
	if got := f.Names(); len(got) != 2 || got[1] != "m2" {
		t.Errorf("names after update: %v", got)
	}
	if err := f.SetPods(ctx, "m3", api.DesiredPods{Generation: 1}); err == nil || !strings.Contains(err.Error(), "no machine m3") {
		t.Errorf("SetPods to a removed machine: %v", err)
	}
	// Leave the agent with nothing running.
	if err := f.SetPods(ctx, "m1", api.DesiredPods{Generation: 2, Pods: []api.Pod{}}); err != nil {
		t.Fatal(err)
	}
}
