package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	cimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/logs"
	"berth.dev/berth/nodes/runtime/netns"
)

// TestMain lets the test binary stand in for the berth binary as the
// containers' log driver: containerd's shim runs it (LoggerPath defaults
// to this executable) as `<binary> __log-driver <config>`.
func TestMain(m *testing.M) {
	logs.RunIfDriver()
	os.Exit(m.Run())
}

// harness is a Runtime in a containerd namespace and state directory of its
// own. When the test ends it removes, through the Runtime, every container
// and sandbox left, then checks that nothing is left anywhere (containerd
// objects, mounts, cgroups) and removes the namespace.
type harness struct {
	t     *testing.T
	cd    *testenv.ContainerdDaemon
	opts  Options
	rt    *Runtime
	ns    string
	state string
}

func newHarness(t *testing.T, cd *testenv.ContainerdDaemon, modify ...func(*Options)) *harness {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	h := &harness{t: t, cd: cd, ns: "berth-test-" + hex.EncodeToString(b)}
	// Short: netns and ns mounts live under it.
	dir, err := os.MkdirTemp("", "berth-rt-")
	if err != nil {
		t.Fatal(err)
	}
	h.state = filepath.Join(dir, "state")
	h.opts = Options{
		Address:   cd.Address(),
		Namespace: h.ns,
		StateDir:  h.state,
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range modify {
		m(&h.opts)
	}
	t.Cleanup(func() {
		h.cleanup()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove state dir: %v", err)
		}
	})
	h.rt = h.newRuntime()
	return h
}

// newRuntime makes another Runtime on the same namespace and state (an
// agent restart); it is closed when the test ends.
func (h *harness) newRuntime() *Runtime {
	h.t.Helper()
	rt, err := New(context.Background(), h.opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { rt.Close() })
	return rt
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (h *harness) cleanup() {
	t := h.t
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rt, err := New(ctx, h.opts)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer rt.Close()
	ctrs, err := rt.ListContainers(ctx)
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, c := range ctrs {
		if err := rt.StopContainer(ctx, c.ID, 0); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := rt.RemoveContainer(ctx, c.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	sbs, err := rt.ListSandboxes(ctx)
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, sb := range sbs {
		if err := rt.RemoveSandbox(ctx, sb.PodUID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}

	// Nothing may be left: no containers or tasks in containerd, no mounts
	// under the state directory, no cgroups.
	cl, err := client.New(h.cd.Address())
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer cl.Close()
	nctx := namespaces.WithNamespace(ctx, h.ns)
	if left, _ := cl.Containers(nctx); len(left) > 0 {
		t.Errorf("cleanup: %d containers left in containerd", len(left))
	}
	if m, _ := mountsUnder(filepath.Dir(h.state)); len(m) > 0 {
		t.Errorf("cleanup: mounts left: %v", m)
		for _, p := range m {
			syscall.Unmount(p, syscall.MNT_DETACH)
		}
	}
	for _, d := range cgroupDirs(rt.CgroupParent(), rt.cgroupV2) {
		if ents, err := os.ReadDir(d); err == nil {
			for _, e := range ents {
				if e.IsDir() {
					t.Errorf("cleanup: cgroup left: %s/%s", d, e.Name())
					syscall.Rmdir(filepath.Join(d, e.Name()))
				}
			}
		}
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			t.Errorf("cleanup: remove cgroup %s: %v", d, err)
		}
	}
	// Images, then the namespace (containerd refuses to delete one that
	// still holds anything; garbage collection may lag a little).
	is := cl.ImageService()
	imgs, _ := is.List(nctx)
	for _, img := range imgs {
		if err := is.Delete(nctx, img.Name, cimages.SynchronousDelete()); err != nil {
			t.Errorf("cleanup: delete image %s: %v", img.Name, err)
		}
	}
	var nsErr error
	for i := 0; i < 100; i++ {
		if nsErr = cl.NamespaceService().Delete(nctx, h.ns); nsErr == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("cleanup: delete namespace %s: %v", h.ns, nsErr)
}

// pod returns a pod of one echo container.
func testPod(name, image string) *api.Pod {
	b := make([]byte, 8)
	rand.Read(b)
	return &api.Pod{
		Namespace: "default",
		Name:      name,
		UID:       "uid-" + hex.EncodeToString(b),
		Hash:      "hash-1",
		Spec: api.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways,
			Containers:    []corev1.Container{{Name: "echo", Image: image}},
		},
	}
}

// run creates the pod's sandbox, pulls its first container's image (if
// not present), creates and starts the container, and returns its id.
func (h *harness) run(pod *api.Pod, mounts map[string]string) (agent.Sandbox, string) {
	h.t.Helper()
	ctx := context.Background()
	sb, err := h.rt.CreateSandbox(ctx, pod)
	if err != nil {
		h.t.Fatal(err)
	}
	c := &pod.Spec.Containers[0]
	img, err := h.rt.EnsureImage(ctx, c.Image, corev1.PullIfNotPresent, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	id, err := h.rt.CreateContainer(ctx, agent.ContainerConfig{
		Pod: pod, Sandbox: sb, Container: c, Image: img, Mounts: mounts,
		LogPath: filepath.Join(h.state, "logs", pod.UID, c.Name, "0.log"),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.rt.StartContainer(ctx, id); err != nil {
		h.t.Fatal(err)
	}
	return sb, id
}

// httpIn is an HTTP client whose connections are made inside a network
// namespace.
func httpIn(nsPath string) *http.Client {
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DialContext: netns.Dialer(nsPath), DisableKeepAlives: true},
	}
}

// get requests url in the namespace until it answers 200 (the server is
// starting), and returns the body.
func get(t *testing.T, nsPath, url string) string {
	t.Helper()
	c := httpIn(nsPath)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == 200 {
				return string(b)
			}
			err = fmt.Errorf("%s %q %v", resp.Status, b, rerr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func post(t *testing.T, nsPath, url string) {
	t.Helper()
	resp, err := httpIn(nsPath).Post(url, "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// waitState polls the container until its state is want.
func (h *harness) waitState(id string, want agent.State) agent.ContainerState {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := h.rt.ContainerStatus(context.Background(), id)
		if err != nil {
			h.t.Fatal(err)
		}
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("container %s is %s, want %s", id, st.State, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exec runs a command in the container and returns its exit code and
// output (stdout and stderr together).
func (h *harness) exec(id string, cmd ...string) (int, string) {
	h.t.Helper()
	var out strings.Builder
	code, err := h.rt.Exec(context.Background(), id, api.ExecRequest{Command: cmd, Stdout: &out, Stderr: &out, Timeout: 20 * time.Second})
	if err != nil {
		h.t.Fatalf("exec %v: %v", cmd, err)
	}
	return code, out.String()
}

// restartableContainerd can restart the test's containerd (testenv starts
// it and does not). The restarted daemon is stopped when the test ends; a
// restartableContainerd must be made before anything that still needs
// containerd in its cleanup.
type restartableContainerd struct {
	t   *testing.T
	cd  *testenv.ContainerdDaemon
	cmd *exec.Cmd
}

func newRestartableContainerd(t *testing.T, cd *testenv.ContainerdDaemon) *restartableContainerd {
	rc := &restartableContainerd{t: t, cd: cd}
	t.Cleanup(func() {
		if rc.cmd != nil {
			rc.cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { rc.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				rc.cmd.Process.Kill()
				<-done
			}
		}
	})
	return rc
}

// restart stops containerd (SIGTERM; its shims and containers live on) and
// starts it again with the same configuration; with wait, it returns once
// containerd serves again.
func (rc *restartableContainerd) restart(wait bool) {
	t := rc.t
	t.Helper()
	cfg := filepath.Join(filepath.Dir(rc.cd.Root()), "config.toml")
	pid := 0
	if rc.cmd != nil {
		pid = rc.cmd.Process.Pid
	} else {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
			if filepath.Base(args[0]) == "containerd" && strings.Contains(string(b), cfg) {
				pid, _ = strconv.Atoi(e.Name())
			}
		}
	}
	if pid == 0 {
		t.Fatal("containerd's process not found")
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if rc.cmd != nil {
		rc.cmd.Wait()
	} else {
		for i := 0; i < 1000; i++ {
			if err := syscall.Kill(pid, 0); err != nil {
				break
			}
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
				break // a zombie waiting for testenv to reap it
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(rc.cd.LogPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rc.cmd = cmd
	if !wait {
		return
	}
	cl, err := client.New(rc.cd.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, err := cl.IsServing(ctx); !ok {
		t.Fatalf("containerd not serving after restart: %v", err)
	}
}
