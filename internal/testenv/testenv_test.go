package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/examples/images"
	"github.com/containerd/containerd/v2/client"
	cimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestRequireSkipsOrFails(t *testing.T) {
	t.Setenv("BERTH_E2E", "")
	ran := false
	t.Run("skip", func(t *testing.T) {
		Require(t, "berth-no-such-binary")
		ran = true
	})
	if ran {
		t.Error("Require did not stop the test on a missing binary")
	}
	// Under BERTH_E2E=required the same check fails; observe it through a
	// recorder rather than by failing this test.
	t.Setenv("BERTH_E2E", "required")
	rec := &recordTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Require(rec, "berth-no-such-binary")
	}()
	<-done
	if !rec.fataled || rec.skipped {
		t.Errorf("under BERTH_E2E=required: fatal=%v skip=%v, want fatal only", rec.fataled, rec.skipped)
	}
	if !strings.Contains(rec.msg, "berth-no-such-binary") {
		t.Errorf("message %q does not name the binary", rec.msg)
	}
}

// recordTB records Fatal and Skip instead of ending the test.
type recordTB struct {
	testing.TB
	fataled, skipped bool
	msg              string
}

func (r *recordTB) Helper() {}
func (r *recordTB) Fatalf(format string, args ...any) {
	r.fataled, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordTB) Skipf(format string, args ...any) {
	r.skipped, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/run/a\040b`: "/run/a b",
		`/plain`:      "/plain",
		`/x\134y`:     `/x\y`,
		`/trail\04`:   `/trail\04`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRegistryServesV2(t *testing.T) {
	r := Registry(t)
	resp, err := http.Get(r.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /v2/ = %s", resp.Status)
	}
}

// TestEchoOnContainerd proves the harnesses and the images against the real
// components: Debian's containerd and runc, driven by containerd's v2 Go
// client, pulling from Debian's docker-registry and importing an OCI archive.
//
// Afterwards nothing of the instance may be left on the machine.
func TestEchoOnContainerd(t *testing.T) {
	var tr traces
	t.Run("echo on containerd", func(t *testing.T) { echoOnContainerd(t, &tr) })
	tr.assertGone(t)
}

// traces are what a containerd instance may leave on the machine.
type traces struct {
	dir        string
	namespaces []string
	pids       []int
}

func (tr *traces) assertGone(t *testing.T) {
	t.Helper()
	if tr.dir == "" {
		return // skipped
	}
	for _, pid := range tr.pids {
		if _, state, ok := procStat(pid); ok && state != 'Z' {
			cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
			t.Errorf("process %d (%q) still running", pid, cmd)
		}
	}
	if _, err := os.Stat(tr.dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", tr.dir, err)
	}
	if m, _ := mountsUnder(tr.dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	for _, ns := range tr.namespaces {
		if _, err := os.Stat(filepath.Join(defaultRuncRoot, ns)); !os.IsNotExist(err) {
			t.Errorf("runc state of namespace %s left: %v", ns, err)
		}
		if left, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns)); len(left) > 0 {
			t.Errorf("cgroups left: %v", left)
		}
	}
}

func echoOnContainerd(t *testing.T, tr *traces) {
	start := time.Now()
	cd := Containerd(t)
	tr.dir = cd.dir
	t.Logf("containerd up in %v", time.Since(start))
	start = time.Now()
	reg := EchoRegistry(t)
	t.Logf("registry up with echo:1 and echo:2 in %v (includes building them)", time.Since(start))
	cl := cd.Client(t)

	ctx := context.Background()
	v, err := cl.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd %s (%s)", v.Version, v.Revision)

	t.Run("pull from registry", func(t *testing.T) {
		ctx := newNamespace(t, cl)
		tr.addNamespace(ctx)
		resolver := docker.NewResolver(docker.ResolverOptions{
			Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
		})
		ref := reg.Ref("berth/echo:1")
		start := time.Now()
		img, err := cl.Pull(ctx, ref, client.WithResolver(resolver), client.WithPullUnpack, client.WithPullSnapshotter("overlayfs"))
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		t.Logf("timing: pull and unpack %s: %v", ref, time.Since(start))
		want, _ := EchoImage(t, "1").Digest()
		if got := img.Target().Digest.String(); got != want.String() {
			t.Errorf("pulled digest %s, pushed %s", got, want)
		}
		runEcho(t, ctx, cl, img, "1")
	})

	t.Run("import OCI archive", func(t *testing.T) {
		ctx := newNamespace(t, cl)
		tr.addNamespace(ctx)
		archive := filepath.Join(t.TempDir(), "echo-2.tar")
		if err := images.WriteOCIArchive(EchoImage(t, "2"), images.EchoRef("", "2"), archive); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(archive)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		start := time.Now()
		imgs, err := cl.Import(ctx, f)
		if err != nil {
			t.Fatalf("import: %v", err)
		}
		if len(imgs) != 1 || imgs[0].Name != "docker.io/berth/echo:2" {
			t.Fatalf("imported %+v, want docker.io/berth/echo:2", imgs)
		}
		img := client.NewImage(cl, imgs[0])
		if err := img.Unpack(ctx, "overlayfs"); err != nil {
			t.Fatalf("unpack: %v", err)
		}
		t.Logf("timing: import and unpack: %v", time.Since(start))
		runEcho(t, ctx, cl, img, "2")
	})
}

func (tr *traces) addNamespace(ctx context.Context) {
	ns, _ := namespaces.Namespace(ctx)
	tr.namespaces = append(tr.namespaces, ns)
}

// newNamespace returns a context in a fresh containerd namespace, which is
// emptied and deleted when the test ends.
func newNamespace(t *testing.T, cl *client.Client) context.Context {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	ns := "berth-test-" + hex.EncodeToString(b)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	if err := cl.NamespaceService().Create(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		is := cl.ImageService()
		imgs, err := is.List(ctx)
		if err != nil {
			t.Errorf("list images: %v", err)
		}
		for _, img := range imgs {
			if err := is.Delete(ctx, img.Name, cimages.SynchronousDelete()); err != nil {
				t.Errorf("delete image %s: %v", img.Name, err)
			}
		}
		// Deleting a namespace needs it empty; garbage collection of the
		// content and snapshots may lag the image deletion a little.
		var err2 error
		for i := 0; i < 50; i++ {
			if err2 = cl.NamespaceService().Delete(ctx, ns); err2 == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("delete namespace %s: %v", ns, err2)
	})
	return ctx
}

// runEcho runs img as a container on the host network, on a free loopback
// port, checks that it answers version, runs `id` in it as root and as the
// nonroot user, stops it with SIGTERM and removes it.
func runEcho(t *testing.T, ctx context.Context, cl *client.Client, img client.Image, version string) {
	t.Helper()
	port := FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	id := "echo-" + version
	logPath := filepath.Join(t.TempDir(), "echo.log")

	start := time.Now()
	ctr, err := cl.NewContainer(ctx, id,
		client.WithImage(img),
		client.WithSnapshotter("overlayfs"),
		client.WithNewSnapshot(id+"-rootfs", img),
		client.WithNewSpec(
			oci.WithImageConfigArgs(img, []string{"--listen", addr}),
			oci.WithHostNamespace(specs.NetworkNamespace),
			oci.WithHostHostsFile,
			oci.WithEnv([]string{"POD_NAME=" + id}),
		),
	)
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() {
		if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container: %v", err)
		}
	})
	task, err := ctr.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	taskDeleted := false
	t.Cleanup(func() {
		if !taskDeleted {
			if _, err := task.Delete(ctx, client.WithProcessKill); err != nil {
				t.Errorf("delete task: %v", err)
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("echo's output:\n%s", b)
		}
	})
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v", err)
	}
	t.Logf("timing: create and start container: %v", time.Since(start))

	start = time.Now()
	body := getUntil(t, "http://"+addr+"/", 10*time.Second)
	t.Logf("timing: first HTTP answer %v after start", time.Since(start))
	if want := fmt.Sprintf("version=%s pod=%s\n", version, id); body != want {
		t.Errorf("GET / = %q, want %q", body, want)
	}

	spec, err := ctr.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user specs.User
		want string
	}{
		{specs.User{}, "uid=0(root) gid=0(root)"},
		{specs.User{UID: images.NonRootUID, GID: images.NonRootUID}, "uid=65532(nonroot) gid=65532(nonroot)"},
	} {
		start := time.Now()
		out, code := execIn(t, ctx, task, spec, c.user, "busybox", "id")
		t.Logf("timing: exec busybox id: %v", time.Since(start))
		if code != 0 || !strings.HasPrefix(out, c.want) {
			t.Errorf("exec busybox id as %d = %d %q, want %q", c.user.UID, code, out, c.want)
		}
	}

	start = time.Now()
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-exited:
		if st.ExitCode() != 0 {
			t.Errorf("exit code after SIGTERM %d, want 0", st.ExitCode())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("echo did not exit on SIGTERM")
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete task: %v", err)
	}
	taskDeleted = true
	t.Logf("timing: SIGTERM to task deleted: %v", time.Since(start))
}

func getUntil(t testing.TB, url string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
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

var execSeq int

func execIn(t *testing.T, ctx context.Context, task client.Task, spec *oci.Spec, user specs.User, args ...string) (string, int) {
	t.Helper()
	ps := *spec.Process
	ps.Args = args
	ps.User = user
	ps.Terminal = false
	execSeq++
	// One buffer each: cio copies stdout and stderr in two goroutines, and
	// a shared bytes.Buffer loses output to their concurrent ReadFrom.
	var out, errOut bytes.Buffer
	p, err := task.Exec(ctx, fmt.Sprintf("exec-%d", execSeq), &ps, cio.NewCreator(cio.WithStreams(nil, &out, &errOut)))
	if err != nil {
		t.Fatalf("exec %v: %v", args, err)
	}
	defer p.Delete(ctx)
	st, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatalf("exec %v: start: %v", args, err)
	}
	code := (<-st).ExitCode()
	p.IO().Wait()
	return out.String() + errOut.String(), int(code)
}

// TestContainerdCleanupAfterDaemonDies leaves a running container behind and
// kills containerd with SIGKILL, so that the API cannot clean up; the
// harness must still leave no process, mount, runc state, cgroup or
// directory behind.
func TestContainerdCleanupAfterDaemonDies(t *testing.T) {
	var tr traces
	t.Run("leave a running task", func(t *testing.T) {
		cd := Containerd(t)
		leaveRunningTask(t, cd, &tr)
		cd.d.cmd.Process.Kill()
		<-cd.d.done
	})
	tr.assertGone(t)
}

// TestStaleInstanceSwept plays a test binary killed before its cleanup
// (its lock released, its containerd killed, a container left running):
// the next Containerd call removes that instance.
func TestStaleInstanceSwept(t *testing.T) {
	var tr traces
	t.Run("die without cleanup", func(t *testing.T) {
		cd := Containerd(noCleanup{t})
		leaveRunningTask(noCleanup{t}, cd, &tr)
		cd.stopEvents()
		cd.d.cmd.Process.Kill()
		<-cd.d.done
		cd.lock.Close()
	})
	if _, err := os.Stat(tr.dir); err != nil {
		t.Fatalf("instance gone before the sweep: %v", err)
	}
	t.Run("next instance", func(t *testing.T) { Containerd(t) })
	tr.assertGone(t)
}

// noCleanup drops the cleanups registered on it, as a killed test binary
// never runs them.
type noCleanup struct{ *testing.T }

func (noCleanup) Cleanup(func()) {}

// leaveRunningTask imports echo:1 into a new namespace of cd and starts a
// container of it that nobody removes.
func leaveRunningTask(t testing.TB, cd *ContainerdDaemon, tr *traces) {
	t.Helper()
	tr.dir = cd.dir
	cl, err := client.New(cd.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	b := make([]byte, 4)
	rand.Read(b)
	ns := "berth-test-" + hex.EncodeToString(b)
	tr.namespaces = append(tr.namespaces, ns)
	ctx := namespaces.WithNamespace(context.Background(), ns)

	archive := filepath.Join(t.TempDir(), "echo-1.tar")
	if err := images.WriteOCIArchive(EchoImage(t, "1"), images.EchoRef("", "1"), archive); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	imgs, err := cl.Import(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	img := client.NewImage(cl, imgs[0])
	if err := img.Unpack(ctx, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(FreePort(t))
	ctr, err := cl.NewContainer(ctx, "left", client.WithImage(img), client.WithSnapshotter("overlayfs"),
		client.WithNewSnapshot("left-rootfs", img),
		client.WithNewSpec(oci.WithImageConfigArgs(img, []string{"--listen", addr}), oci.WithHostNamespace(specs.NetworkNamespace)))
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	getUntil(t, "http://"+addr+"/", 10*time.Second)
	tr.pids = withDescendants(cd.processes())
	if len(tr.pids) < 3 {
		t.Fatalf("found containerd, shim and container processes %v, want at least 3", tr.pids)
	}
}
