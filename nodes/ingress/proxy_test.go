package ingress

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"berth.dev/berth/nodes/api"
)

func TestRoutesToBackendsOverHTTP(t *testing.T) {
	p := startProxy(t, Options{})
	api1 := newBackendServer(t, "api")
	web := newBackendServer(t, "web")
	wild := newBackendServer(t, "wild")
	def := newBackendServer(t, "default")
	in := &api.Ingress{
		Rules: []api.IngressRule{
			{Source: "shop/web", Host: "shop.example", Paths: []api.IngressPath{
				{Path: "/", PathType: "Prefix", Backend: api.IngressBackend{Service: "shop/web:80", Endpoints: []netip.AddrPort{web.addr()}}},
				{Path: "/api", PathType: "Prefix", Backend: api.IngressBackend{Service: "shop/api:80", Endpoints: []netip.AddrPort{api1.addr()}}},
			}},
			{Source: "shop/wild", Host: "*.example", Paths: []api.IngressPath{
				{Path: "/", PathType: "Prefix", Backend: api.IngressBackend{Service: "shop/wild:80", Endpoints: []netip.AddrPort{wild.addr()}}},
			}},
		},
		DefaultBackend: &api.IngressBackend{Service: "ns/default:80", Endpoints: []netip.AddrPort{def.addr()}},
	}
	if w := p.Update(in); len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	tests := []struct{ host, path, want string }{
		{"shop.example", "/", "web"},
		{"shop.example", "/api/v1/items?x=1", "api"},
		{"shop.example", "/apis", "web"},
		{"SHOP.example:8080", "/api", "api"},
		{"other.example", "/api", "wild"},
		{"a.b.example", "/", "default"},
		{"unknown.org", "/", "default"},
	}
	for _, tt := range tests {
		res, body := p.get(t, http.MethodGet, tt.host, tt.path, nil)
		if res.StatusCode != 200 || res.Header.Get("X-Backend") != tt.want {
			t.Errorf("%s%s: %d from %q, want 200 from %q (%s)", tt.host, tt.path, res.StatusCode, res.Header.Get("X-Backend"), tt.want, body)
		}
	}
	// The path goes to the endpoint as the client sent it.
	res, _ := p.get(t, http.MethodGet, "shop.example", "/api/a%2Fb/../c?q=%20", nil)
	if got := res.Header.Get("Echo-Uri"); got != "/api/a%2Fb/../c?q=%20" {
		t.Errorf("endpoint got request URI %q", got)
	}
}

func TestForwardedHeaders(t *testing.T) {
	p := startProxy(t, Options{})
	b := newBackendServer(t, "b")
	p.Update(ingressFor("h.example", b.addr()))
	req, _ := http.NewRequest(http.MethodGet, p.httpURL+"/x", nil)
	req.Host = "h.example:8080"
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Real-Ip", "6.6.6.6")
	res, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(p.httpURL, "http://"))
	want := map[string]string{
		"Echo-X-Forwarded-For":   "127.0.0.1",
		"Echo-X-Real-Ip":         "127.0.0.1",
		"Echo-X-Forwarded-Proto": "http",
		"Echo-X-Forwarded-Host":  "h.example:8080",
		"Echo-X-Forwarded-Port":  port,
		"Echo-Host":              "h.example:8080",
	}
	for h, v := range want {
		if got := res.Header.Values(h); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", h, got, v)
		}
	}
}

func TestNotFoundAndNoEndpoints(t *testing.T) {
	p := startProxy(t, Options{})
	p.Update(&api.Ingress{Rules: []api.IngressRule{{
		Source: "ns/ing", Host: "h.example",
		Paths: []api.IngressPath{{Path: "/empty", PathType: "Prefix", Backend: api.IngressBackend{Service: "ns/empty:80"}}},
	}}})
	res, body := p.get(t, http.MethodGet, "h.example", "/other", nil)
	if res.StatusCode != http.StatusNotFound || !strings.Contains(body, "no route") {
		t.Errorf("unrouted path: %d %q, want 404", res.StatusCode, body)
	}
	res, body = p.get(t, http.MethodGet, "h.example", "/empty/x", nil)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no ready endpoint") {
		t.Errorf("backend without endpoints: %d %q, want 503", res.StatusCode, body)
	}
	// Not a forward proxy.
	req, _ := http.NewRequest(http.MethodConnect, p.httpURL, nil)
	req.Host = "h.example:443"
	if res, err := p.client.Do(req); err != nil || res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("CONNECT: %v %v, want 405", res, err)
	} else {
		res.Body.Close()
	}
	// Nothing routed at all.
	p.Update(nil)
	res, _ = p.get(t, http.MethodGet, "h.example", "/empty", nil)
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("after Update(nil): %d, want 404", res.StatusCode)
	}
}

func TestRetryOnRefused(t *testing.T) {
	p := startProxy(t, Options{})
	good := newBackendServer(t, "good")
	refused := []netip.AddrPort{refusedAddr(t), refusedAddr(t)}
	p.Update(ingressFor("h.example", refused[0], good.addr(), refused[1]))
	for i := range 30 {
		method, body := http.MethodGet, ""
		if i%2 == 1 {
			// Nothing of a POST reached the refusing endpoint: it may
			// go to another one, body and all.
			method, body = http.MethodPost, "payload-"+string(rune('a'+i%26))
		}
		res, got := p.get(t, method, "h.example", "/", strings.NewReader(body))
		if res.StatusCode != 200 || got != "good "+body {
			t.Fatalf("request %d (%s): %d %q, want 200 %q", i, method, res.StatusCode, got, "good "+body)
		}
	}
	if n := good.hits.Load(); n != 30 {
		t.Errorf("good endpoint got %d requests, want 30", n)
	}
}

func TestBadGatewayWhenAllAttemptsFail(t *testing.T) {
	p := startProxy(t, Options{MaxAttempts: 2})
	p.Update(ingressFor("h.example", refusedAddr(t), refusedAddr(t)))
	res, body := p.get(t, http.MethodGet, "h.example", "/", nil)
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(body, "502 bad gateway") {
		t.Errorf("all endpoints refusing: %d %q, want 502", res.StatusCode, body)
	}
	// MaxAttempts bounds the endpoints tried: of three that break the
	// connection, two see the request.
	var mu sync.Mutex
	seen := 0
	count := func(string) {
		mu.Lock()
		seen++
		mu.Unlock()
	}
	p.Update(ingressFor("h.example", newHijackingServer(t, count), newHijackingServer(t, count), newHijackingServer(t, count)))
	res, _ = p.get(t, http.MethodGet, "h.example", "/", nil)
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("all endpoints breaking: %d, want 502", res.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen != 2 {
		t.Errorf("%d endpoints saw the request, want MaxAttempts = 2", seen)
	}
}

// TestNoRetryOfSentPost checks that a request with a body that reached an
// endpoint which then broke the connection is not sent again (it may have
// been acted on), while a GET in the same situation is.
func TestNoRetryOfSentPost(t *testing.T) {
	p := startProxy(t, Options{})
	var mu sync.Mutex
	seen := map[string]int{}
	breaker := newHijackingServer(t, func(method string) {
		mu.Lock()
		seen[method]++
		mu.Unlock()
	})
	good := newBackendServer(t, "good")
	p.Update(ingressFor("h.example", breaker, good.addr()))
	posts := 0
	for range 20 {
		res, _ := p.get(t, http.MethodPost, "h.example", "/", strings.NewReader("order"))
		switch res.StatusCode {
		case 200:
		case http.StatusBadGateway:
			posts++
		default:
			t.Fatalf("POST: status %d", res.StatusCode)
		}
	}
	mu.Lock()
	if posts == 0 || seen["POST"] != posts {
		t.Errorf("%d POSTs failed with 502 and the breaking endpoint saw %d: want the same, not zero", posts, seen["POST"])
	}
	mu.Unlock()
	for i := range 20 {
		if res, _ := p.get(t, http.MethodGet, "h.example", "/", nil); res.StatusCode != 200 {
			t.Fatalf("GET %d: %d, want 200 (retried on the good endpoint)", i, res.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["GET"] == 0 {
		t.Errorf("no GET reached the breaking endpoint: the retry was not exercised")
	}
}

// newHijackingServer reads each request, reports its method, and closes
// the connection without answering.
func newHijackingServer(t *testing.T, saw func(method string)) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				saw(req.Method)
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0) // a reset, not a clean close
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func TestBalancesOverEndpoints(t *testing.T) {
	p := startProxy(t, Options{})
	bs := []*testBackendServer{newBackendServer(t, "a"), newBackendServer(t, "b"), newBackendServer(t, "c")}
	p.Update(ingressFor("h.example", bs[0].addr(), bs[1].addr(), bs[2].addr()))
	const n = 300
	for range n {
		if res, _ := p.get(t, http.MethodGet, "h.example", "/", nil); res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	for _, b := range bs {
		// Sequential requests all tie on in-flight counts: the choice
		// is uniform, so each gets about n/3.
		if h := b.hits.Load(); h < n/3/2 {
			t.Errorf("endpoint %s got %d of %d requests", b.name, h, n)
		}
	}
}

func TestUpgradePassesThrough(t *testing.T) {
	p := startProxy(t, Options{})
	echo := httptestUpgradeEcho(t)
	p.Update(ingressFor("ws.example", echo))
	c, err := net.Dial("tcp", strings.TrimPrefix(p.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Upgrade") != "echo" {
		t.Fatalf("upgrade answered %d, Upgrade %q", res.StatusCode, res.Header.Get("Upgrade"))
	}
	for _, msg := range []string{"hello\n", "again\n"} {
		io.WriteString(c, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
}

// httptestUpgradeEcho answers "Upgrade: echo" with 101 and echoes bytes.
func httptestUpgradeEcho(t *testing.T) netip.AddrPort {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// serveSlow serves a Proxy whose only backend answers once release is
// closed; started is closed when the backend has a request.
func serveSlow(t *testing.T, release <-chan struct{}) (p *Proxy, ln net.Listener, started <-chan struct{}, served <-chan error) {
	p, err := New(Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	st := make(chan struct{})
	p.Update(ingressFor("", newSlowBackend(t, st, release)))
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sv := make(chan error, 1)
	go func() { sv <- p.Serve(context.Background(), []net.Listener{ln}, nil) }()
	return p, ln, st, sv
}

func TestShutdownDrainsRequestsInFlight(t *testing.T) {
	release := make(chan struct{})
	p, ln, started, served := serveSlow(t, release)

	type result struct {
		status int
		body   string
		err    error
	}
	got := make(chan result, 1)
	go func() {
		res, err := http.Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		got <- result{res.StatusCode, string(b), err}
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(context.Background()) }()
	// The listener closes at once; the request in flight goes on.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still open after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	r := <-got
	if r.err != nil || r.status != 200 || r.body != "done" {
		t.Errorf("request in flight: %d %q %v, want 200 done", r.status, r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestShutdownCutShortByContext(t *testing.T) {
	p, ln, started, served := serveSlow(t, make(chan struct{}))
	go func() {
		if res, err := http.Get("http://" + ln.Addr().String() + "/slow"); err == nil {
			res.Body.Close()
		}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Errorf("Shutdown with a stuck request: %v, want deadline exceeded", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// newSlowBackend answers "done" once release is closed (or the request is
// cancelled), after signalling started.
func newSlowBackend(t *testing.T, started chan<- struct{}, release <-chan struct{}) netip.AddrPort {
	var once sync.Once
	b := newBackendServerWith(t, "slow", func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			once.Do(func() { close(started) })
			select {
			case <-release:
				io.WriteString(w, "done")
			case <-r.Context().Done():
			}
		})
	})
	return b.addr()
}

func TestServeTwiceRefused(t *testing.T) {
	p := startProxy(t, Options{})
	for serving := false; !serving; {
		p.runMu.Lock()
		serving = p.run != nil
		p.runMu.Unlock()
		time.Sleep(time.Millisecond)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := p.Serve(context.Background(), []net.Listener{ln}, nil); err != ErrServing {
		t.Errorf("second Serve: %v, want ErrServing", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{
		{Addrs: []netip.Addr{{}}},
		{DialTimeout: -1},
		{MaxAttempts: -1},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// TestUpdateKeepsRequestsInFlight removes the endpoint of a request in
// flight: the request still finishes there, and new ones go to the new
// endpoint.
func TestUpdateKeepsRequestsInFlight(t *testing.T) {
	p := startProxy(t, Options{})
	release, started := make(chan struct{}), make(chan struct{})
	slow := newSlowBackend(t, started, release)
	next := newBackendServer(t, "next")
	p.Update(ingressFor("h.example", slow))
	type result struct {
		code int
		body string
	}
	got := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, p.httpURL+"/", nil)
		req.Host = "h.example"
		res, err := p.client.Do(req)
		if err != nil {
			got <- result{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- result{res.StatusCode, string(b)}
	}()
	<-started
	p.Update(ingressFor("h.example", next.addr()))
	if res, body := p.get(t, http.MethodGet, "h.example", "/", nil); res.StatusCode != 200 || body != "next " {
		t.Errorf("new request after Update: %d %q, want the new endpoint", res.StatusCode, body)
	}
	close(release)
	if r := <-got; r.code != 200 || r.body != "done" {
		t.Errorf("request in flight across the Update: %d %q, want 200 done", r.code, r.body)
	}
}
