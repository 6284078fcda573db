package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/nodes/agent/probe"
	"berth.dev/berth/nodes/api"
)

// harness runs a real Manager on the fake runtime and a fake clock.
type harness struct {
	t        *testing.T
	clock    *fakeClock
	rt       *fakeRuntime
	stateDir string
	logDir   string
	m        *Manager
	// network is the Manager's NetworkApplier (none when nil).
	network NetworkApplier

	cancel context.CancelFunc
	done   chan struct{}

	probeMu sync.Mutex
	// probeOK scripts probe results by "container/Kind" (default success);
	// probeRuns counts attempts.
	probeOK   map[string]bool
	probeRuns map[string]int
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t)
}

// newHarnessWith is newHarness with the harness changed by modify before
// the first Manager starts.
func newHarnessWith(t *testing.T, modify ...func(*harness)) *harness {
	t.Helper()
	clock := newFakeClock()
	h := &harness{
		t: t, clock: clock, rt: newFakeRuntime(t, clock),
		stateDir: t.TempDir(), logDir: t.TempDir(),
		probeOK: map[string]bool{}, probeRuns: map[string]int{},
	}
	h.rt.registry["berth/echo:1"] = true
	h.rt.registry["berth/echo:2"] = true
	for _, m := range modify {
		m(h)
	}
	h.start()
	t.Cleanup(func() {
		h.stop()
		removePodDir(filepath.Join(h.stateDir, "pods")) // tmpfs volumes
	})
	return h
}

func (h *harness) newManager() *Manager {
	h.t.Helper()
	m, err := New(Options{
		Runtime: h.rt, StateDir: h.stateDir, LogDir: h.logDir, NodeName: "node-1", Clock: h.clock, Network: h.network,
		Logger: slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	m.runProbe = func(ctx context.Context, hd *corev1.ProbeHandler, tg probe.Target, timeout time.Duration) (bool, string) {
		kind := probeKindOf(hd)
		h.probeMu.Lock()
		defer h.probeMu.Unlock()
		h.probeRuns[kind]++
		ok, set := h.probeOK[kind]
		if !set || ok {
			return true, ""
		}
		return false, "HTTP probe failed with statuscode: 503"
	}
	return m
}

// probeKindOf names a probe by the path or command the tests give it:
// "<container>/<Kind>".
func probeKindOf(hd *corev1.ProbeHandler) string {
	switch {
	case hd.HTTPGet != nil:
		return strings.TrimPrefix(hd.HTTPGet.Path, "/")
	case hd.Exec != nil:
		return hd.Exec.Command[len(hd.Exec.Command)-1]
	}
	return "?"
}

func (h *harness) setProbe(kind string, ok bool) {
	h.probeMu.Lock()
	h.probeOK[kind] = ok
	h.probeMu.Unlock()
}

func (h *harness) probeCount(kind string) int {
	h.probeMu.Lock()
	defer h.probeMu.Unlock()
	return h.probeRuns[kind]
}

func (h *harness) start() {
	h.m = h.newManager()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	m := h.m
	go func() {
		defer close(h.done)
		if err := m.Run(ctx); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}()
	h.settle()
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

// restart is an agent restart: a new Manager on the same state and runtime.
func (h *harness) restart() {
	h.stop()
	h.start()
}

// settle waits until the manager has nothing queued or running.
func (h *harness) settle() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	quiet := 0
	for quiet < 3 {
		if h.m.busy.Load() == 0 {
			quiet++
			runtime.Gosched()
			continue
		}
		quiet = 0
		if time.Now().After(deadline) {
			h.t.Fatalf("manager did not settle (busy=%d)", h.m.busy.Load())
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// advance moves the clock in steps of at most a second, settling after
// each, so that every timer is acted on at its time.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	for d > 0 {
		step := min(d, time.Second)
		h.clock.Advance(step)
		h.settle()
		d -= step
	}
}

func (h *harness) set(gen int64, pods ...api.Pod) {
	h.t.Helper()
	if err := h.m.SetPods(context.Background(), api.DesiredPods{Generation: gen, Pods: pods}); err != nil {
		h.t.Fatalf("SetPods: %v", err)
	}
	h.settle()
}

func (h *harness) pods() []api.PodStatus {
	h.t.Helper()
	sts, err := h.m.Pods(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return sts
}

func (h *harness) pod(key string) api.PodStatus {
	h.t.Helper()
	for _, s := range h.pods() {
		if s.Namespace+"/"+s.Name == key && !s.Terminating {
			return s
		}
	}
	h.t.Fatalf("no status for %s", key)
	return api.PodStatus{}
}

// dump renders the statuses as text, for comparisons.
func (h *harness) dump() string {
	var b strings.Builder
	for _, s := range h.pods() {
		fmt.Fprintf(&b, "%s/%s %s", s.Namespace, s.Name, s.Phase)
		if s.Ready {
			b.WriteString(" ready")
		}
		if s.Terminating {
			b.WriteString(" terminating")
		}
		if s.Reason != "" {
			fmt.Fprintf(&b, " reason=%s", s.Reason)
		}
		b.WriteString("\n")
		for _, c := range s.InitContainerStatuses {
			fmt.Fprintf(&b, "  init %s\n", containerLine(c))
		}
		for _, c := range s.ContainerStatuses {
			fmt.Fprintf(&b, "  %s\n", containerLine(c))
		}
	}
	return b.String()
}

func containerLine(c api.ContainerStatus) string {
	s := c.Name + " "
	switch {
	case c.State.Running != nil:
		s += "running"
	case c.State.Waiting != nil:
		s += "waiting:" + c.State.Waiting.Reason
	case c.State.Terminated != nil:
		s += fmt.Sprintf("terminated:%s(%d)", c.State.Terminated.Reason, c.State.Terminated.ExitCode)
	}
	if lt := c.LastState.Terminated; lt != nil {
		s += fmt.Sprintf(" last=%s(%d)", lt.Reason, lt.ExitCode)
	}
	s += fmt.Sprintf(" restarts=%d", c.RestartCount)
	if c.Started {
		s += " started"
	}
	if c.Ready {
		s += " ready"
	}
	return s
}

func (h *harness) events() []api.Event {
	return h.m.events.snapshot(time.Time{})
}

// eventLines renders events (but DesiredPods) as "Reason container: message".
func (h *harness) eventLines(pod string) []string {
	var out []string
	for _, e := range h.events() {
		if e.Reason == "DesiredPods" || (pod != "" && e.Pod != pod) {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s: %s", e.Reason, e.Container, e.Message))
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Pod builders.

func mkPod(name string, containers ...corev1.Container) api.Pod {
	return api.Pod{
		Namespace: "default", Name: name, UID: name + "-uid", Hash: "h1",
		Spec: api.PodSpec{Containers: containers, RestartPolicy: corev1.RestartPolicyAlways},
	}
}

func ctr(name string, cmd ...string) corev1.Container {
	return corev1.Container{Name: name, Image: "berth/echo:1", Command: cmd}
}

func httpProbe(path string) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/" + path, Port: intstr.FromInt32(8080)}}}
}

func ptr[T any](v T) *T { return &v }

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
