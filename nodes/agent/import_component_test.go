package agent_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/examples/images"
	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/agent/probe"
	"berth.dev/berth/nodes/api"
)

// An OCI archive imported through the Manager, into the test's own
// containerd, runs with imagePullPolicy Never; corrupt archives are
// refused and disturb nothing running.
func TestComponentImportArchive(t *testing.T) {
	e := newAgentEnv(t)
	ctx := context.Background()
	ready := func(s api.PodStatus) bool { return s.Ready }

	img := testenv.EchoImage(t, "2")
	archive := filepath.Join(t.TempDir(), "echo-2.tar")
	if err := images.WriteOCIArchive(img, images.EchoRef("", "2"), archive); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	wantID, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}

	// A pod pulled from the registry runs throughout.
	web := echoPod(e, "web")
	if err := e.m.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: []api.Pod{web}}); err != nil {
		t.Fatal(err)
	}
	before := e.waitPod("default/web", 60*time.Second, "ready", ready).ContainerStatuses[0]

	t.Run("CorruptArchives", func(t *testing.T) {
		for name, body := range map[string][]byte{
			"not an archive": []byte(strings.Repeat("garbage ", 512)),
			"truncated":      good[:len(good)/2],
			"no index":       tarWithout(t, good, "index.json"),
		} {
			imgs, err := e.m.ImportImages(ctx, bytes.NewReader(body))
			if !errors.Is(err, api.ErrInvalid) || imgs != nil {
				t.Errorf("%s: %v, %v; want ErrInvalid", name, imgs, err)
				continue
			}
			if strings.Contains(err.Error(), e.stateDir) {
				t.Errorf("%s: the error names the temporary file: %v", name, err)
			}
			t.Logf("%s: %v", name, err)
		}
		if _, err := e.rt.EnsureImage(ctx, "berth/echo:2", corev1.PullNever, nil); err == nil {
			t.Error("berth/echo:2 present after corrupt imports only")
		}
		now := e.waitPod("default/web", time.Second, "ready", ready).ContainerStatuses[0]
		if now.ContainerID != before.ContainerID || now.RestartCount != 0 {
			t.Errorf("web disturbed by corrupt imports: %+v", now)
		}
	})

	t.Run("ImportThenRunWithPullNever", func(t *testing.T) {
		f, err := os.Open(archive)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		start := time.Now()
		imgs, err := e.m.ImportImages(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("FIGURE import of a %d KiB archive through the Manager: %v", len(good)>>10, time.Since(start).Round(time.Millisecond))
		if len(imgs) != 1 || imgs[0].Ref != "docker.io/berth/echo:2" || imgs[0].ID != wantID.String() {
			t.Fatalf("imported %+v; want docker.io/berth/echo:2 %s", imgs, wantID)
		}
		if left, _ := filepath.Glob(filepath.Join(e.stateDir, "import", "archive-*")); len(left) > 0 {
			t.Errorf("archives left: %v", left)
		}
		var evs []string
		evc, _ := e.m.Events(ctx, time.Time{}, false)
		for ev := range evc {
			if ev.Reason == "Imported" {
				evs = append(evs, ev.Type+" "+ev.Message)
			}
		}
		if len(evs) != 1 || evs[0] != "Normal imported docker.io/berth/echo:2" {
			t.Errorf("Imported events %q", evs)
		}

		local := echoPod(e, "local")
		local.Spec.Containers[0].Image = "berth/echo:2"
		local.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
		if err := e.m.SetPods(ctx, api.DesiredPods{Generation: 2, Pods: []api.Pod{web, local}}); err != nil {
			t.Fatal(err)
		}
		st := e.waitPod("default/local", 60*time.Second, "ready", ready)
		if got := st.ContainerStatuses[0].ImageID; got != wantID.String() {
			t.Errorf("local runs image %s; want the imported %s", got, wantID)
		}
		if got := e.get(local.UID, "/"); got != "version=2 pod=local\n" {
			t.Errorf("GET / of the imported echo answered %q; want version 2", got)
		}
		now := e.waitPod("default/web", time.Second, "ready", ready).ContainerStatuses[0]
		if now.ContainerID != before.ContainerID || now.RestartCount != 0 {
			t.Errorf("web disturbed by the import: %+v", now)
		}
	})
}

// get answers a GET of path on port 8080 in the pod's network namespace.
func (e *agentEnv) get(uid, path string) string {
	e.t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: probe.DialContext(e.netns(uid)), DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:8080" + path)
	if err != nil {
		e.t.Fatalf("GET %s in pod %s: %v", path, uid, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// tarWithout rewrites the tar archive without the entry named name.
func tarWithout(t *testing.T, archive []byte, name string) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(bytes.NewReader(archive))
	dropped := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			dropped = true
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if !dropped {
		t.Fatalf("no %s in the archive", name)
	}
	return out.Bytes()
}
