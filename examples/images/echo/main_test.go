package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

// newTestServer serves s.handler() with a clock the test moves.
func newTestServer(t *testing.T, cfg config, environ []string) (*server, *httptest.Server, *time.Time) {
	t.Helper()
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newServer(cfg, func() []string { return environ }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.started = now
	s.now = func() time.Time { return now }
	ts := httptest.NewServer(s.handler())
	t.Cleanup(ts.Close)
	return s, ts, &now
}

func do(t *testing.T, method, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want config
	}{
		{"defaults", nil, nil, config{listen: ":8080", filesUnder: "/", version: "dev", pod: "p"}},
		{"port env", nil, map[string]string{"PORT": "9000"}, config{listen: ":9000", filesUnder: "/", version: "dev", pod: "p"}},
		{"flags win over env", []string{"--listen", "127.0.0.1:1", "--drain", "3s", "--ready-after=1s", "--grpc-health-port", "9"},
			map[string]string{"PORT": "9000", "ECHO_DRAIN": "1s", "ECHO_READY_AFTER": "5s"},
			config{listen: "127.0.0.1:1", grpcPort: 9, readyAfter: time.Second, drain: 3 * time.Second, filesUnder: "/", version: "dev", pod: "p"}},
		{"env", nil, map[string]string{"ECHO_LISTEN": "[::1]:80", "ECHO_DRAIN": "2s", "ECHO_READY_AFTER": "5s", "ECHO_VERSION": "7", "ECHO_FILES_UNDER": "/etc/echo", "ECHO_GRPC_HEALTH_PORT": "81"},
			config{listen: "[::1]:80", grpcPort: 81, readyAfter: 5 * time.Second, drain: 2 * time.Second, filesUnder: "/etc/echo", version: "7", pod: "p"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{"POD_NAME": "p"}
			for k, v := range tt.env {
				e[k] = v
			}
			got, err := parseConfig(tt.args, env(e), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	for _, bad := range [][]string{{"--drain", "x"}, {"extra"}, {"--grpc-health-port", "70000"}, {"--files-under", "etc"}} {
		if _, err := parseConfig(bad, env(nil), io.Discard); err == nil {
			t.Errorf("parseConfig(%q) succeeded", bad)
		}
	}
	if _, err := parseConfig(nil, env(map[string]string{"ECHO_DRAIN": "soon"}), io.Discard); err == nil {
		t.Error("bad $ECHO_DRAIN accepted")
	}
}

func TestRoot(t *testing.T) {
	_, ts, _ := newTestServer(t, config{version: "2", pod: "web-0"}, nil)
	if code, body := do(t, "GET", ts.URL+"/"); code != 200 || body != "version=2 pod=web-0\n" {
		t.Errorf("GET / = %d %q", code, body)
	}
	for _, c := range []struct{ url, accept string }{{"/?format=json", ""}, {"/", "application/json"}} {
		code, body := do(t, "GET", ts.URL+c.url, "Accept", c.accept)
		var id identity
		if err := json.Unmarshal([]byte(body), &id); err != nil || code != 200 {
			t.Fatalf("GET %s (Accept %q) = %d %q: %v", c.url, c.accept, code, body, err)
		}
		if id.Version != "2" || id.Pod != "web-0" || id.Remote == "" {
			t.Errorf("GET %s = %+v", c.url, id)
		}
	}
	if code, _ := do(t, "GET", ts.URL+"/nope"); code != 404 {
		t.Errorf("GET /nope = %d, want 404", code)
	}
	if code, _ := do(t, "GET", ts.URL+"/healthz/fail"); code != 405 {
		t.Errorf("GET /healthz/fail = %d, want 405", code)
	}
}

func TestProbesFlip(t *testing.T) {
	s, ts, now := newTestServer(t, config{readyAfter: 2 * time.Second}, nil)
	expect := func(path string, want int) {
		t.Helper()
		if code, _ := do(t, "GET", ts.URL+path); code != want {
			t.Errorf("GET %s = %d, want %d", path, code, want)
		}
	}
	expect("/healthz", 200)
	expect("/readyz", 503) // --ready-after not reached
	*now = now.Add(2 * time.Second)
	expect("/readyz", 200)

	do(t, "POST", ts.URL+"/readyz/fail")
	expect("/readyz", 503)
	expect("/healthz", 200)
	do(t, "POST", ts.URL+"/readyz/ok")
	expect("/readyz", 200)

	do(t, "POST", ts.URL+"/healthz/fail")
	expect("/healthz", 503)
	expect("/readyz", 200)
	do(t, "POST", ts.URL+"/healthz/ok")
	expect("/healthz", 200)

	s.terminating.Store(true)
	expect("/readyz", 503)
	expect("/healthz", 200)
}

func TestEnv(t *testing.T) {
	_, ts, _ := newTestServer(t, config{}, []string{"B=2", "A=1=x", "EMPTY="})
	code, body := do(t, "GET", ts.URL+"/env")
	want := "{\n  \"A\": \"1=x\",\n  \"B\": \"2\",\n  \"EMPTY\": \"\"\n}\n"
	if code != 200 || body != want {
		t.Errorf("GET /env = %d %q, want %q", code, body, want)
	}
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, maxFile+1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, ts, _ := newTestServer(t, config{filesUnder: dir}, nil)
	tests := []struct {
		path string
		code int
		body string
	}{
		{dir + "/x", 200, "hello\n"},
		{dir + "/missing", 404, ""},
		{dir + "/../x", 400, ""},
		{"x", 400, ""},
		{"/etc/hostname", 403, ""},
		{dir + "/big", 413, ""},
	}
	for _, tt := range tests {
		code, body := do(t, "GET", ts.URL+"/file?path="+tt.path)
		if code != tt.code || (tt.body != "" && body != tt.body) {
			t.Errorf("GET /file?path=%s = %d %q, want %d %q", tt.path, code, body, tt.code, tt.body)
		}
	}
}

func TestSleep(t *testing.T) {
	_, ts, _ := newTestServer(t, config{version: "1"}, nil)
	if code, body := do(t, "GET", ts.URL+"/sleep?d=1ms"); code != 200 || !strings.HasPrefix(body, "version=1") {
		t.Errorf("GET /sleep = %d %q", code, body)
	}
	if code, _ := do(t, "GET", ts.URL+"/sleep?d=1h"); code != 400 {
		t.Errorf("GET /sleep?d=1h = %d, want 400", code)
	}
}

func TestExitAndCrashRequests(t *testing.T) {
	s, ts, _ := newTestServer(t, config{}, nil)
	if code, _ := do(t, "POST", ts.URL+"/exit?code=256"); code != 400 {
		t.Errorf("POST /exit?code=256 = %d, want 400", code)
	}
	if code, body := do(t, "POST", ts.URL+"/exit?code=3"); code != 200 || body != "exiting 3\n" {
		t.Errorf("POST /exit?code=3 = %d %q", code, body)
	}
	if got := <-s.exit; got != (exitRequest{code: 3}) {
		t.Errorf("exit request %+v", got)
	}
	do(t, "POST", ts.URL+"/crash")
	if got := <-s.exit; got != (exitRequest{code: 2, crash: true}) {
		t.Errorf("crash request %+v", got)
	}
}

// process runs run() as main would, on a free loopback port.
type process struct {
	addr, grpcAddr string
	sigs           chan os.Signal
	code           chan int
	stderr         chan string // lifecycle lines after "serving"
}

var addrRE = regexp.MustCompile(`addr=(\S+)`)

func start(t *testing.T, args ...string) *process {
	t.Helper()
	pr, pw := io.Pipe()
	p := &process{sigs: make(chan os.Signal, 1), code: make(chan int, 1), stderr: make(chan string, 100)}
	args = append([]string{"--listen", "127.0.0.1:0"}, args...)
	go func() {
		p.code <- run(args, env(map[string]string{"POD_NAME": "p"}), os.Environ, p.sigs, io.Discard, pw)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	want := 1
	if strings.Contains(strings.Join(args, " "), "grpc") {
		want = 2
	}
	for got := 0; got < want; {
		if !sc.Scan() {
			t.Fatalf("echo ended before serving: %v", <-p.code)
		}
		m := addrRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if strings.Contains(sc.Text(), "grpc") {
			p.grpcAddr = m[1]
		} else {
			p.addr = m[1]
		}
		got++
	}
	go func() {
		for sc.Scan() {
			p.stderr <- sc.Text()
		}
		close(p.stderr)
	}()
	t.Cleanup(func() {
		select {
		case p.sigs <- syscall.SIGTERM:
		default:
		}
	})
	return p
}

func (p *process) wait(t *testing.T) int {
	t.Helper()
	select {
	case c := <-p.code:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("echo did not exit")
		return -1
	}
}

func TestSIGTERMDrains(t *testing.T) {
	p := start(t, "--drain", "300ms")
	base := "http://" + p.addr
	if code, _ := do(t, "GET", base+"/readyz"); code != 200 {
		t.Fatalf("readyz = %d before SIGTERM", code)
	}
	// A request in flight when the drain ends still gets its answer.
	inflight := make(chan string, 1)
	go func() {
		resp, err := http.Get(base + "/sleep?d=500ms")
		if err != nil {
			inflight <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- string(b)
	}()
	time.Sleep(50 * time.Millisecond)
	begin := time.Now()
	p.sigs <- syscall.SIGTERM
	time.Sleep(50 * time.Millisecond)
	// Draining: still serving, no longer ready.
	if code, _ := do(t, "GET", base+"/readyz"); code != 503 {
		t.Errorf("readyz = %d while draining, want 503", code)
	}
	if code, _ := do(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("healthz = %d while draining, want 200", code)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if d := time.Since(begin); d < 300*time.Millisecond {
		t.Errorf("exited %v after SIGTERM, before the 300ms drain", d)
	}
	if got := <-inflight; !strings.HasPrefix(got, "version=") {
		t.Errorf("request in flight got %q", got)
	}
	if _, err := http.Get(base + "/"); err == nil {
		t.Error("still accepting after exit")
	}
	var lines []string
	for l := range p.stderr {
		lines = append(lines, l)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "msg=terminating signal=terminated") {
		t.Errorf("lifecycle lines %q lack the termination", lines)
	}
}

func TestExitRequestEndsProcess(t *testing.T) {
	p := start(t)
	if code, body := do(t, "POST", "http://"+p.addr+"/exit?code=7"); code != 200 || body != "exiting 7\n" {
		t.Errorf("POST /exit = %d %q", code, body)
	}
	if code := p.wait(t); code != 7 {
		t.Errorf("exit code %d, want 7", code)
	}
}

func TestCrashRequestDumpsStack(t *testing.T) {
	p := start(t)
	if code, body := do(t, "POST", "http://"+p.addr+"/crash"); code != 200 || body != "crashing\n" {
		t.Errorf("POST /crash = %d %q", code, body)
	}
	if code := p.wait(t); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	var out strings.Builder
	for l := range p.stderr {
		out.WriteString(l + "\n")
	}
	if !strings.Contains(out.String(), "panic: crash requested") || !strings.Contains(out.String(), "goroutine ") {
		t.Errorf("stderr after crash:\n%s", out.String())
	}
}

// TestGRPCHealth checks the hand-written health service against grpc-go's
// client, which is what gRPC probes use.
func TestGRPCHealth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	p := start(t, "--grpc-health-port", port)
	if p.grpcAddr == "" {
		t.Fatal("no grpc address logged")
	}
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	check := func(service string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		if resp.Status != want {
			t.Errorf("Check(%q) = %v, want %v", service, resp.Status, want)
		}
	}
	check("", healthpb.HealthCheckResponse_SERVING)
	check("readiness", healthpb.HealthCheckResponse_SERVING)
	do(t, "POST", "http://"+p.addr+"/healthz/fail")
	check("", healthpb.HealthCheckResponse_NOT_SERVING)
	check("readiness", healthpb.HealthCheckResponse_SERVING)
	do(t, "POST", "http://"+p.addr+"/readyz/fail")
	check("readiness", healthpb.HealthCheckResponse_NOT_SERVING)

	// Watch is not served, and says so the gRPC way.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if err == nil || !strings.Contains(err.Error(), "Unimplemented") {
		t.Errorf("Watch: %v, want Unimplemented", err)
	}
}

func TestReadHealthRequest(t *testing.T) {
	tests := []struct {
		in      []byte
		want    string
		wantErr bool
	}{
		{[]byte{0, 0, 0, 0, 0}, "", false},
		{[]byte{0, 0, 0, 0, 3, 0x0a, 1, 'x'}, "x", false},
		{[]byte{0, 0, 0, 0, 5, 0x10, 1, 0x0a, 1, 'y'}, "y", false}, // unknown varint field skipped
		{[]byte{1, 0, 0, 0, 0}, "", true},
		{[]byte{0, 0, 0, 0, 3, 0x0a, 5, 'x'}, "", true},
		{[]byte{0, 0xff, 0, 0, 0}, "", true},
		{[]byte{0, 0}, "", true},
	}
	for _, tt := range tests {
		got, err := readHealthRequest(strings.NewReader(string(tt.in)))
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("readHealthRequest(%v) = %q, %v", tt.in, got, err)
		}
	}
}
