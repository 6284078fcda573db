package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/examples/images"
	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/logs"
)

func testEcho(t *testing.T, h *harness, image string) {
	ctx := context.Background()
	pod := testPod("web-0", image)
	c := &pod.Spec.Containers[0]
	c.Args = []string{"--listen", ":8080", "--drain", "300ms"}
	c.Env = []corev1.EnvVar{
		{Name: "POD_NAME", Value: "web-0"},
		{Name: "GREETING", Value: "hello"},
		{Name: "MSG", Value: "$(GREETING) world"},
	}
	data, cfg := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(data, "hello.txt"), []byte("hi\n"), 0o644)
	os.WriteFile(filepath.Join(cfg, "app.conf"), []byte("answer=42\n"), 0o644)
	pod.Spec.Volumes = []api.Volume{{Name: "data", EmptyDir: &corev1.EmptyDirVolumeSource{}}, {Name: "cfg", HostPath: &corev1.HostPathVolumeSource{Path: cfg}}}
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "data", MountPath: "/data"},
		{Name: "cfg", MountPath: "/etc/cfg", ReadOnly: true},
		{Name: "cfg", MountPath: "/etc/app.conf", SubPath: "app.conf"},
		{Name: "data", MountPath: "/made", SubPath: "new/dir"},
		// A symlink in the volume does not lead a subPath out of it.
		{Name: "data", MountPath: "/leak", SubPath: "escape/etc"},
	}
	if err := os.Symlink("/", filepath.Join(data, "escape")); err != nil {
		t.Fatal(err)
	}
	mounts := map[string]string{"data": data, "cfg": cfg}

	start := time.Now()
	if _, err := h.rt.EnsureImage(ctx, image, corev1.PullAlways, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: pull %v", time.Since(start))
	start = time.Now()
	sb, id := h.run(pod, mounts)
	started := time.Since(start)
	body := get(t, sb.NetNS, "http://127.0.0.1:8080/")
	t.Logf("timing: sandbox, create and start %v; first HTTP answer %v after CreateSandbox began", started, time.Since(start))
	if body != "version=1 pod=web-0\n" {
		t.Errorf("GET / = %q", body)
	}

	t.Run("env and mounts", func(t *testing.T) {
		env := envOf(t, sb.NetNS)
		if env["MSG"] != "hello world" || env["HOSTNAME"] != "web-0" || env["PATH"] != images.Path {
			t.Errorf("env: %v", env)
		}
		for path, want := range map[string]string{"/data/hello.txt": "hi\n", "/etc/cfg/app.conf": "answer=42\n", "/etc/app.conf": "answer=42\n"} {
			if got := get(t, sb.NetNS, "http://127.0.0.1:8080/file?path="+path); got != want {
				t.Errorf("%s = %q, want %q", path, got, want)
			}
		}
		if fi, err := os.Stat(filepath.Join(data, "new", "dir")); err != nil || !fi.IsDir() {
			t.Errorf("subPath not made in the volume: %v", err)
		}
		if code, out := h.exec(id, "hostname"); code != 0 || out != "web-0\n" {
			t.Errorf("hostname: %d %q", code, out)
		}
		if code, out := h.exec(id, "ls", "-A", "/leak"); code != 0 || out != "" {
			t.Errorf("subPath through a symlink to / shows %q", out)
		}
		if fi, err := os.Stat(filepath.Join(data, "etc")); err != nil || !fi.IsDir() {
			t.Errorf("subPath escape/etc not made inside the volume: %v", err)
		}
		if code, _ := h.exec(id, "touch", "/etc/cfg/x"); code == 0 {
			t.Error("wrote into a readOnly mount")
		}
		if code, out := h.exec(id, "cat", "/etc/hosts"); code != 0 || !strings.Contains(out, "web-0") {
			t.Errorf("/etc/hosts: %q", out)
		}
	})

	t.Run("one shim per pod", func(t *testing.T) {
		ctx := context.Background()
		side := corev1.Container{Name: "side", Image: image, Args: []string{"--listen", ":8081"}}
		pod.Spec.Containers = append(pod.Spec.Containers, side)
		img, err := h.rt.EnsureImage(ctx, image, corev1.PullIfNotPresent, nil)
		if err != nil {
			t.Fatal(err)
		}
		sid, err := h.rt.CreateContainer(ctx, agent.ContainerConfig{Pod: pod, Sandbox: sb, Container: &pod.Spec.Containers[1], Image: img})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			pod.Spec.Containers = pod.Spec.Containers[:1]
			if err := h.rt.StopContainer(ctx, sid, time.Second); err != nil {
				t.Error(err)
			}
			if err := h.rt.RemoveContainer(ctx, sid); err != nil {
				t.Error(err)
			}
		}()
		if err := h.rt.StartContainer(ctx, sid); err != nil {
			t.Fatal(err)
		}
		get(t, sb.NetNS, "http://127.0.0.1:8081/healthz")
		if n := shims(t, h.cd.Address(), h.ns); n != 1 {
			t.Errorf("two containers of one pod run under %d shims, want 1", n)
		}
	})

	t.Run("exec", func(t *testing.T) {
		var stdout, stderr strings.Builder
		code, err := h.rt.Exec(ctx, id, api.ExecRequest{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, Stdout: &stdout, Stderr: &stderr})
		if err != nil || code != 3 || stdout.String() != "out\n" || stderr.String() != "err\n" {
			t.Errorf("exec: %d %v stdout %q stderr %q", code, err, stdout.String(), stderr.String())
		}
		stdout.Reset()
		resize := make(chan api.TermSize, 1)
		resize <- api.TermSize{Width: 100, Height: 40}
		code, err = h.rt.Exec(ctx, id, api.ExecRequest{Command: []string{"sh", "-c", "sleep 0.2; test -t 1 && echo tty"}, TTY: true, Stdout: &stdout, Resize: resize})
		if err != nil || code != 0 || stdout.String() != "tty\r\n" {
			t.Errorf("exec with tty: %d %v %q", code, err, stdout.String())
		}
		stdout.Reset()
		code, err = h.rt.Exec(ctx, id, api.ExecRequest{Command: []string{"cat"}, Stdin: strings.NewReader("piped"), Stdout: &stdout})
		if err != nil || code != 0 || stdout.String() != "piped" {
			t.Errorf("exec with stdin: %d %v %q", code, err, stdout.String())
		}
		start := time.Now()
		_, err = h.rt.Exec(ctx, id, api.ExecRequest{Command: []string{"sleep", "10"}, Timeout: 200 * time.Millisecond})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Errorf("exec past its timeout: %v after %v", err, time.Since(start))
		}
		start = time.Now()
		h.exec(id, "true")
		t.Logf("timing: exec true: %v", time.Since(start))
	})

	logPath := filepath.Join(h.state, "logs", pod.UID, "echo", "0.log")
	t.Run("logs", func(t *testing.T) {
		for i := 0; i < 80; i++ {
			get(t, sb.NetNS, "http://127.0.0.1:8080/readyz")
		}
		waitLog(t, logPath, func(s string) bool { return strings.Count(s, "path=/readyz") == 80 })
		files, _ := logs.Files(logPath)
		if len(files) < 2 || len(files) > 3 {
			t.Errorf("log files %v, want rotation at 8 KiB keeping 3", files)
		}
		for _, f := range files {
			if fi, _ := os.Stat(f); fi.Size() > 8<<10 {
				t.Errorf("%s: %d bytes over the 8 KiB cap", f, fi.Size())
			}
			checkCRIFile(t, f)
		}
	})

	t.Run("adopted by a new runtime", func(t *testing.T) {
		h.rt.Close()
		h.rt = h.newRuntime()
		ctrs, err := h.rt.ListContainers(ctx)
		if err != nil || len(ctrs) != 1 {
			t.Fatalf("ListContainers = %+v, %v", ctrs, err)
		}
		st := ctrs[0]
		if st.ID != id || st.State != agent.StateRunning || st.Pid == 0 || st.Labels[api.LabelPodUID] != pod.UID ||
			st.Labels[api.LabelContainer] != "echo" || st.Labels[api.LabelAttempt] != "0" || st.Labels[api.LabelPodName] != "default/web-0" ||
			st.Labels[LabelLogPath] != logPath || st.StartedAt.IsZero() || !strings.HasPrefix(st.ImageID, "sha256:") {
			t.Errorf("adopted container %+v", st)
		}
		sbs, err := h.rt.ListSandboxes(ctx)
		if err != nil || len(sbs) != 1 || !reflect.DeepEqual(sbs[0], sb) {
			t.Errorf("ListSandboxes = %+v, %v", sbs, err)
		}
		// The log driver outlived the old runtime.
		get(t, sb.NetNS, "http://127.0.0.1:8080/healthz")
		waitLog(t, logPath, func(s string) bool { return strings.Contains(s, "path=/healthz") })
		// Creating the same instance again finds it.
		again, err := h.rt.CreateContainer(ctx, agent.ContainerConfig{Pod: pod, Sandbox: sb, Container: c, Image: agent.Image{Ref: image}, Mounts: mounts, LogPath: logPath})
		if err != nil || again != id {
			t.Errorf("CreateContainer of an existing instance = %q, %v", again, err)
		}
	})

	t.Run("stop with grace", func(t *testing.T) {
		start := time.Now()
		if err := h.rt.StopContainer(ctx, id, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("timing: stop with echo's 300ms drain: %v", took)
		if took < 300*time.Millisecond || took > 5*time.Second {
			t.Errorf("stop took %v; echo drains for 300ms on SIGTERM", took)
		}
		st, err := h.newRuntime().ContainerStatus(ctx, id)
		if err != nil || st.State != agent.StateExited || st.ExitCode != 0 || st.Reason != ReasonCompleted || st.FinishedAt.Before(st.StartedAt) {
			t.Errorf("status after stop: %+v %v", st, err)
		}
		if err := h.rt.StopContainer(ctx, id, time.Second); err != nil {
			t.Errorf("stopping a stopped container: %v", err)
		}
		var out strings.Builder
		if err := logs.Read(ctx, logPath, api.LogOptions{TailLines: 3}, &out); err != nil || !strings.Contains(out.String(), "drain") {
			t.Errorf("log tail after stop: %q %v", out.String(), err)
		}
	})

	if err := h.rt.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := h.rt.ContainerStatus(ctx, id); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("status of a removed container: %v", err)
	}
	if err := h.rt.RemoveContainer(ctx, id); err != nil {
		t.Errorf("removing a removed container: %v", err)
	}
	if err := h.rt.RemoveSandbox(ctx, pod.UID); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits until the log at path (with rotated files) satisfies ok.
func waitLog(t *testing.T, path string, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out strings.Builder
		logs.Read(context.Background(), path, api.LogOptions{}, &out)
		if ok(out.String()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s never showed what was expected; it has:\n%s", path, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkCRIFile checks that every line of f is a CRI log line.
func checkCRIFile(t *testing.T, f string) {
	t.Helper()
	file, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	n := 0
	for sc.Scan() {
		n++
		if _, err := logs.ParseEntry(sc.Bytes()); err != nil {
			t.Errorf("%s:%d: %v: %q", f, n, err, sc.Text())
		}
	}
}

func testSecurity(t *testing.T, h *harness, image string) {
	ctx := context.Background()
	t.Run("runAsNonRoot with a root image", func(t *testing.T) {
		pod := testPod("root-0", image)
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}
		sb, err := h.rt.CreateSandbox(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		defer h.rt.RemoveSandbox(ctx, pod.UID)
		img, err := h.rt.EnsureImage(ctx, image, corev1.PullIfNotPresent, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.rt.CreateContainer(ctx, agent.ContainerConfig{Pod: pod, Sandbox: sb, Container: &pod.Spec.Containers[0], Image: img})
		if !errors.Is(err, ErrCreateContainerConfig) || !strings.Contains(err.Error(), "container has runAsNonRoot and image will run as root") {
			t.Errorf("CreateContainer = %v", err)
		}
		pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr(int64(0))}
		_, err = h.rt.CreateContainer(ctx, agent.ContainerConfig{Pod: pod, Sandbox: sb, Container: &pod.Spec.Containers[0], Image: img})
		if !errors.Is(err, ErrCreateContainerConfig) || !strings.Contains(err.Error(), "runAsUser") {
			t.Errorf("CreateContainer with runAsUser 0 = %v", err)
		}
		if ctrs, _ := h.rt.ListContainers(ctx); len(ctrs) != 0 {
			t.Errorf("refused containers exist: %+v", ctrs)
		}
	})

	t.Run("restricted", func(t *testing.T) {
		pod := testPod("restricted-0", image)
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{
			RunAsNonRoot:       ptr(true),
			RunAsUser:          ptr(int64(images.NonRootUID)),
			FSGroup:            ptr(int64(3000)),
			SupplementalGroups: []int64{4000},
			SeccompProfile:     &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
		c := &pod.Spec.Containers[0]
		c.SecurityContext = &corev1.SecurityContext{
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}},
		}
		c.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		}
		pod.Spec.Volumes = []api.Volume{{Name: "scratch", EmptyDir: &corev1.EmptyDirVolumeSource{}}}
		c.VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
		sb, err := h.rt.CreateSandbox(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		scratch := filepath.Join(sb.Dir, "volumes", "scratch")
		if err := os.MkdirAll(scratch, 0o755); err != nil {
			t.Fatal(err)
		}
		_, id := h.run(pod, map[string]string{"scratch": scratch})
		get(t, sb.NetNS, "http://127.0.0.1:8080/readyz")

		if code, out := h.exec(id, "id"); code != 0 || !strings.HasPrefix(out, "uid=65532(nonroot) gid=65532(nonroot)") ||
			!strings.Contains(out, "3000") || !strings.Contains(out, "4000") {
			t.Errorf("id: %q", out)
		}
		if code, _ := h.exec(id, "touch", "/rootfs-write"); code == 0 {
			t.Error("wrote to a read-only root filesystem")
		}
		if code, out := h.exec(id, "touch", "/scratch/x"); code != 0 {
			t.Errorf("nonroot could not write its fsGroup volume: %q", out)
		}
		_, status := h.exec(id, "cat", "/proc/self/status")
		for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapBnd:\t0000000000000400"} {
			if !strings.Contains(status, want+"\n") {
				t.Errorf("/proc/self/status lacks %q", want)
			}
		}

		cg := podCgroup(h.rt.CgroupParent(), pod.UID) + "/" + id
		if h.rt.cgroupV2 {
			t.Log("cgroup v2")
			checkFile(t, filepath.Join(cgroupRoot, cg, "memory.max"), "67108864")
			checkFile(t, filepath.Join(cgroupRoot, cg, "cpu.max"), "50000 100000")
		} else {
			t.Log("cgroup v1")
			checkFile(t, filepath.Join(cgroupRoot, "memory", cg, "memory.limit_in_bytes"), "67108864")
			checkFile(t, filepath.Join(cgroupRoot, "cpu", cg, "cpu.cfs_quota_us"), "50000")
			checkFile(t, filepath.Join(cgroupRoot, "cpu", cg, "cpu.shares"), "256")
		}
	})

	t.Run("privileged", func(t *testing.T) {
		pod := testPod("priv-0", image)
		pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr(true)}
		_, id := h.run(pod, nil)
		_, status := h.exec(id, "cat", "/proc/self/status")
		for _, l := range strings.Split(status, "\n") {
			if v, ok := strings.CutPrefix(l, "CapEff:\t"); ok {
				caps, _ := strconv.ParseUint(v, 16, 64)
				if caps&(1<<21) == 0 { // CAP_SYS_ADMIN
					t.Errorf("privileged container's CapEff %s lacks CAP_SYS_ADMIN", v)
				}
			}
		}
	})
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(b)) != want {
		t.Errorf("%s = %q, %v; want %q", path, b, err, want)
	}
}

func testExits(t *testing.T, h *harness, image string) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		code   int
		reason string
	}{{"exit 3", 3, ReasonError}, {"exit 0", 0, ReasonCompleted}} {
		t.Run(c.name, func(t *testing.T) {
			pod := testPod("exit-"+strconv.Itoa(c.code), image)
			sb, id := h.run(pod, nil)
			get(t, sb.NetNS, "http://127.0.0.1:8080/")
			post(t, sb.NetNS, fmt.Sprintf("http://127.0.0.1:8080/exit?code=%d", c.code))
			st := h.waitState(id, agent.StateExited)
			if int(st.ExitCode) != c.code || st.Reason != c.reason || st.FinishedAt.IsZero() || st.Pid != 0 {
				t.Errorf("status %+v", st)
			}
			// The exit is recorded and the task gone: a new runtime reads
			// the same.
			if _, err := h.rt.client.TaskService().Get(h.rt.ctx(ctx), taskGet(id)); err == nil {
				t.Error("the exited task was not deleted")
			}
			again, err := h.newRuntime().ContainerStatus(ctx, id)
			if err != nil || again.ExitCode != st.ExitCode || again.Reason != st.Reason || !again.FinishedAt.Equal(st.FinishedAt) {
				t.Errorf("status from a new runtime %+v %v, want %+v", again, err, st)
			}
		})
	}

	t.Run("SIGKILL after grace", func(t *testing.T) {
		pod := testPod("slow-0", image)
		pod.Spec.Containers[0].Args = []string{"--drain", "30s"}
		sb, id := h.run(pod, nil)
		get(t, sb.NetNS, "http://127.0.0.1:8080/")
		start := time.Now()
		if err := h.rt.StopContainer(ctx, id, 300*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("timing: stop with 300ms grace of a 30s drain: %v", took)
		if took < 300*time.Millisecond || took > 5*time.Second {
			t.Errorf("stop took %v", took)
		}
		st, _ := h.rt.ContainerStatus(ctx, id)
		if st.State != agent.StateExited || st.ExitCode != 137 || st.Reason != ReasonError {
			t.Errorf("status after SIGKILL %+v", st)
		}
	})

	t.Run("OOM killed", func(t *testing.T) {
		pod := testPod("oom-0", image)
		c := &pod.Spec.Containers[0]
		c.Command = []string{"sh", "-c", "x=0123456789; while true; do x=$x$x; done"}
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
		_, id := h.run(pod, nil)
		st := h.waitState(id, agent.StateExited)
		if st.Reason != ReasonOOMKilled || st.ExitCode != 137 {
			t.Errorf("status %+v, want OOMKilled 137", st)
		}
	})

	t.Run("start error", func(t *testing.T) {
		pod := testPod("bad-0", image)
		pod.Spec.Containers[0].Command = []string{"/nonexistent"}
		sb, err := h.rt.CreateSandbox(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		img, _ := h.rt.EnsureImage(ctx, image, corev1.PullIfNotPresent, nil)
		id, err := h.rt.CreateContainer(ctx, agent.ContainerConfig{Pod: pod, Sandbox: sb, Container: &pod.Spec.Containers[0], Image: img})
		if err != nil {
			t.Fatal(err)
		}
		err = h.rt.StartContainer(ctx, id)
		if err == nil {
			t.Fatal("started a container whose command does not exist")
		}
		t.Logf("start error: %v", err)
		st, _ := h.rt.ContainerStatus(ctx, id)
		if st.State != agent.StateExited || st.ExitCode != 128 || st.Reason != ReasonStartError {
			t.Errorf("status after a failed start %+v", st)
		}
	})

	t.Run("stop and remove a created container", func(t *testing.T) {
		pod := testPod("created-0", image)
		sb, _ := h.rt.CreateSandbox(ctx, pod)
		img, _ := h.rt.EnsureImage(ctx, image, corev1.PullIfNotPresent, nil)
		id, err := h.rt.CreateContainer(ctx, agent.ContainerConfig{Pod: pod, Sandbox: sb, Container: &pod.Spec.Containers[0], Image: img, Attempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := h.rt.ContainerStatus(ctx, id); st.State != agent.StateCreated || st.Labels[api.LabelAttempt] != "1" {
			t.Errorf("created container %+v", st)
		}
		if err := h.rt.StopContainer(ctx, id, time.Second); err != nil {
			t.Error(err)
		}
		if err := h.rt.RemoveContainer(ctx, id); err != nil {
			t.Error(err)
		}
	})

	t.Run("remove a sandbox with a running container", func(t *testing.T) {
		pod := testPod("left-0", image)
		_, id := h.run(pod, nil)
		if err := h.rt.RemoveSandbox(ctx, pod.UID); err != nil {
			t.Fatal(err)
		}
		if _, err := h.rt.ContainerStatus(ctx, id); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("container left after RemoveSandbox: %v", err)
		}
	})

	t.Run("remove a running container", func(t *testing.T) {
		pod := testPod("running-0", image)
		_, id := h.run(pod, nil)
		if err := h.rt.RemoveContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := h.rt.ContainerStatus(ctx, id); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("status of a removed container: %v", err)
		}
	})
}

func testContainerdRestart(t *testing.T, h *harness, rc *restartableContainerd, image string) {
	ctx := context.Background()
	pod := testPod("survivor-0", image)
	sb, id := h.run(pod, nil)
	get(t, sb.NetNS, "http://127.0.0.1:8080/")

	rc.restart(true)
	start := time.Now()
	v, err := h.rt.Version(ctx)
	if err != nil {
		t.Fatalf("Version after containerd restarted: %v", err)
	}
	t.Logf("timing: first call after containerd restarted answered in %v (%s)", time.Since(start), v)
	if got := get(t, sb.NetNS, "http://127.0.0.1:8080/"); got != "version=1 pod=survivor-0\n" {
		t.Errorf("container after containerd restarted answers %q", got)
	}
	st, err := h.rt.ContainerStatus(ctx, id)
	if err != nil || st.State != agent.StateRunning {
		t.Errorf("status after restart %+v %v", st, err)
	}
	if code, out := h.exec(id, "echo", "still here"); code != 0 || out != "still here\n" {
		t.Errorf("exec after restart: %d %q", code, out)
	}

	// Twice more, each time calling straight away, while containerd may
	// still be starting.
	for i := 0; i < 2; i++ {
		rc.restart(false)
		start := time.Now()
		if ctrs, err := h.rt.ListContainers(ctx); err != nil || len(ctrs) != 1 || ctrs[0].State != agent.StateRunning {
			t.Errorf("ListContainers right after restart %d: %+v %v", i+2, ctrs, err)
		}
		t.Logf("timing: ListContainers right after containerd's restart: %v", time.Since(start))
	}
	if err := h.rt.StopContainer(ctx, id, 5*time.Second); err != nil {
		t.Errorf("stop after restarts: %v", err)
	}
}

func taskGet(id string) *tasksapi.GetRequest { return &tasksapi.GetRequest{ContainerID: id} }

// shims counts the containerd shims serving namespace ns of the containerd
// at address.
func shims(t *testing.T, address, ns string) int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		args := strings.Split(string(b), "\x00")
		if !strings.HasSuffix(args[0], "containerd-shim-runc-v2") || slices.Contains(args, "start") || slices.Contains(args, "delete") {
			continue
		}
		if slices.Contains(args, ns) && slices.Contains(args, address) {
			n++
		}
	}
	return n
}
