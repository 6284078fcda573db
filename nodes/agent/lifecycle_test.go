package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

func filterCalls(calls []string, prefixes ...string) []string {
	var out []string
	for _, c := range calls {
		for _, p := range prefixes {
			if strings.HasPrefix(c, p) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

func TestTerminationOrder(t *testing.T) {
	h := newHarness(t)
	c := ctr("app")
	c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "drain"}}}}
	p := mkPod("web", c)
	p.Spec.TerminationGracePeriodSeconds = ptr(int64(20))
	p.Spec.Volumes = []api.Volume{{Name: "scratch", EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	h.set(1, p, mkPod("other", ctr("app")))
	logDir := h.m.logDir("default/web", p.UID)
	podDir := filepath.Join(h.stateDir, "pods", p.UID)
	if !fileExists(logDir) || !fileExists(podDir) {
		t.Fatalf("log dir %v, pod dir %v before termination; want both", fileExists(logDir), fileExists(podDir))
	}
	h.rt.takeCalls()

	// Hold the preStop hook, to look at the status while it runs.
	inHook, release := make(chan struct{}), make(chan struct{})
	h.rt.execFn = func(fc *fakeContainer, cmd []string) int {
		close(inHook)
		<-release
		return 0
	}
	if err := h.m.SetPods(context.Background(), api.DesiredPods{Generation: 2, Pods: []api.Pod{mkPod("other", ctr("app"))}}); err != nil {
		t.Fatal(err)
	}
	// Terminating at once: endpoints drop the pod before it is signalled.
	if st := h.pods()[1]; st.Name != "web" || !st.Terminating || st.Ready {
		t.Errorf("status right after removal: %+v; want web terminating, not ready", st)
	}
	<-inHook
	if st := h.pods()[1]; !st.Terminating || st.ContainerStatuses[0].State.Running == nil {
		t.Errorf("status during preStop: %+v; want terminating, still running", st)
	}
	close(release)
	h.settle()
	want := []string{
		"exec default/web/app sh -c drain",
		"stop default/web/app#0 grace=20s",
		"remove default/web/app#0",
		"remove-sandbox default/web",
	}
	if diff := cmp.Diff(want, h.rt.takeCalls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if fileExists(logDir) || fileExists(podDir) {
		t.Errorf("after removal: log dir %v, pod dir %v; want neither", fileExists(logDir), fileExists(podDir))
	}
	if got := h.dump(); got != "default/other Running ready\n  app running restarts=0 started ready\n" {
		t.Errorf("statuses after removal:\n%s", got)
	}
	if h.m.worker("default/web") != nil {
		t.Error("the removed pod's worker is still there")
	}
}

func TestPreStopTakesFromGrace(t *testing.T) {
	h := newHarness(t)
	c := ctr("app")
	c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "exit 1"}}}}
	p := mkPod("web", c)
	p.Spec.TerminationGracePeriodSeconds = ptr(int64(20))
	h.set(1, p)
	h.rt.execFn = func(*fakeContainer, []string) int {
		h.clock.mu.Lock()
		h.clock.now = h.clock.now.Add(15 * time.Second) // the hook took 15s
		h.clock.mu.Unlock()
		return 1
	}
	h.rt.takeCalls()
	h.set(2)
	if diff := cmp.Diff([]string{"stop default/web/app#0 grace=5s"}, filterCalls(h.rt.takeCalls(), "stop")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	found := false
	for _, e := range h.eventLines("default/web") {
		found = found || strings.HasPrefix(e, "FailedPreStopHook app: PreStopHook failed: command \"sh -c exit 1\" exited with 1")
	}
	if !found {
		t.Errorf("no FailedPreStopHook event in %q", h.eventLines("default/web"))
	}
}

func TestReplaceOnHashOrUIDChange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(p *api.Pod)
	}{
		{"hash", func(p *api.Pod) { p.Hash = "h2"; p.Spec.Containers[0].Image = "berth/echo:2" }},
		{"uid", func(p *api.Pod) { p.UID = "web-uid-2" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			p := mkPod("web", ctr("app"))
			h.set(1, p)
			h.rt.takeCalls()
			tc.change(&p)
			h.set(2, p)
			want := []string{
				"stop default/web/app#0 grace=30s", "remove default/web/app#0", "remove-sandbox default/web",
				"sandbox default/web", "create default/web/app#0", "start default/web/app#0",
			}
			if diff := cmp.Diff(want, filterCalls(h.rt.takeCalls(), "stop", "remove", "sandbox", "create", "start")); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			st := h.pods()
			if len(st) != 1 || st[0].UID != p.UID || st[0].Hash != p.Hash || !st[0].Ready {
				t.Errorf("statuses %+v; want the new pod only, ready", st)
			}
		})
	}
}

func TestFilesUpdatedInPlace(t *testing.T) {
	h := newHarness(t)
	c := ctr("app")
	c.VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app"}, {Name: "creds", MountPath: "/etc/creds"}}
	p := mkPod("web", c)
	p.Spec.Volumes = []api.Volume{
		{Name: "cfg", Files: &api.FilesVolume{Files: []api.File{{Path: "app.conf", Content: []byte("v1")}, {Path: "sub/dir/x", Content: []byte("x"), Mode: 0o600}}}},
		{Name: "creds", Files: &api.FilesVolume{Secret: true, Files: []api.File{{Path: "password", Content: []byte("hunter2")}}}},
	}
	h.set(1, p)
	dir := filepath.Join(h.stateDir, "pods", p.UID, "volumes")
	check := func(rel, want string, mode os.FileMode) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", rel, b, err, want)
		}
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err == nil && fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v; want %v", rel, fi.Mode().Perm(), mode)
		}
	}
	check("cfg/app.conf", "v1", 0o644)
	check("cfg/sub/dir/x", "x", 0o600)
	check("creds/password", "hunter2", 0o400)
	if l, err := os.Readlink(filepath.Join(dir, "cfg", "app.conf")); err != nil || l != "..data/app.conf" {
		t.Errorf("cfg/app.conf links to %q, %v; want ..data/app.conf", l, err)
	}
	// The mounts handed to the runtime are the volume directories.
	for _, fc := range h.rt.containers {
		if fc.cfg.Mounts["cfg"] != filepath.Join(dir, "cfg") || fc.cfg.Mounts["creds"] != filepath.Join(dir, "creds") {
			t.Errorf("mounts %v", fc.cfg.Mounts)
		}
	}
	h.rt.takeCalls()

	p.Hash = "h2"
	p.Spec.Volumes[0].Files.Files = []api.File{{Path: "app.conf", Content: []byte("v2")}}
	h.set(2, p)
	if calls := h.rt.takeCalls(); len(calls) > 0 {
		t.Errorf("a change of files content alone made calls %v; want the pod left running", calls)
	}
	check("cfg/app.conf", "v2", 0o644)
	if fileExists(filepath.Join(dir, "cfg", "sub")) {
		t.Error("cfg/sub still there after it left the volume")
	}
	if st := h.pod("default/web"); st.Hash != "h2" || !st.Ready {
		t.Errorf("status %s ready=%v; want h2, ready", st.Hash, st.Ready)
	}
	// And an agent restart adopts the container running under the old hash.
	h.restart()
	if calls := h.rt.takeCalls(); len(calls) > 0 {
		t.Errorf("after an agent restart: calls %v; want none", calls)
	}
}

func TestAdoptionAfterAgentRestart(t *testing.T) {
	h := newHarness(t)
	h.set(1, mkPod("web", ctr("app")), mkPod("gone", ctr("app")))
	h.rt.exit(t, "default/web", "app", 1)
	h.advance(time.Second) // restarted once
	before := h.dump()
	if !strings.Contains(before, "app running last=Error(1) restarts=1 started ready") {
		t.Fatalf("before:\n%s", before)
	}
	h.stop()
	// While the agent is away: its state moves on without "gone" (as if
	// it had been written by a newer agent), and someone else's container
	// runs in the same runtime.
	st, _ := loadState(h.stateDir)
	st.Desired.Generation = 2
	st.Desired.Pods = st.Desired.Pods[:1]
	if st.Desired.Pods[0].Name != "web" {
		t.Fatal("unexpected order")
	}
	saveState(h.stateDir, st)
	h.rt.containers["foreign"] = &fakeContainer{name: "x", cfg: ContainerConfig{Pod: &api.Pod{Namespace: "x", Name: "y"}},
		state: ContainerState{ID: "foreign", State: StateRunning, Labels: map[string]string{"io.other/owner": "me"}}}
	h.rt.takeCalls()

	h.start()
	h.advance(2 * time.Second)
	want := []string{"stop default/gone/app#0 grace=30s", "remove default/gone/app#0", "remove-sandbox default/gone"}
	if diff := cmp.Diff(want, h.rt.takeCalls()); diff != "" {
		t.Errorf("calls after restart (-want +got):\n%s", diff)
	}
	if got := h.dump(); got != "default/web Running ready\n  app running last=Error(1) restarts=1 started ready\n" {
		t.Errorf("adopted:\n%s", got)
	}
	if _, ok := h.rt.containers["foreign"]; !ok {
		t.Error("a container the agent did not make was removed")
	}
}

func TestImagePullBackOff(t *testing.T) {
	h := newHarness(t)
	bad := mkPod("bad", ctr("app"))
	bad.Spec.Containers[0].Image = "berth/missing:1"
	h.set(1, bad, mkPod("good", ctr("app")))
	t0 := h.clock.Now()
	if st := h.pod("default/bad").ContainerStatuses[0].State.Waiting; st.Reason != reasonErrImagePull ||
		st.Message != "ErrImagePull: berth/missing:1: not found: manifest unknown" {
		t.Errorf("first: %+v; want ErrImagePull with the registry's message", st)
	}
	h.rt.takeCalls()
	var pulls []string
	for range 75 {
		h.advance(time.Second)
		for _, c := range filterCalls(h.rt.takeCalls(), "pull berth/missing") {
			pulls = append(pulls, h.clock.Now().Sub(t0).String())
			_ = c
		}
		st := h.pod("default/bad").ContainerStatuses[0].State.Waiting
		if st.Reason != reasonImagePullBackOff || !strings.Contains(st.Message, `Back-off pulling image "berth/missing:1": ErrImagePull: berth/missing:1: not found: manifest unknown`) {
			t.Errorf("at %s: %+v; want ImagePullBackOff with the registry's message", h.clock.Now().Sub(t0), st)
		}
	}
	if diff := cmp.Diff([]string{"10s", "30s", "1m10s"}, pulls); diff != "" {
		t.Errorf("pull retries (-want +got):\n%s", diff)
	}
	if got := h.pod("default/good"); !got.Ready {
		t.Errorf("the good pod is not ready: %+v", got)
	}
	// The image appears: the next attempt runs the pod.
	h.rt.registry["berth/missing:1"] = true
	h.advance(80 * time.Second)
	if got := h.pod("default/bad"); !got.Ready {
		t.Errorf("after the image appeared: %+v", got.ContainerStatuses)
	}
}

func TestPullPolicyByTag(t *testing.T) {
	for _, tc := range []struct{ image, want string }{
		{"berth/echo", "Always"}, {"berth/echo:latest", "Always"}, {"127.0.0.1:5000/echo", "Always"},
		{"berth/echo:1", "IfNotPresent"}, {"127.0.0.1:5000/echo:1", "IfNotPresent"}, {"berth/echo@sha256:abc", "IfNotPresent"},
	} {
		if got := pullPolicy(&corev1.Container{Image: tc.image}); string(got) != tc.want {
			t.Errorf("pullPolicy(%s) = %s; want %s", tc.image, got, tc.want)
		}
	}
}

func TestRuntimeUnavailable(t *testing.T) {
	h := newHarness(t)
	h.set(1, mkPod("web", ctr("app")))
	h.rt.takeCalls()
	h.rt.setDown(errContainerdDown)
	h.advance(time.Minute)
	if got := h.dump(); got != "default/web Running ready\n  app running restarts=0 started ready\n" {
		t.Errorf("while the runtime is down:\n%s", got)
	}
	h.rt.setDown(nil)
	h.advance(40 * time.Second)
	if calls := h.rt.takeCalls(); len(calls) > 0 {
		t.Errorf("calls after the runtime came back: %v; want none (the pod kept running)", calls)
	}
	// It reconciles again: a container that exited meanwhile is restarted.
	h.rt.setDown(errContainerdDown)
	h.advance(5 * time.Second)
	h.rt.setDown(nil)
	h.rt.exit(t, "default/web", "app", 2)
	h.advance(40 * time.Second)
	if got := h.dump(); got != "default/web Running ready\n  app running last=Error(2) restarts=1 started ready\n" {
		t.Errorf("after recovery:\n%s", got)
	}
}

func TestRebootRecreatesPods(t *testing.T) {
	h := newHarness(t)
	p := mkPod("web", ctr("app"))
	p.Spec.InitContainers = []corev1.Container{ctr("setup", "sh", "-c", "exit 0")}
	h.set(1, p)
	h.stop()
	h.rt.reboot()
	h.rt.takeCalls()
	h.start()
	h.advance(time.Second)
	want := []string{
		"remove-sandbox default/web", "sandbox default/web",
		"create default/web/setup#1", "start default/web/setup#1",
		"create default/web/app#1", "start default/web/app#1",
	}
	if diff := cmp.Diff(want, filterCalls(h.rt.takeCalls(), "remove-sandbox", "sandbox", "create", "start")); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	want2 := "default/web Running ready\n  init setup terminated:Completed(0) last=Completed(0) restarts=1 ready\n  app running last=Unknown(255) restarts=1 started ready\n"
	if diff := cmp.Diff(want2, h.dump()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// With restartPolicy Never the pod is not run again.
	h2 := newHarness(t)
	p2 := mkPod("job", ctr("app"))
	p2.Spec.RestartPolicy = corev1.RestartPolicyNever
	h2.set(1, p2)
	h2.stop()
	h2.rt.reboot()
	h2.rt.takeCalls()
	h2.start()
	h2.advance(time.Second)
	if calls := filterCalls(h2.rt.takeCalls(), "create", "start", "sandbox"); len(calls) > 0 {
		t.Errorf("Never: calls %v; want none", calls)
	}
	if got := h2.dump(); got != "default/job Failed\n  app terminated:Unknown(255) restarts=0\n" {
		t.Errorf("Never after reboot:\n%s", got)
	}
}

func TestActiveDeadline(t *testing.T) {
	h := newHarness(t)
	p := mkPod("job", ctr("app"))
	p.Spec.ActiveDeadlineSeconds = ptr(int64(30))
	h.set(1, p)
	h.advance(29 * time.Second)
	if got := h.pod("default/job").Phase; got != corev1.PodRunning {
		t.Errorf("before the deadline: %s", got)
	}
	h.rt.takeCalls()
	h.advance(time.Second)
	if diff := cmp.Diff([]string{"stop default/job/app#0 grace=30s"}, h.rt.takeCalls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	h.advance(time.Minute)
	if calls := h.rt.takeCalls(); len(calls) > 0 {
		t.Errorf("calls after the deadline: %v", calls)
	}
	st := h.pod("default/job")
	if st.Phase != corev1.PodFailed || st.Reason != "DeadlineExceeded" {
		t.Errorf("status %s %s; want Failed DeadlineExceeded", st.Phase, st.Reason)
	}
}

func TestVolumes(t *testing.T) {
	h := newHarness(t)
	host := t.TempDir()
	c := ctr("app")
	p := mkPod("web", c)
	p.Spec.Volumes = []api.Volume{
		{Name: "scratch", EmptyDir: &corev1.EmptyDirVolumeSource{}},
		{Name: "made", HostPath: &corev1.HostPathVolumeSource{Path: filepath.Join(host, "made"), Type: ptr(corev1.HostPathDirectoryOrCreate)}},
		{Name: "file", HostPath: &corev1.HostPathVolumeSource{Path: filepath.Join(host, "f"), Type: ptr(corev1.HostPathFileOrCreate)}},
	}
	h.set(1, p)
	for _, fc := range h.rt.containers {
		want := map[string]string{
			"scratch": filepath.Join(h.stateDir, "pods", p.UID, "volumes", "scratch"),
			"made":    filepath.Join(host, "made"),
			"file":    filepath.Join(host, "f"),
		}
		if diff := cmp.Diff(want, fc.cfg.Mounts); diff != "" {
			t.Errorf("mounts (-want +got):\n%s", diff)
		}
		for _, m := range want {
			if !fileExists(m) {
				t.Errorf("%s was not made", m)
			}
		}
	}

	// A hostPath that must exist and does not keeps the pod waiting.
	bad := mkPod("bad", ctr("app"))
	bad.Spec.Volumes = []api.Volume{{Name: "d", HostPath: &corev1.HostPathVolumeSource{Path: filepath.Join(host, "nope"), Type: ptr(corev1.HostPathDirectory)}}}
	h.set(2, p, bad)
	st := h.pod("default/bad")
	if st.Phase != corev1.PodPending || st.Reason != "FailedMount" || !strings.Contains(st.Message, "does not exist") ||
		st.ContainerStatuses[0].State.Waiting.Reason != "ContainerCreating" {
		t.Errorf("bad pod: %+v", st)
	}
	os.Mkdir(filepath.Join(host, "nope"), 0o755)
	h.advance(10 * time.Second)
	if st := h.pod("default/bad"); !st.Ready || st.Reason != "" {
		t.Errorf("after the directory appeared: %+v", st)
	}
}

func TestLogsAndExec(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.set(1, mkPod("web", ctr("app", "sh", "-c", "echo hello; sleep 1000")),
		mkPod("two", ctr("a"), ctr("b")))
	h.rt.exit(t, "default/web", "app", 1)
	h.advance(time.Second)

	var b bytes.Buffer
	if err := h.m.Logs(ctx, "default/web", api.LogOptions{}, &b); err != nil || b.String() != "hello\n" {
		t.Errorf("Logs = %q, %v", b.String(), err)
	}
	if !fileExists(filepath.Join(h.logDir, "default_web_web-uid", "app", "1.log")) {
		t.Error("no log at <LogDir>/default_web_web-uid/app/1.log")
	}
	b.Reset()
	if err := h.m.Logs(ctx, "default/web", api.LogOptions{Previous: true, Timestamps: true}, &b); err != nil || !strings.HasSuffix(b.String(), " hello\n") {
		t.Errorf("Logs(previous) = %q, %v", b.String(), err)
	}
	for _, tc := range []struct {
		pod  string
		opts api.LogOptions
		want error
	}{
		{"default/nope", api.LogOptions{}, api.ErrNotFound},
		{"default/web", api.LogOptions{Container: "nope"}, api.ErrNotFound},
		{"default/two", api.LogOptions{}, api.ErrInvalid},
		{"default/two", api.LogOptions{Container: "a", Previous: true}, api.ErrNotFound},
	} {
		if err := h.m.Logs(ctx, tc.pod, tc.opts, &b); !errors.Is(err, tc.want) {
			t.Errorf("Logs(%s, %+v) = %v; want %v", tc.pod, tc.opts, err, tc.want)
		}
	}

	var out bytes.Buffer
	code, err := h.m.Exec(ctx, api.ExecRequest{Pod: "default/web", Command: []string{"sh", "-c", "echo hi; exit 3"}, Stdout: &out})
	if err != nil || code != 3 || out.String() != "hi\n" {
		t.Errorf("Exec = %d, %v, %q", code, err, out.String())
	}
	if _, err := h.m.Exec(ctx, api.ExecRequest{Pod: "default/nope", Command: []string{"true"}}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Exec in a missing pod: %v", err)
	}
	if _, err := h.m.Exec(ctx, api.ExecRequest{Pod: "default/web"}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("Exec without a command: %v", err)
	}
}

func TestEventsFollow(t *testing.T) {
	h := newHarness(t)
	h.set(1, mkPod("web", ctr("app")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := h.m.Events(ctx, time.Time{}, true)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	next := func() string {
		select {
		case e := <-ch:
			return e.Reason
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
			return ""
		}
	}
	for range 5 {
		got = append(got, next())
	}
	want := []string{"DesiredPods", "Pulling", "Pulled", "Created", "Started"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("past events (-want +got):\n%s", diff)
	}
	h.set(2)
	if r := next(); r != "DesiredPods" {
		t.Errorf("followed event %s; want DesiredPods", r)
	}
	if r := next(); r != "Killing" {
		t.Errorf("followed event %s; want Killing", r)
	}

	// The ring is bounded: a reader gets the newest.
	l := newEventLog(3)
	for i := range 5 {
		l.add(api.Event{Time: time.Unix(int64(i+1), 0), Reason: string(rune('a' + i))})
	}
	var rs string
	for _, e := range l.snapshot(time.Time{}) {
		rs += e.Reason
	}
	if rs != "cde" {
		t.Errorf("ring kept %q; want cde", rs)
	}
}

func TestNodeInfo(t *testing.T) {
	h := newHarness(t)
	h.set(3, mkPod("web", ctr("app")))
	info, err := h.m.Node(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cpu, mem := info.Capacity[corev1.ResourceCPU], info.Capacity[corev1.ResourceMemory]
	acpu, amem := info.Allocatable[corev1.ResourceCPU], info.Allocatable[corev1.ResourceMemory]
	if cpu.Value() < 1 || mem.Value() < 1<<20 {
		t.Errorf("capacity %v", info.Capacity)
	}
	if cpu.MilliValue()-acpu.MilliValue() != 100 || mem.Value()-amem.Value() != 256<<20 {
		t.Errorf("allocatable %v of capacity %v; want 100m cpu and 256Mi less", info.Allocatable, info.Capacity)
	}
	if info.BootID == "" || info.KernelVersion == "" || info.ContainerdVersion != "fake 1.0" || info.Generation != 3 || info.Pods != 1 || info.Name != "node-1" {
		t.Errorf("node info %+v", info)
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t)
	h.set(1, mkPod("web", ctr("app", "sh", "-c", "exit 1")), mkPod("ok", ctr("app")))
	if n := len(h.m.Metrics().Collectors()); n != 6 {
		t.Errorf("%d collectors", n)
	}
	got := h.m.podPhases()
	if got[corev1.PodRunning] != 2 {
		t.Errorf("pods by phase %v", got)
	}
}
