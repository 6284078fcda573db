package network

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/nodes/api"
)

// freePort is a TCP port nothing listens on at the moment on loopback.
func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func TestIngressApply(t *testing.T) {
	backend := func(body string) netip.AddrPort {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
		t.Cleanup(srv.Close)
		return netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	}
	one, two := backend("one"), backend("two")
	httpPort, httpsPort := freePort(t), freePort(t)
	loop := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	network := func(ep netip.AddrPort) api.Network {
		return api.Network{NodeIPs: loop, Ingress: &api.Ingress{HTTPPort: httpPort, HTTPSPort: httpsPort, Rules: []api.IngressRule{{
			Source: "default/web", Host: "web.example.test",
			Paths: []api.IngressPath{{Path: "/", PathType: "Prefix", Backend: api.IngressBackend{Service: "default/web:80", Endpoints: []netip.AddrPort{ep}}}},
		}}}}
	}
	get := func() (string, error) {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(int(httpPort))+"/", nil)
		req.Host = "web.example.test"
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}

	ing := NewIngress(nil)
	t.Cleanup(func() { ing.Close() })
	ctx := context.Background()
	if err := ing.Apply(ctx, network(one)); err != nil {
		t.Fatal(err)
	}
	if body, err := get(); err != nil || body != "one" {
		t.Fatalf("through the ingress: %q %v", body, err)
	}
	// Another endpoint: swapped in, same listeners.
	if err := ing.Apply(ctx, network(two)); err != nil {
		t.Fatal(err)
	}
	if body, err := get(); err != nil || body != "two" {
		t.Errorf("after the update: %q %v", body, err)
	}
	// No longer an ingress machine: nothing listens.
	if err := ing.Apply(ctx, api.Network{NodeIPs: loop}); err != nil {
		t.Fatal(err)
	}
	if body, err := get(); err == nil {
		t.Errorf("the proxy still answers %q after the Ingress left", body)
	}
	// A port someone else holds is this Apply's error.
	taken, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(int(httpPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := ing.Apply(ctx, network(one)); err == nil || !strings.Contains(err.Error(), "ingress") {
		t.Errorf("apply on a taken port: %v", err)
	}
	taken.Close()
	if err := ing.Apply(ctx, network(one)); err != nil {
		t.Errorf("apply once the port is free: %v", err)
	}
	if body, err := get(); err != nil || body != "one" {
		t.Errorf("after the port was freed: %q %v", body, err)
	}
}
