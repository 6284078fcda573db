package runtime

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/examples/images"
	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/runtime/netns"
	"berth.dev/berth/render/api/v1alpha1"
)

// TestRuntime runs the Runtime against Debian's containerd and a local
// registry holding the echo images.
func TestRuntime(t *testing.T) {
	cd := testenv.Containerd(t)
	reg := testenv.EchoRegistry(t)
	plainHTTP := func(o *Options) {
		o.Registries = []v1alpha1.Registry{{Host: reg.Host(), PlainHTTP: true}}
	}
	echo1 := reg.Ref("berth/echo:1")

	t.Run("images", func(t *testing.T) { testImages(t, cd, reg) })
	t.Run("sandbox", func(t *testing.T) { testSandbox(t, newHarness(t, cd, plainHTTP)) })
	t.Run("echo", func(t *testing.T) {
		h := newHarness(t, cd, plainHTTP, func(o *Options) { o.LogMaxSize = 8 << 10; o.LogMaxFiles = 3 })
		testEcho(t, h, echo1)
	})
	t.Run("security", func(t *testing.T) { testSecurity(t, newHarness(t, cd, plainHTTP), echo1) })
	t.Run("exits", func(t *testing.T) { testExits(t, newHarness(t, cd, plainHTTP), echo1) })
	t.Run("containerd restart", func(t *testing.T) {
		// A containerd of its own, to restart.
		cd := testenv.Containerd(t)
		rc := newRestartableContainerd(t, cd)
		testContainerdRestart(t, newHarness(t, cd, plainHTTP), rc, echo1)
	})
}

func testImages(t *testing.T, cd *testenv.ContainerdDaemon, reg *testenv.RegistryDaemon) {
	ctx := context.Background()
	h := newHarness(t, cd)
	want1, _ := testenv.EchoImage(t, "1").ConfigName()
	want2, _ := testenv.EchoImage(t, "2").ConfigName()

	var ref string
	t.Run("pull from a plain HTTP registry", func(t *testing.T) {
		own := testenv.EchoRegistry(t) // stopped when this subtest ends
		h.opts.Registries = []v1alpha1.Registry{{Host: own.Host(), PlainHTTP: true}}
		rt := h.newRuntime()
		r := own.Ref("berth/echo:1")
		start := time.Now()
		img, err := rt.EnsureImage(ctx, r, corev1.PullAlways, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("timing: pull and unpack %s: %v", r, time.Since(start))
		if img.ID != want1.String() || img.Ref != r || img.User != "" {
			t.Errorf("image %+v, want ID %s", img, want1)
		}
		start = time.Now()
		if _, err := rt.EnsureImage(ctx, r, corev1.PullIfNotPresent, nil); err != nil {
			t.Fatal(err)
		}
		t.Logf("timing: EnsureImage IfNotPresent of a present image: %v", time.Since(start))

		_, err = rt.EnsureImage(ctx, own.Ref("berth/echo:9"), corev1.PullAlways, nil)
		if !errors.Is(err, agent.ErrImagePull) || !strings.Contains(err.Error(), "not found") {
			t.Errorf("pull of a missing tag: %v; want ErrImagePull saying not found", err)
		}
		t.Logf("missing tag: %v", err)
		ref = r
	})
	if ref == "" {
		t.FailNow()
	}

	t.Run("IfNotPresent without the registry", func(t *testing.T) {
		rt := h.newRuntime()
		img, err := rt.EnsureImage(ctx, ref, corev1.PullIfNotPresent, nil)
		if err != nil || img.ID != want1.String() {
			t.Errorf("IfNotPresent with the registry gone: %+v, %v", img, err)
		}
		if _, err := rt.EnsureImage(ctx, ref, "", nil); err != nil {
			t.Errorf("default policy for a tag: %v", err)
		}
		_, err = rt.EnsureImage(ctx, ref, corev1.PullAlways, nil)
		if !errors.Is(err, agent.ErrImagePull) {
			t.Errorf("Always with the registry gone: %v, want ErrImagePull", err)
		}
		t.Logf("registry gone: %v", err)
	})

	t.Run("Never", func(t *testing.T) {
		if _, err := h.rt.EnsureImage(ctx, ref, corev1.PullNever, nil); err != nil {
			t.Errorf("Never with the image present: %v", err)
		}
		_, err := h.rt.EnsureImage(ctx, reg.Ref("berth/echo:2"), corev1.PullNever, nil)
		if !errors.Is(err, agent.ErrImageNeverPull) || errors.Is(err, agent.ErrImagePull) {
			t.Errorf("Never with the image missing: %v", err)
		}
	})

	t.Run("mirrors in order", func(t *testing.T) {
		h.opts.Registries = []v1alpha1.Registry{{
			Host:    "mirrored.invalid",
			Mirrors: []string{"http://127.0.0.1:1", "http://" + reg.Host()},
		}}
		rt := h.newRuntime()
		img, err := rt.EnsureImage(ctx, "mirrored.invalid/berth/echo:2", corev1.PullAlways, nil)
		if err != nil || img.ID != want2.String() {
			t.Errorf("pull through the second mirror: %+v, %v", img, err)
		}
	})

	t.Run("registry auth", func(t *testing.T) {
		target, _ := url.Parse(reg.URL())
		proxy := httputil.NewSingleHostReverseProxy(target)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "puller" || p != "s3cret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="berth-test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
			proxy.ServeHTTP(w, r)
		}))
		defer srv.Close()
		host := strings.TrimPrefix(srv.URL, "http://")
		h.opts.Registries = []v1alpha1.Registry{{Host: host, PlainHTTP: true}}
		rt := h.newRuntime()
		ref := host + "/berth/echo:2"
		_, err := rt.EnsureImage(ctx, ref, corev1.PullAlways, nil)
		if !errors.Is(err, agent.ErrImagePull) || !strings.Contains(err.Error(), "authorization") {
			t.Errorf("pull without credentials: %v, want ErrImagePull saying authorization failed", err)
		}
		t.Logf("without credentials: %v", err)
		wrong := api.Sensitive(`{"auths":{"` + host + `":{"auth":"cHVsbGVyOndyb25n"}}}`)
		_, err = rt.EnsureImage(ctx, ref, corev1.PullAlways, []api.Sensitive{wrong})
		if !errors.Is(err, agent.ErrImagePull) || !strings.Contains(strings.ToLower(err.Error()), "unauthorized") || strings.Contains(err.Error(), "cHVsbGVyOndyb25n") {
			t.Errorf("pull with a wrong password: %v, want ErrImagePull saying unauthorized", err)
		}
		t.Logf("wrong password: %v", err)
		other := api.Sensitive(`{"auths":{"elsewhere.example":{"username":"x","password":"y"}}}`)
		auth := api.Sensitive(`{"auths":{"http://` + host + `":{"username":"puller","password":"s3cret"}}}`)
		img, err := rt.EnsureImage(ctx, ref, corev1.PullAlways, []api.Sensitive{other, auth})
		if err != nil || img.ID != want2.String() {
			t.Errorf("pull with credentials: %+v, %v", img, err)
		}
	})

	t.Run("CA file", func(t *testing.T) {
		target, _ := url.Parse(reg.URL())
		srv := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(target))
		defer srv.Close()
		ca := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		host := strings.TrimPrefix(srv.URL, "https://")
		ref := host + "/berth/echo:1"
		h.opts.Registries = nil
		defer func() { h.opts.Registries = nil }() // the CA file goes with t
		_, err := h.newRuntime().EnsureImage(ctx, ref, corev1.PullAlways, nil)
		if !errors.Is(err, agent.ErrImagePull) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("pull over TLS without the CA: %v", err)
		}
		h.opts.Registries = []v1alpha1.Registry{{Host: host, CAFile: ca}}
		img, err := h.newRuntime().EnsureImage(ctx, ref, corev1.PullAlways, nil)
		if err != nil || img.ID != want1.String() {
			t.Errorf("pull over TLS with the CA: %+v %v", img, err)
		}
	})

	t.Run("import an OCI archive", func(t *testing.T) {
		archive := filepath.Join(t.TempDir(), "echo-2.tar")
		if err := images.WriteOCIArchive(testenv.EchoImage(t, "2"), images.EchoRef("", "2"), archive); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		imgs, err := h.rt.ImportArchive(ctx, archive)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("timing: import and unpack: %v", time.Since(start))
		if len(imgs) != 1 || imgs[0].Ref != "docker.io/berth/echo:2" || imgs[0].ID != want2.String() {
			t.Fatalf("imported %+v", imgs)
		}
		if _, err := h.rt.EnsureImage(ctx, "berth/echo:2", corev1.PullNever, nil); err != nil {
			t.Errorf("imported image not found by its short name: %v", err)
		}
	})
}

func testSandbox(t *testing.T, h *harness) {
	ctx := context.Background()
	pod := testPod("sb-0", "unused")
	sb, err := h.rt.CreateSandbox(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if sb.PodUID != pod.UID || sb.Pod != "default/sb-0" || !strings.HasPrefix(sb.NetNS, filepath.Join(h.state, "netns")+"/") ||
		sb.Dir != filepath.Join(h.state, "pods", pod.UID) {
		t.Errorf("sandbox %+v", sb)
	}
	if up, err := netns.LoopbackUp(sb.NetNS); !up || err != nil {
		t.Errorf("loopback in the sandbox: up=%v %v", up, err)
	}
	hosts, _ := os.ReadFile(filepath.Join(sb.Dir, "etc", "hosts"))
	if !strings.Contains(string(hosts), "127.0.0.1\tlocalhost") || !strings.Contains(string(hosts), "\tsb-0\n") {
		t.Errorf("hosts file:\n%s", hosts)
	}
	again, err := h.rt.CreateSandbox(ctx, pod)
	if err != nil || !reflect.DeepEqual(again, sb) {
		t.Errorf("second CreateSandbox = %+v, %v; want the same sandbox", again, err)
	}

	hostPod := testPod("host-0", "unused")
	hostPod.Spec.HostNetwork = true
	hsb, err := h.rt.CreateSandbox(ctx, hostPod)
	if err != nil || hsb.NetNS != "" {
		t.Errorf("hostNetwork sandbox %+v, %v", hsb, err)
	}

	// A new Runtime (an agent restart) finds both.
	list, err := h.newRuntime().ListSandboxes(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListSandboxes after restart = %+v, %v", list, err)
	}

	// A lost namespace (as after a reboot) is made again.
	if err := netns.Remove(sb.NetNS); err != nil {
		t.Fatal(err)
	}
	remade, err := h.rt.CreateSandbox(ctx, pod)
	if err != nil || remade.NetNS == sb.NetNS {
		t.Errorf("sandbox after losing its netns: %+v, %v", remade, err)
	}
	if ok, _ := netns.Exists(remade.NetNS); !ok {
		t.Error("remade netns does not exist")
	}

	for _, p := range []*api.Pod{pod, hostPod} {
		if err := h.rt.RemoveSandbox(ctx, p.UID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(remade.NetNS); !os.IsNotExist(err) {
		t.Errorf("netns left after RemoveSandbox: %v", err)
	}
	if _, err := os.Stat(remade.Dir); !os.IsNotExist(err) {
		t.Errorf("pod directory left after RemoveSandbox: %v", err)
	}
	if err := h.rt.RemoveSandbox(ctx, pod.UID); err != nil {
		t.Errorf("removing a removed sandbox: %v", err)
	}
	if list, _ := h.rt.ListSandboxes(ctx); len(list) != 0 {
		t.Errorf("sandboxes left: %+v", list)
	}
	if err := h.rt.RemoveSandbox(ctx, "../etc"); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("RemoveSandbox(../etc) = %v", err)
	}
}

// envOf returns echo's environment.
func envOf(t *testing.T, nsPath string) map[string]string {
	t.Helper()
	var env map[string]string
	if err := json.Unmarshal([]byte(get(t, nsPath, "http://127.0.0.1:8080/env")), &env); err != nil {
		t.Fatal(err)
	}
	return env
}

func TestRuncVersion(t *testing.T) {
	testenv.Require(t, "runc")
	v, err := RuncVersion(context.Background())
	if err != nil || !strings.HasPrefix(v, "runc 1.") {
		t.Errorf("RuncVersion = %q, %v", v, err)
	}
}
