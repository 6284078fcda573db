package probe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/internal/testenv"
)

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(addr)
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestHTTPGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			if r.Header.Get("X-Probe") != "yes" || r.Host != "example.test" || !strings.HasPrefix(r.UserAgent(), "berth-probe/") {
				http.Error(w, "bad headers", 400)
				return
			}
		case "/redirect":
			http.Redirect(w, r, "/ok", http.StatusFound)
			return
		case "/away":
			http.Redirect(w, r, "http://192.0.2.1/", http.StatusFound)
			return
		case "/fail":
			http.Error(w, "not ready", 503)
			return
		}
		w.WriteHeader(200)
	}))
	defer srv.Close()
	port := portOf(t, srv.Listener.Addr().String())
	tg := Target{Host: "127.0.0.1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}
	headers := []corev1.HTTPHeader{{Name: "X-Probe", Value: "yes"}, {Name: "Host", Value: "example.test"}}
	for _, tc := range []struct {
		path    string
		port    intstr.IntOrString
		headers []corev1.HTTPHeader
		ok      bool
		msg     string
	}{
		{"/ok", intstr.FromInt(port), headers, true, ""},
		{"/ok", intstr.FromString("http"), headers, true, ""},
		{"ok", intstr.FromString("http"), headers, true, ""},
		{"/fail", intstr.FromInt(port), nil, false, "HTTP probe failed with statuscode: 503: not ready"},
		{"/redirect", intstr.FromInt(port), headers, true, ""},
		{"/away", intstr.FromInt(port), nil, true, ""},
		{"/ok", intstr.FromString("nope"), nil, false, `no port named "nope"`},
	} {
		ok, msg := Run(context.Background(), &corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: tc.path, Port: tc.port, HTTPHeaders: tc.headers}}, tg, time.Second)
		if ok != tc.ok || !strings.Contains(msg, tc.msg) {
			t.Errorf("GET %s port %s = %v %q; want %v %q", tc.path, tc.port.String(), ok, msg, tc.ok, tc.msg)
		}
	}

	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tls.Close()
	ok, msg := Run(context.Background(), &corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Scheme: corev1.URISchemeHTTPS, Port: intstr.FromInt(portOf(t, tls.Listener.Addr().String()))}}, tg, time.Second)
	if !ok {
		t.Errorf("HTTPS with a self-signed certificate: %q; want success (probes do not verify)", msg)
	}

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	defer slow.Close()
	t0 := time.Now()
	ok, _ = Run(context.Background(), &corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt(portOf(t, slow.Listener.Addr().String()))}}, tg, 200*time.Millisecond)
	if ok || time.Since(t0) > time.Second {
		t.Errorf("slow server: ok=%v after %v; want a failure at the timeout", ok, time.Since(t0))
	}
}

func TestTCPSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := portOf(t, ln.Addr().String())
	h := &corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(port)}}
	if ok, msg := Run(context.Background(), h, Target{}, time.Second); !ok {
		t.Errorf("open port: %q", msg)
	}
	ln.Close()
	if ok, msg := Run(context.Background(), h, Target{}, time.Second); ok || !strings.Contains(msg, "refused") {
		t.Errorf("closed port: %v %q; want connection refused", ok, msg)
	}
}

func TestGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("readiness", healthpb.HealthCheckResponse_NOT_SERVING)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()
	port := int32(portOf(t, ln.Addr().String()))
	if ok, msg := Run(context.Background(), &corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: port}}, Target{}, time.Second); !ok {
		t.Errorf("serving: %q", msg)
	}
	ok, msg := Run(context.Background(), &corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: port, Service: ptr("readiness")}}, Target{}, time.Second)
	if ok || msg != `service unhealthy (responded with "NOT_SERVING")` {
		t.Errorf("not serving: %v %q", ok, msg)
	}
}

func TestExec(t *testing.T) {
	tg := Target{Exec: func(ctx context.Context, cmd []string, timeout time.Duration) (int, []byte, error) {
		if cmd[0] == "slow" {
			<-ctx.Done()
			return 0, nil, ctx.Err()
		}
		return len(cmd) - 1, []byte("out\n"), nil
	}}
	if ok, msg := Run(context.Background(), &corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, tg, time.Second); !ok || msg != "out" {
		t.Errorf("exit 0: %v %q", ok, msg)
	}
	if ok, msg := Run(context.Background(), &corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"x", "y"}}}, tg, time.Second); ok || msg != `command "x y" exited with 1: out` {
		t.Errorf("exit 1: %v %q", ok, msg)
	}
	if ok, msg := Run(context.Background(), &corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"slow"}}}, tg, 50*time.Millisecond); ok || !strings.Contains(msg, "timed out") {
		t.Errorf("timeout: %v %q", ok, msg)
	}
}

func ptr[T any](v T) *T { return &v }

// newNetNS makes a network namespace bind-mounted at a file, with
// loopback up, as a pod sandbox has, and a listener inside it.
func newNetNS(t *testing.T) (path string, ln net.Listener) {
	t.Helper()
	testenv.RequireRoot(t)
	path = filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies in the new namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
			errc <- err
			return
		}
		// Loopback up, through an ioctl on a socket of this namespace.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		ifr, _ := unix.NewIfreq("lo")
		ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			errc <- err
			return
		}
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("make a network namespace: %v", err)
	}
	t.Cleanup(func() {
		ln.Close()
		unix.Unmount(path, unix.MNT_DETACH)
	})
	return path, ln
}

func TestDialsInsideTheNamespace(t *testing.T) {
	path, ln := newNetNS(t)
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	port := portOf(t, ln.Addr().String())
	h := &corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt(port)}}
	if ok, msg := Run(context.Background(), h, Target{NetNS: path}, time.Second); !ok {
		t.Errorf("inside the namespace: %q", msg)
	}
	// The same address from the host reaches nothing (the port is the
	// namespace's, not the host's).
	if ok, _ := Run(context.Background(), h, Target{}, time.Second); ok {
		t.Errorf("port %d answered on the host too: the probe did not tell the namespaces apart", port)
	}
	tcp := &corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(port)}}
	if ok, msg := Run(context.Background(), tcp, Target{NetNS: path}, time.Second); !ok {
		t.Errorf("tcp inside the namespace: %q", msg)
	}
	// The dialing thread went back: the test's own network still works.
	host, _ := net.Listen("tcp", "127.0.0.1:0")
	defer host.Close()
	for range 20 {
		c, err := net.Dial("tcp", host.Addr().String())
		if err != nil {
			t.Fatalf("dial on the host after namespace dials: %v", err)
		}
		c.Close()
	}
}
