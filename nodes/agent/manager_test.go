package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

func TestSetPodsInvalidChangesNothing(t *testing.T) {
	good := mkPod("web", ctr("app"))
	for _, tc := range []struct {
		name   string
		mutate func(p *api.Pod, d *api.DesiredPods)
		want   string
	}{
		{"empty name", func(p *api.Pod, _ *api.DesiredPods) { p.Name = "" }, "name is empty"},
		{"empty uid", func(p *api.Pod, _ *api.DesiredPods) { p.UID = "" }, "uid is empty"},
		{"empty image", func(p *api.Pod, _ *api.DesiredPods) { p.Spec.Containers[0].Image = "" }, "image is empty"},
		{"duplicate key", func(_ *api.Pod, d *api.DesiredPods) {
			dup := mkPod("web", ctr("app"))
			dup.UID = "other"
			d.Pods = append(d.Pods, dup)
		}, "appears twice"},
		{"duplicate container", func(p *api.Pod, _ *api.DesiredPods) {
			p.Spec.InitContainers = []corev1.Container{ctr("app")}
		}, "name appears twice"},
		{"unknown volume", func(p *api.Pod, _ *api.DesiredPods) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		}, `volumeMount "data" refers to no volume`},
		{"restart policy", func(p *api.Pod, _ *api.DesiredPods) { p.Spec.RestartPolicy = "Sometimes" }, "restartPolicy"},
		{"dns policy", func(p *api.Pod, _ *api.DesiredPods) { p.Spec.DNSPolicy = "Sometimes" }, "dnsPolicy"},
		{"dns policy None without nameservers", func(p *api.Pod, _ *api.DesiredPods) { p.Spec.DNSPolicy = corev1.DNSNone }, "dnsPolicy None needs"},
		{"dotdot file", func(p *api.Pod, _ *api.DesiredPods) {
			p.Spec.Volumes = []api.Volume{{Name: "cfg", Files: &api.FilesVolume{Files: []api.File{{Path: "a/../../etc/passwd"}}}}}
		}, `path contains ".."`},
		{"absolute file", func(p *api.Pod, _ *api.DesiredPods) {
			p.Spec.Volumes = []api.Volume{{Name: "cfg", Files: &api.FilesVolume{Files: []api.File{{Path: "/etc/passwd"}}}}}
		}, "path is absolute"},
		{"probe port name", func(p *api.Pod, _ *api.DesiredPods) {
			pr := httpProbe("app/Liveness")
			pr.HTTPGet.Port.Type, pr.HTTPGet.Port.StrVal = 1, "http"
			p.Spec.Containers[0].LivenessProbe = pr
		}, `port "http" names none`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.set(1, good)
			before, _ := os.ReadFile(filepath.Join(h.stateDir, stateFile))
			dump := h.dump()
			h.rt.takeCalls()

			p := mkPod("web", ctr("app"))
			p.Hash = "h2"
			d := api.DesiredPods{Generation: 2, Pods: []api.Pod{p}}
			tc.mutate(&d.Pods[0], &d)
			err := h.m.SetPods(context.Background(), d)
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetPods = %v; want ErrInvalid mentioning %q", err, tc.want)
			}
			h.settle()
			after, _ := os.ReadFile(filepath.Join(h.stateDir, stateFile))
			if string(before) != string(after) {
				t.Error("the persisted set changed")
			}
			if got := h.dump(); got != dump {
				t.Errorf("statuses changed:\n%s\nwant\n%s", got, dump)
			}
			if calls := h.rt.takeCalls(); len(calls) > 0 {
				t.Errorf("runtime calls after an invalid set: %v", calls)
			}
		})
	}
}

func TestSetPodsGenerations(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	p := mkPod("web", ctr("app"))
	h.set(2, p)
	h.rt.takeCalls()

	if err := h.m.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: nil}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("older generation: %v; want ErrConflict", err)
	}
	if err := h.m.SetPods(ctx, api.DesiredPods{Generation: 2, Pods: []api.Pod{p}}); err != nil {
		t.Errorf("identical set: %v; want nil", err)
	}
	other := p
	other.Hash = "h2"
	if err := h.m.SetPods(ctx, api.DesiredPods{Generation: 2, Pods: []api.Pod{other}}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("same generation, other pods: %v; want ErrConflict", err)
	}
	h.settle()
	if calls := h.rt.takeCalls(); len(calls) > 0 {
		t.Errorf("runtime calls: %v; want none", calls)
	}
	if got := h.pod("default/web"); got.Hash != "h1" || got.Phase != corev1.PodRunning {
		t.Errorf("pod = %s %s; want the first set's, running", got.Hash, got.Phase)
	}
}

func TestPersistedSetReloads(t *testing.T) {
	h := newHarness(t)
	secret := mkPod("db", ctr("app"))
	secret.Spec.Volumes = []api.Volume{{Name: "s", Files: &api.FilesVolume{Secret: true, Files: []api.File{{Path: "pw", Content: []byte("hunter2")}}}}}
	h.set(7, mkPod("web", ctr("app")), secret)
	fi, err := os.Stat(filepath.Join(h.stateDir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v; want 0600 (it holds secrets)", fi.Mode().Perm())
	}
	h.stop()

	// A new agent on an empty runtime starts the same pods.
	h.rt = newFakeRuntime(t, h.clock)
	h.rt.registry["berth/echo:1"] = true
	m2 := h.newManager()
	sts, _ := m2.Pods(context.Background())
	if len(sts) != 2 || sts[0].Name != "db" || sts[1].Name != "web" {
		t.Fatalf("reloaded statuses: %+v", sts)
	}
	info, _ := m2.Node(context.Background())
	if info.Generation != 7 || info.Pods != 2 {
		t.Errorf("node generation %d pods %d; want 7, 2", info.Generation, info.Pods)
	}
	h.start()
	want := "default/db Running ready\n  app running restarts=0 started ready\n" +
		"default/web Running ready\n  app running restarts=0 started ready\n"
	if diff := cmp.Diff(want, h.dump()); diff != "" {
		t.Errorf("after reload (-want +got):\n%s", diff)
	}
}

func TestCrashLoopBackoff(t *testing.T) {
	h := newHarness(t)
	h.set(1, mkPod("crash", ctr("app", "sh", "-c", "exit 1")))
	t0 := h.clock.Now()
	var starts []string
	record := func() {
		for _, c := range h.rt.takeCalls() {
			if strings.HasPrefix(c, "start ") {
				starts = append(starts, fmt.Sprintf("%s at %s", strings.TrimPrefix(c, "start default/crash/"), h.clock.Now().Sub(t0)))
			}
		}
	}
	record()
	if got := h.dump(); got != "default/crash Running\n  app waiting:CrashLoopBackOff last=Error(1) restarts=1\n" {
		t.Errorf("status in backoff:\n%s", got)
	}
	if st := h.pod("default/crash").ContainerStatuses[0].State.Waiting; !strings.Contains(st.Message, "back-off 10s restarting failed container=app pod=default/crash") {
		t.Errorf("waiting message %q", st.Message)
	}
	for range 1000 {
		h.advance(time.Second)
		record()
	}
	want := []string{
		"app#0 at 0s", "app#1 at 0s", "app#2 at 10s", "app#3 at 30s", "app#4 at 1m10s",
		"app#5 at 2m30s", "app#6 at 5m10s", "app#7 at 10m10s", "app#8 at 15m10s",
	}
	if diff := cmp.Diff(want, starts); diff != "" {
		t.Errorf("restarts (-want +got):\n%s", diff)
	}
	var backoffs int
	for _, e := range h.eventLines("default/crash") {
		if strings.HasPrefix(e, "BackOff app:") {
			backoffs++
		}
	}
	if backoffs != 8 {
		t.Errorf("%d BackOff events; want one per wait (8)", backoffs)
	}
	// Only the current and previous instances are kept.
	if n := len(h.rt.containers); n != 2 {
		t.Errorf("%d container instances kept; want 2", n)
	}
}

func TestBackoffResetsAfterTenMinutesRunning(t *testing.T) {
	h := newHarness(t)
	h.set(1, mkPod("web", ctr("app", "sleep", "1000")))
	t0 := h.clock.Now()
	var starts []string
	record := func() {
		for _, c := range h.rt.takeCalls() {
			if strings.HasPrefix(c, "start ") {
				starts = append(starts, fmt.Sprintf("%s at %s", strings.TrimPrefix(c, "start default/web/"), h.clock.Now().Sub(t0)))
			}
		}
	}
	until := func(d time.Duration) {
		for h.clock.Now().Sub(t0) < d {
			h.advance(time.Second)
			record()
		}
	}
	crashAt := func(d time.Duration) {
		until(d)
		h.rt.exit(t, "default/web", "app", 1)
	}
	record()
	crashAt(5 * time.Second)  // restart at once (no backoff yet), noticed by the next relist
	crashAt(10 * time.Second) // backoff 10s from the exit
	crashAt(30 * time.Second) // backoff 20s
	until(time.Minute)
	// Now it runs for 11 minutes: the backoff is forgotten.
	crashAt(12 * time.Minute)
	crashAt(12*time.Minute + 5*time.Second) // backoff 10s again
	until(13 * time.Minute)
	want := []string{
		"app#0 at 0s", "app#1 at 6s", "app#2 at 20s", "app#3 at 50s",
		"app#4 at 12m1s", "app#5 at 12m15s",
	}
	if diff := cmp.Diff(want, starts); diff != "" {
		t.Errorf("restarts (-want +got):\n%s", diff)
	}
}

func TestRestartPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy corev1.RestartPolicy
		code   string
		want   string
	}{
		{corev1.RestartPolicyAlways, "0", "default/job Running\n  app waiting:CrashLoopBackOff last=Completed(0) restarts=1\n"},
		{corev1.RestartPolicyAlways, "2", "default/job Running\n  app waiting:CrashLoopBackOff last=Error(2) restarts=1\n"},
		{corev1.RestartPolicyOnFailure, "0", "default/job Succeeded\n  app terminated:Completed(0) restarts=0\n"},
		{corev1.RestartPolicyOnFailure, "2", "default/job Running\n  app waiting:CrashLoopBackOff last=Error(2) restarts=1\n"},
		{corev1.RestartPolicyNever, "0", "default/job Succeeded\n  app terminated:Completed(0) restarts=0\n"},
		{corev1.RestartPolicyNever, "2", "default/job Failed\n  app terminated:Error(2) restarts=0\n"},
	} {
		t.Run(string(tc.policy)+"/exit"+tc.code, func(t *testing.T) {
			h := newHarness(t)
			p := mkPod("job", ctr("app", "sh", "-c", "exit "+tc.code))
			p.Spec.RestartPolicy = tc.policy
			h.set(1, p)
			h.advance(5 * time.Second)
			if diff := cmp.Diff(tc.want, h.dump()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestInitContainers(t *testing.T) {
	t.Run("InOrder", func(t *testing.T) {
		h := newHarness(t)
		p := mkPod("web", ctr("app", "sleep", "1000"))
		p.Spec.InitContainers = []corev1.Container{ctr("first", "sh", "-c", "echo one; exit 0"), ctr("second", "sh", "-c", "exit 0")}
		h.set(1, p)
		var got []string
		for _, c := range h.rt.takeCalls() {
			if strings.HasPrefix(c, "create ") || strings.HasPrefix(c, "start ") || strings.HasPrefix(c, "sandbox ") {
				got = append(got, c)
			}
		}
		want := []string{
			"sandbox default/web",
			"create default/web/first#0", "start default/web/first#0",
			"create default/web/second#0", "start default/web/second#0",
			"create default/web/app#0", "start default/web/app#0",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		wantSt := "default/web Running ready\n  init first terminated:Completed(0) restarts=0 ready\n" +
			"  init second terminated:Completed(0) restarts=0 ready\n  app running restarts=0 started ready\n"
		if diff := cmp.Diff(wantSt, h.dump()); diff != "" {
			t.Errorf("status (-want +got):\n%s", diff)
		}
	})
	t.Run("FailureRestarts", func(t *testing.T) {
		h := newHarness(t)
		p := mkPod("web", ctr("app", "sleep", "1000"))
		p.Spec.InitContainers = []corev1.Container{ctr("setup", "sh", "-c", "exit 1")}
		h.set(1, p)
		h.advance(2 * time.Second)
		want := "default/web Pending\n  init setup waiting:CrashLoopBackOff last=Error(1) restarts=1\n  app waiting:PodInitializing restarts=0\n"
		if diff := cmp.Diff(want, h.dump()); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("FailureWithNeverFailsPod", func(t *testing.T) {
		h := newHarness(t)
		p := mkPod("web", ctr("app", "sleep", "1000"))
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.Spec.InitContainers = []corev1.Container{ctr("setup", "sh", "-c", "exit 1")}
		h.set(1, p)
		h.advance(30 * time.Second)
		want := "default/web Failed\n  init setup terminated:Error(1) restarts=0\n  app waiting:PodInitializing restarts=0\n"
		if diff := cmp.Diff(want, h.dump()); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		for _, c := range h.rt.takeCalls() {
			if strings.Contains(c, "/app#") {
				t.Errorf("app container touched: %s", c)
			}
		}
	})
	t.Run("Sidecar", func(t *testing.T) {
		h := newHarness(t)
		p := mkPod("web", ctr("app", "sleep", "1000"))
		side := ctr("proxy", "sleep", "1000")
		side.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
		side.StartupProbe = httpProbe("proxy/Startup")
		p.Spec.InitContainers = []corev1.Container{side, ctr("migrate", "sh", "-c", "exit 0")}
		h.setProbe("proxy/Startup", false)
		h.set(1, p)
		h.advance(5 * time.Second)
		want := "default/web Pending\n  init proxy running restarts=0\n  init migrate waiting:PodInitializing restarts=0\n  app waiting:PodInitializing restarts=0\n"
		if diff := cmp.Diff(want, h.dump()); diff != "" {
			t.Errorf("sidecar not started (-want +got):\n%s", diff)
		}
		h.setProbe("proxy/Startup", true)
		h.advance(10 * time.Second)
		want = "default/web Running ready\n  init proxy running restarts=0 started ready\n  init migrate terminated:Completed(0) restarts=0 ready\n  app running restarts=0 started ready\n"
		if diff := cmp.Diff(want, h.dump()); diff != "" {
			t.Errorf("sidecar started (-want +got):\n%s", diff)
		}
	})
}
