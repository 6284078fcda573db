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

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

// suiteEnv is one Runtime under test, with what the suite needs to drive
// it: an image whose sh is busybox, and one that cannot be pulled.
type suiteEnv struct {
	rt           Runtime
	image        string
	missingImage string
	logDir       string
	// wait is how long a container takes at most to reach a state.
	wait time.Duration
}

// runtimeSuite is what the pod manager relies on of a Runtime (STYLE 13):
// it runs against the fake here and against containerd in the component
// tests.
func runtimeSuite(t *testing.T, newEnv func(t *testing.T) suiteEnv) {
	ctx := context.Background()

	pod := func(uid string, cmd ...string) *api.Pod {
		return &api.Pod{
			Namespace: "suite", Name: "p-" + uid, UID: uid, Hash: "h1",
			Spec: api.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: cmd}}},
		}
	}
	create := func(t *testing.T, env suiteEnv, p *api.Pod) (Sandbox, string) {
		t.Helper()
		img, err := env.rt.EnsureImage(ctx, env.image, corev1.PullIfNotPresent, nil)
		if err != nil {
			t.Fatalf("EnsureImage: %v", err)
		}
		p.Spec.Containers[0].Image = env.image
		sb, err := env.rt.CreateSandbox(ctx, p)
		if err != nil {
			t.Fatalf("CreateSandbox: %v", err)
		}
		t.Cleanup(func() { env.rt.RemoveSandbox(context.Background(), p.UID) })
		id, err := env.rt.CreateContainer(ctx, ContainerConfig{
			Pod: p, Sandbox: sb, Container: &p.Spec.Containers[0], Image: img, Attempt: 2,
			Mounts: map[string]string{}, LogPath: filepath.Join(env.logDir, p.UID, "main", "2.log"),
		})
		if err != nil {
			t.Fatalf("CreateContainer: %v", err)
		}
		t.Cleanup(func() {
			env.rt.StopContainer(context.Background(), id, 0)
			env.rt.RemoveContainer(context.Background(), id)
		})
		return sb, id
	}
	waitState := func(t *testing.T, env suiteEnv, id string, want State) ContainerState {
		t.Helper()
		deadline := time.Now().Add(env.wait)
		for {
			st, err := env.rt.ContainerStatus(ctx, id)
			if err != nil {
				t.Fatalf("ContainerStatus: %v", err)
			}
			if st.State == want {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("container %s is %s after %v, want %s", id, st.State, env.wait, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	t.Run("EnsureImage", func(t *testing.T) {
		env := newEnv(t)
		img, err := env.rt.EnsureImage(ctx, env.image, corev1.PullIfNotPresent, nil)
		if err != nil || img.ID == "" {
			t.Fatalf("EnsureImage(present) = %+v, %v; want an image id", img, err)
		}
		again, err := env.rt.EnsureImage(ctx, env.image, corev1.PullIfNotPresent, nil)
		if err != nil || again.ID != img.ID {
			t.Errorf("EnsureImage again = %+v, %v; want the same image", again, err)
		}
		if _, err := env.rt.EnsureImage(ctx, env.image, corev1.PullNever, nil); err != nil {
			t.Errorf("EnsureImage(present, Never) = %v", err)
		}
		_, err = env.rt.EnsureImage(ctx, env.missingImage, corev1.PullIfNotPresent, nil)
		if !errors.Is(err, ErrImagePull) || strings.TrimSpace(strings.TrimPrefix(err.Error(), ErrImagePull.Error()+":")) == "" {
			t.Errorf("EnsureImage(missing) = %v; want ErrImagePull with the registry's message", err)
		}
		if _, err := env.rt.EnsureImage(ctx, env.missingImage, corev1.PullNever, nil); !errors.Is(err, ErrImageNeverPull) {
			t.Errorf("EnsureImage(missing, Never) = %v; want ErrImageNeverPull", err)
		}
	})

	t.Run("Sandbox", func(t *testing.T) {
		env := newEnv(t)
		p := pod("sb1", "sleep", "1000")
		sb, err := env.rt.CreateSandbox(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if sb.PodUID != p.UID || sb.Pod != p.Key() || sb.NetNS == "" {
			t.Errorf("sandbox = %+v; want its pod and a network namespace", sb)
		}
		if _, err := os.Stat(sb.NetNS); err != nil {
			t.Errorf("network namespace: %v", err)
		}
		again, err := env.rt.CreateSandbox(ctx, p)
		if err != nil || again.NetNS != sb.NetNS {
			t.Errorf("CreateSandbox again = %+v, %v; want the same sandbox", again, err)
		}
		list, err := env.rt.ListSandboxes(ctx)
		if err != nil || !containsSandbox(list, p.UID) {
			t.Errorf("ListSandboxes = %+v, %v; want %s in it", list, err, p.UID)
		}
		if err := env.rt.RemoveSandbox(ctx, p.UID); err != nil {
			t.Fatal(err)
		}
		if err := env.rt.RemoveSandbox(ctx, p.UID); err != nil {
			t.Errorf("RemoveSandbox of a removed sandbox = %v; want nil", err)
		}
		list, _ = env.rt.ListSandboxes(ctx)
		if containsSandbox(list, p.UID) {
			t.Errorf("ListSandboxes after removal still has %s", p.UID)
		}
	})

	t.Run("Lifecycle", func(t *testing.T) {
		env := newEnv(t)
		p := pod("life1", "sleep", "1000")
		_, id := create(t, env, p)
		st, err := env.rt.ContainerStatus(ctx, id)
		if err != nil || st.State != StateCreated {
			t.Fatalf("after create: %+v, %v; want created", st, err)
		}
		for k, v := range map[string]string{
			api.LabelManaged: "true", api.LabelPodUID: p.UID, api.LabelPodName: p.Key(),
			api.LabelContainer: "main", api.LabelAttempt: "2", api.LabelPodHash: "h1",
		} {
			if st.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, st.Labels[k], v)
			}
		}
		if err := env.rt.StartContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		st = waitState(t, env, id, StateRunning)
		if st.StartedAt.IsZero() || st.Pid == 0 {
			t.Errorf("running container: %+v; want a start time and a pid", st)
		}
		list, err := env.rt.ListContainers(ctx)
		if err != nil || !containsContainer(list, id) {
			t.Errorf("ListContainers = %v; want %s in it", err, id)
		}
		if err := env.rt.StopContainer(ctx, id, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		st = waitState(t, env, id, StateExited)
		if st.FinishedAt.IsZero() {
			t.Errorf("stopped container has no finish time: %+v", st)
		}
		if err := env.rt.StopContainer(ctx, id, time.Second); err != nil {
			t.Errorf("StopContainer of a stopped container = %v; want nil", err)
		}
		if err := env.rt.RemoveContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := env.rt.ContainerStatus(ctx, id); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("ContainerStatus of a removed container = %v; want ErrNotFound", err)
		}
		if err := env.rt.RemoveContainer(ctx, id); err != nil {
			t.Errorf("RemoveContainer of a removed container = %v; want nil", err)
		}
		if err := env.rt.StopContainer(ctx, id, time.Second); err != nil {
			t.Errorf("StopContainer of a missing container = %v; want nil", err)
		}
	})

	t.Run("ExitCodeAndLog", func(t *testing.T) {
		env := newEnv(t)
		for _, tc := range []struct {
			uid    string
			code   int32
			reason string
		}{{"exit0", 0, "Completed"}, {"exit3", 3, "Error"}} {
			p := pod(tc.uid, "sh", "-c", "echo hello "+tc.uid+"; exit "+string(rune('0'+tc.code)))
			_, id := create(t, env, p)
			if err := env.rt.StartContainer(ctx, id); err != nil {
				t.Fatal(err)
			}
			st := waitState(t, env, id, StateExited)
			if st.ExitCode != tc.code || st.Reason != tc.reason {
				t.Errorf("%s: exit %d reason %q; want %d %q", tc.uid, st.ExitCode, st.Reason, tc.code, tc.reason)
			}
			logPath := filepath.Join(env.logDir, p.UID, "main", "2.log")
			var b []byte
			for deadline := time.Now().Add(env.wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if b, _ = os.ReadFile(logPath); bytes.Contains(b, []byte("hello")) {
					break
				}
			}
			if !bytes.Contains(b, []byte(" stdout F hello "+tc.uid+"\n")) {
				t.Errorf("%s: log %s = %q; want a CRI line with the output", tc.uid, logPath, b)
			}
		}
	})

	t.Run("Exec", func(t *testing.T) {
		env := newEnv(t)
		_, id := create(t, env, pod("exec1", "sleep", "1000"))
		if err := env.rt.StartContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		waitState(t, env, id, StateRunning)
		var out bytes.Buffer
		code, err := env.rt.Exec(ctx, id, api.ExecRequest{Command: []string{"sh", "-c", "echo hi; exit 4"}, Stdout: &out, Stderr: &out, Timeout: 10 * time.Second})
		if err != nil || code != 4 || out.String() != "hi\n" {
			t.Errorf("Exec = %d, %v, output %q; want 4, nil, \"hi\\n\"", code, err, out.String())
		}
	})

	t.Run("StopAfterGrace", func(t *testing.T) {
		env := newEnv(t)
		_, id := create(t, env, pod("grace1", "sh", "-c", "trap '' TERM; sleep 1000"))
		if err := env.rt.StartContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		waitState(t, env, id, StateRunning)
		t0 := time.Now()
		if err := env.rt.StopContainer(ctx, id, time.Second); err != nil {
			t.Fatal(err)
		}
		if st, _ := env.rt.ContainerStatus(ctx, id); st.State != StateExited {
			t.Errorf("after StopContainer: %s; want exited (StopContainer returns when the process is gone)", st.State)
		}
		if d := time.Since(t0); d > env.wait {
			t.Errorf("StopContainer took %v with a 1s grace", d)
		}
	})
}

func containsSandbox(l []Sandbox, uid string) bool {
	for _, s := range l {
		if s.PodUID == uid {
			return true
		}
	}
	return false
}

func containsContainer(l []ContainerState, id string) bool {
	for _, c := range l {
		if c.ID == id {
			return true
		}
	}
	return false
}

func TestRuntimeSuiteFake(t *testing.T) {
	runtimeSuite(t, func(t *testing.T) suiteEnv {
		rt := newFakeRuntime(t, realClock{})
		rt.registry["berth/echo:1"] = true
		return suiteEnv{rt: rt, image: "berth/echo:1", missingImage: "berth/missing:1", logDir: t.TempDir(), wait: time.Second}
	})
}
