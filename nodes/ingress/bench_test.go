package ingress

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"testing"

	"berth.dev/berth/nodes/api"
)

// largeIngress is n hosts with five paths each, a tenth of them wildcard
// hosts, and hostless rules.
func largeIngress(n int, eps []netip.AddrPort) *api.Ingress {
	in := &api.Ingress{}
	for i := range n {
		host := fmt.Sprintf("app%d.example.com", i)
		if i%10 == 0 {
			host = fmt.Sprintf("*.team%d.example.com", i)
		}
		r := api.IngressRule{Source: fmt.Sprintf("ns%d/ing%d", i%50, i), Host: host}
		for j, p := range []string{"/", "/api", "/api/v1", "/static", "/api/v1/users"} {
			pt := "Prefix"
			if j == 4 {
				pt = "Exact"
			}
			r.Paths = append(r.Paths, api.IngressPath{Path: p, PathType: pt, Backend: api.IngressBackend{
				Service: fmt.Sprintf("ns/svc%d-%d:80", i, j), Endpoints: eps}})
		}
		in.Rules = append(in.Rules, r)
	}
	in.Rules = append(in.Rules, api.IngressRule{Source: "ns/any", Paths: []api.IngressPath{
		{Path: "/", PathType: "Prefix", Backend: api.IngressBackend{Service: "ns/any:80", Endpoints: eps}}}})
	return in
}

// BenchmarkRoute is the routing decision alone, in a table of 10,000
// hosts.
func BenchmarkRoute(b *testing.B) {
	rt, _ := compileRoutes(largeIngress(10000, nil), testBackend)
	reqs := []struct{ host, path string }{
		{"app1234.example.com", "/api/v1/users/42/orders"},
		{"x.team5000.example.com", "/static/css/site.css"},
		{"unknown.org", "/some/where"},
		{"App77.Example.com:443", "/api/v1/users"},
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := reqs[i%len(reqs)]
		if rt.match(requestHost(r.host), r.path) == nil {
			b.Fatal("no match")
		}
	}
}

// BenchmarkUpdate compiles a table of 1,000 hosts (5,000 paths) as
// Update does.
func BenchmarkUpdate(b *testing.B) {
	p, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	eps := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:80")}
	in := largeIngress(1000, eps)
	b.ReportAllocs()
	for b.Loop() {
		p.Update(in)
	}
}

// BenchmarkProxy sends requests through the proxy to two endpoints on
// loopback, over kept-alive connections from parallel clients: routing,
// balancing and proxying together. Compare with BenchmarkDirect, the same
// requests straight to an endpoint.
func BenchmarkProxy(b *testing.B) {
	p := startProxy(b, Options{Logger: slog.New(slog.DiscardHandler)})
	b1, b2 := newBackendServer(b, "b1"), newBackendServer(b, "b2")
	in := largeIngress(1000, []netip.AddrPort{b1.addr(), b2.addr()})
	p.Update(in)
	benchGet(b, p.client, p.httpURL+"/api/v1/users/1", "app500.example.com")
}

func BenchmarkDirect(b *testing.B) {
	b1 := newBackendServer(b, "b1")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	benchGet(b, client, b1.URL+"/api/v1/users/1", "app500.example.com")
}

func benchGet(b *testing.B, client *http.Client, url, host string) {
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Host = host
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
