package agent_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/agent/probe"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/logs"
	"berth.dev/berth/nodes/runtime"
	"berth.dev/berth/render/api/v1alpha1"
)

// TestMain lets the test binary stand in for the berth binary as the
// containers' log driver (the runtime's LoggerPath defaults to this
// executable, which containerd's shim runs as `<binary> __log-driver`).
func TestMain(m *testing.M) {
	logs.RunIfDriver()
	os.Exit(m.Run())
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// newContainerdRuntime is a nodes/runtime Runtime on its own namespace and
// state in the test's containerd, pulling from reg.
func newContainerdRuntime(t *testing.T, cd *testenv.ContainerdDaemon, reg *testenv.RegistryDaemon, ns, state string) *runtime.Runtime {
	t.Helper()
	rt, err := runtime.New(context.Background(), runtime.Options{
		Address: cd.Address(), Namespace: ns, StateDir: state,
		Registries: []v1alpha1.Registry{{Host: reg.Host(), PlainHTTP: true}},
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// cleanupRuntime stops and removes what a test left in the runtime.
func cleanupRuntime(t *testing.T, rt agent.Runtime) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctrs, _ := rt.ListContainers(ctx)
	for _, c := range ctrs {
		rt.StopContainer(ctx, c.ID, 0)
		rt.RemoveContainer(ctx, c.ID)
	}
	sbs, _ := rt.ListSandboxes(ctx)
	for _, sb := range sbs {
		rt.RemoveSandbox(ctx, sb.PodUID)
	}
}

func TestRuntimeSuiteContainerd(t *testing.T) {
	testenv.RequireRoot(t)
	cd := testenv.Containerd(t)
	reg := testenv.EchoRegistry(t)
	agent.RuntimeSuite(t, func(t *testing.T) agent.SuiteEnv {
		dir, err := os.MkdirTemp("", "berth-agent-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		rt := newContainerdRuntime(t, cd, reg, randomName("suite-"), filepath.Join(dir, "state"))
		t.Cleanup(func() { cleanupRuntime(t, rt) })
		return agent.NewSuiteEnv(rt, reg.Ref("berth/echo:1"), reg.Ref("berth/missing:1"), filepath.Join(dir, "logs"), 30*time.Second)
	})
}

// agentEnv is a Manager on containerd, started and restartable.
type agentEnv struct {
	t        *testing.T
	cd       *testenv.ContainerdDaemon
	reg      *testenv.RegistryDaemon
	ns       string
	stateDir string
	rtDir    string
	logDir   string
	rt       *runtime.Runtime
	m        *agent.Manager
	cancel   context.CancelFunc
	done     chan struct{}
}

func newAgentEnv(t *testing.T) *agentEnv {
	testenv.RequireRoot(t)
	e, _ := prepareAgentEnv(t, testenv.Containerd(t), testenv.EchoRegistry(t), "agent-", nil)
	e.start()
	return e
}

// prepareAgentEnv makes an agentEnv's containerd namespace name and
// directories (and returns the directory holding them). When the test
// ends, stop (e.stop when nil) stops the agent, then its pods and
// directories are removed.
func prepareAgentEnv(t *testing.T, cd *testenv.ContainerdDaemon, reg *testenv.RegistryDaemon, prefix string, stop func()) (*agentEnv, string) {
	dir, err := os.MkdirTemp("", "berth-"+prefix)
	if err != nil {
		t.Fatal(err)
	}
	e := &agentEnv{t: t, cd: cd, reg: reg, ns: randomName(prefix),
		stateDir: filepath.Join(dir, "agent"), rtDir: filepath.Join(dir, "rt"), logDir: filepath.Join(dir, "logs")}
	if stop == nil {
		stop = e.stop
	}
	t.Cleanup(func() {
		stop()
		cleanupRuntime(t, newContainerdRuntime(t, cd, reg, e.ns, e.rtDir))
		os.RemoveAll(dir)
	})
	return e, dir
}

func (e *agentEnv) start() {
	e.rt = newContainerdRuntime(e.t, e.cd, e.reg, e.ns, e.rtDir)
	m, err := agent.New(agent.Options{
		Runtime: e.rt, StateDir: e.stateDir, LogDir: e.logDir, NodeName: "node-1",
		Logger: slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.m, e.cancel, e.done = m, cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		m.Run(ctx)
	}()
}

func (e *agentEnv) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

// waitPod polls the pod's status until ok says so.
func (e *agentEnv) waitPod(key string, timeout time.Duration, what string, ok func(api.PodStatus) bool) api.PodStatus {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var last api.PodStatus
	for {
		sts, _ := e.m.Pods(context.Background())
		for _, s := range sts {
			if s.Namespace+"/"+s.Name == key && !s.Terminating {
				last = s
				if ok(s) {
					return s
				}
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: %s not so after %v; last status %+v", key, what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *agentEnv) netns(uid string) string {
	e.t.Helper()
	sbs, err := e.rt.ListSandboxes(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	for _, sb := range sbs {
		if sb.PodUID == uid {
			return sb.NetNS
		}
	}
	e.t.Fatalf("no sandbox for %s", uid)
	return ""
}

// post sends a POST to the pod's echo server, inside its network namespace.
func (e *agentEnv) post(uid, path string) {
	e.t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: probe.DialContext(e.netns(uid)), DisableKeepAlives: true}}
	resp, err := c.Post("http://127.0.0.1:8080"+path, "text/plain", nil)
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func echoPod(e *agentEnv, name string) api.Pod {
	c := corev1.Container{
		Name: "echo", Image: e.reg.Ref("berth/echo:1"),
		Env:   []corev1.EnvVar{{Name: "POD_NAME", Value: name}},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
			PeriodSeconds: 1, FailureThreshold: 1,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
			PeriodSeconds: 1, FailureThreshold: 2,
		},
	}
	return api.Pod{
		Namespace: "default", Name: name, UID: randomName(name + "-"), Hash: "h1",
		Spec: api.PodSpec{RestartPolicy: corev1.RestartPolicyAlways, Containers: []corev1.Container{c},
			TerminationGracePeriodSeconds: ptr(int64(10))},
	}
}

func ptr[T any](v T) *T { return &v }

func TestComponentManager(t *testing.T) {
	e := newAgentEnv(t)
	ctx := context.Background()
	ready := func(s api.PodStatus) bool { return s.Ready }

	web := echoPod(e, "web")
	web.Spec.Containers[0].Env = append(web.Spec.Containers[0].Env, corev1.EnvVar{Name: "ECHO_DRAIN", Value: "2s"})
	crash := echoPod(e, "crash")
	crash.Spec.Containers[0].Command = []string{"sh", "-c", "echo dying; exit 3"}
	crash.Spec.Containers[0].ReadinessProbe, crash.Spec.Containers[0].LivenessProbe = nil, nil
	missing := echoPod(e, "missing")
	missing.Spec.Containers[0].Image = e.reg.Ref("berth/missing:1")
	if err := e.m.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: []api.Pod{web, crash, missing}}); err != nil {
		t.Fatal(err)
	}

	t.Run("RunsAndBecomesReady", func(t *testing.T) {
		st := e.waitPod("default/web", 60*time.Second, "ready", ready)
		if st.Phase != corev1.PodRunning || st.ContainerStatuses[0].ImageID == "" {
			t.Errorf("status %+v", st)
		}
	})
	t.Run("MissingImageDoesNotStopOthers", func(t *testing.T) {
		st := e.waitPod("default/missing", 30*time.Second, "ErrImagePull or ImagePullBackOff", func(s api.PodStatus) bool {
			w := s.ContainerStatuses[0].State.Waiting
			return w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") && strings.Contains(w.Message, "berth/missing")
		})
		t.Logf("missing image: %s", st.ContainerStatuses[0].State.Waiting.Message)
		e.waitPod("default/web", time.Second, "ready", ready)
	})
	t.Run("CrashLoop", func(t *testing.T) {
		st := e.waitPod("default/crash", 60*time.Second, "CrashLoopBackOff", func(s api.PodStatus) bool {
			w := s.ContainerStatuses[0].State.Waiting
			return w != nil && w.Reason == "CrashLoopBackOff"
		})
		cs := st.ContainerStatuses[0]
		if cs.RestartCount < 1 || cs.LastState.Terminated == nil || cs.LastState.Terminated.ExitCode != 3 {
			t.Errorf("crash loop status %+v", cs)
		}
		var b strings.Builder
		if err := e.m.Logs(ctx, "default/crash", api.LogOptions{}, &b); err != nil || b.String() != "dying\n" {
			t.Errorf("logs of the crashing container = %q, %v", b.String(), err)
		}
	})
	t.Run("ReadinessFlip", func(t *testing.T) {
		e.post(web.UID, "/readyz/fail")
		e.waitPod("default/web", 10*time.Second, "unready", func(s api.PodStatus) bool { return !s.Ready && s.ContainerStatuses[0].RestartCount == 0 })
		e.post(web.UID, "/readyz/ok")
		e.waitPod("default/web", 10*time.Second, "ready again", ready)
	})
	t.Run("LivenessRestarts", func(t *testing.T) {
		before := e.waitPod("default/web", time.Second, "ready", ready).ContainerStatuses[0].ContainerID
		e.post(web.UID, "/healthz/fail")
		st := e.waitPod("default/web", 30*time.Second, "restarted and ready", func(s api.PodStatus) bool {
			return s.Ready && s.ContainerStatuses[0].RestartCount == 1
		})
		if st.ContainerStatuses[0].ContainerID == before {
			t.Error("same container after a liveness restart")
		}
	})
	t.Run("AgentRestartAdopts", func(t *testing.T) {
		before := e.waitPod("default/web", time.Second, "ready", ready).ContainerStatuses[0]
		e.stop()
		e.start()
		// Adopted, not restarted: same instance, and ready once probed.
		st := e.waitPod("default/web", 20*time.Second, "ready", ready)
		got := st.ContainerStatuses[0]
		if got.ContainerID != before.ContainerID || got.RestartCount != before.RestartCount {
			t.Errorf("after an agent restart: container %s restarts %d; want %s, %d", got.ContainerID, got.RestartCount, before.ContainerID, before.RestartCount)
		}
	})
	t.Run("ContainerdRestart", func(t *testing.T) {
		before := e.waitPod("default/web", time.Second, "ready", ready).ContainerStatuses[0]
		n, err := e.m.Node(ctx)
		if err != nil || n.RuntimeError != "" || n.ContainerdVersion == "" {
			t.Fatalf("Node: %+v, %v", n, err)
		}
		if mem := n.Usage[corev1.ResourceMemory]; mem.Value() < 1<<20 {
			t.Errorf("Node: memory usage of the running pods %v; want their cgroups' working set", mem.String())
		}
		e.cd.Stop(t)
		t0 := time.Now()
		n, err = e.m.Node(ctx)
		if d := time.Since(t0); err != nil || d > 3*time.Second {
			t.Errorf("Node with containerd down: %v after %v; want an answer within a few seconds", err, d)
		}
		if n.RuntimeError == "" || !strings.HasPrefix(n.ContainerdVersion, "containerd ") {
			t.Errorf("Node with containerd down: runtimeError %q, containerdVersion %q; want the error and the version last seen", n.RuntimeError, n.ContainerdVersion)
		}
		if _, err := e.m.Pods(ctx); err != nil {
			t.Errorf("Pods with containerd down: %v", err)
		}
		// Changes made while containerd is down are carried out once it is back.
		late := echoPod(e, "late")
		if err := e.m.SetPods(ctx, api.DesiredPods{Generation: 2, Pods: []api.Pod{web, crash, missing, late}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		e.cd.Start(t)
		e.waitPod("default/late", 60*time.Second, "ready", ready)
		got := e.waitPod("default/web", 20*time.Second, "ready", ready).ContainerStatuses[0]
		if got.ContainerID != before.ContainerID || got.RestartCount != before.RestartCount {
			t.Errorf("after a containerd restart: container %s restarts %d; want %s, %d (not restarted)", got.ContainerID, got.RestartCount, before.ContainerID, before.RestartCount)
		}
		if n, err := e.m.Node(ctx); err != nil || n.RuntimeError != "" {
			t.Errorf("Node after containerd is back: %+v, %v", n.RuntimeError, err)
		}
	})
	t.Run("GracefulTermination", func(t *testing.T) {
		t0 := time.Now()
		if err := e.m.SetPods(ctx, api.DesiredPods{Generation: 3, Pods: []api.Pod{crash, missing}}); err != nil {
			t.Fatal(err)
		}
		sts, _ := e.m.Pods(ctx)
		terminating := false
		for _, s := range sts {
			terminating = terminating || (s.Name == "web" && s.Terminating && !s.Ready)
		}
		if !terminating {
			t.Errorf("web is not terminating right after its removal: %+v", sts)
		}
		for {
			sts, _ := e.m.Pods(ctx)
			gone := true
			for _, s := range sts {
				gone = gone && s.Name != "web"
			}
			if gone {
				break
			}
			if time.Since(t0) > 30*time.Second {
				t.Fatalf("web still there after 30s")
			}
			time.Sleep(50 * time.Millisecond)
		}
		// echo drains for 2s on SIGTERM, then exits 0: well within the
		// 10s grace, so no SIGKILL.
		if d := time.Since(t0); d < 2*time.Second || d > 9*time.Second {
			t.Errorf("termination took %v; want the 2s drain, not the 10s grace", d)
		}
		ctrs, _ := e.rt.ListContainers(ctx)
		for _, c := range ctrs {
			if c.Labels[api.LabelPodUID] == web.UID {
				t.Errorf("container %s of the removed pod is still there", c.ID)
			}
		}
	})
}
