// Package probe runs the kubelet's probe and lifecycle handlers against a
// pod: httpGet, tcpSocket and grpc dialled inside the pod's network
// namespace, and exec through the container runtime. It judges one
// attempt; thresholds, periods and what a failure leads to are the pod
// manager's.
package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// UserAgent is sent by httpGet probes and hooks, as kubelet's "kube-probe/1.x".
const UserAgent = "berth-probe/1"

// maxBody bounds what is read of an HTTP answer (for the message).
const maxBody = 10 << 10

// ExecFunc runs cmd in the container and returns its exit code and
// (bounded) output.
type ExecFunc func(ctx context.Context, cmd []string, timeout time.Duration) (exitCode int, output []byte, err error)

// Target is what a handler is run against.
type Target struct {
	// NetNS is the pod's network namespace path; "" dials from the host
	// (hostNetwork pods).
	NetNS string
	// Host is the default host of httpGet, tcpSocket and grpc (the pod's
	// address; 127.0.0.1 inside the pod's namespace for now).
	Host string
	// Ports are the container's ports, for ports given by name.
	Ports []corev1.ContainerPort
	// Exec runs exec handlers.
	Exec ExecFunc
}

// Run runs h once with timeout and reports whether it succeeded, with a
// message saying why not (or the handler's output).
func Run(ctx context.Context, h *corev1.ProbeHandler, t Target, timeout time.Duration) (bool, string) {
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case h.Exec != nil:
		return runExec(ctx, h.Exec.Command, t, timeout)
	case h.HTTPGet != nil:
		return runHTTP(ctx, h.HTTPGet, t)
	case h.TCPSocket != nil:
		return runTCP(ctx, h.TCPSocket, t)
	case h.GRPC != nil:
		return runGRPC(ctx, h.GRPC, t, timeout)
	}
	return false, "probe has no handler"
}

// RunLifecycle runs a lifecycle hook (preStop): exec, httpGet or sleep.
// sleep waits on ctx.
func RunLifecycle(ctx context.Context, h *corev1.LifecycleHandler, t Target, timeout time.Duration) (bool, string) {
	switch {
	case h.Sleep != nil:
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
			return true, ""
		case <-ctx.Done():
			return false, "sleep interrupted: " + ctx.Err().Error()
		}
	case h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil:
		return Run(ctx, &corev1.ProbeHandler{Exec: h.Exec, HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket}, t, timeout)
	}
	return false, "hook has no handler"
}

func runExec(ctx context.Context, cmd []string, t Target, timeout time.Duration) (bool, string) {
	if t.Exec == nil {
		return false, "exec is not available"
	}
	code, out, err := t.Exec(ctx, cmd, timeout)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return false, fmt.Sprintf("command %q timed out", strings.Join(cmd, " "))
		}
		return false, err.Error()
	}
	if code != 0 {
		msg := fmt.Sprintf("command %q exited with %d", strings.Join(cmd, " "), code)
		if s := strings.TrimSpace(string(out)); s != "" {
			msg += ": " + s
		}
		return false, msg
	}
	return true, strings.TrimSpace(string(out))
}

// ResolvePort turns a port number or name into a number.
func ResolvePort(p intstr.IntOrString, ports []corev1.ContainerPort) (int, error) {
	if p.Type == intstr.Int {
		if n := p.IntValue(); n > 0 && n < 65536 {
			return n, nil
		}
		return 0, fmt.Errorf("invalid port %d", p.IntValue())
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil && n > 0 && n < 65536 {
		return n, nil
	}
	for _, cp := range ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("no port named %q", p.StrVal)
}

func hostOr(h string, t Target) string {
	if h != "" {
		return h
	}
	if t.Host != "" {
		return t.Host
	}
	return "127.0.0.1"
}

func runHTTP(ctx context.Context, g *corev1.HTTPGetAction, t Target) (bool, string) {
	port, err := ResolvePort(g.Port, t.Ports)
	if err != nil {
		return false, err.Error()
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	p := g.Path
	if p != "" && !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	u, err := url.Parse(p)
	if err != nil {
		return false, fmt.Sprintf("invalid path %q: %v", g.Path, err)
	}
	u.Scheme = scheme
	u.Host = net.JoinHostPort(hostOr(g.Host, t), strconv.Itoa(port))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	tr := &http.Transport{
		DialContext:       DialContext(t.NetNS),
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as the kubelet: probes do not verify
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// Follow redirects on the same host only; a redirect elsewhere
		// counts as success (the kubelet's followNonLocalRedirects=false).
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if r.URL.Hostname() != via[0].URL.Hostname() {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Sprintf("Get %q: %v", u.String(), unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return true, ""
	}
	msg := fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	if s := strings.TrimSpace(string(body)); s != "" {
		msg += ": " + s
	}
	return false, msg
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func runTCP(ctx context.Context, s *corev1.TCPSocketAction, t Target) (bool, string) {
	port, err := ResolvePort(s.Port, t.Ports)
	if err != nil {
		return false, err.Error()
	}
	addr := net.JoinHostPort(hostOr(s.Host, t), strconv.Itoa(port))
	conn, err := DialContext(t.NetNS)(ctx, "tcp", addr)
	if err != nil {
		return false, err.Error()
	}
	conn.Close()
	return true, ""
}

func runGRPC(ctx context.Context, g *corev1.GRPCAction, t Target, timeout time.Duration) (bool, string) {
	addr := net.JoinHostPort(hostOr("", t), strconv.Itoa(int(g.Port)))
	dial := DialContext(t.NetNS)
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dial(ctx, "tcp", a) }),
		grpc.WithUserAgent(UserAgent),
	)
	if err != nil {
		return false, fmt.Sprintf("connect to %s: %v", addr, err)
	}
	defer conn.Close()
	var service string
	if g.Service != nil {
		service = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		st, _ := status.FromError(err)
		switch st.Code() {
		case codes.Unimplemented:
			return false, fmt.Sprintf("this server does not implement the grpc health protocol (grpc.health.v1.Health): %s", st.Message())
		case codes.DeadlineExceeded:
			return false, fmt.Sprintf("timeout: health rpc did not complete within %v", timeout)
		}
		return false, fmt.Sprintf("error: health rpc probe failed: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return false, fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus().String())
	}
	return true, ""
}
