package dns

import (
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// largeInput is a cluster of n Services with 10 ready endpoints each, every
// tenth one headless with StatefulSet pod names.
func largeInput(n int) Input {
	in := Input{ReverseZones: []netip.Prefix{cidr("10.96.0.0/12"), cidr("10.128.0.0/9")}}
	for i := range n {
		s := Service{
			Namespace:  fmt.Sprintf("ns%d", i%100),
			Name:       fmt.Sprintf("svc%d", i),
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})},
			Ports:      []ServicePort{{Name: "http", Port: 80, TargetPort: 8080}, {Name: "metrics", Port: 9090}},
		}
		if i%10 == 0 {
			s.ClusterIPs, s.Headless = nil, true
		}
		for e := range 10 {
			k := i*10 + e
			ep := Endpoint{IP: netip.AddrFrom4([4]byte{10, 128 + byte(k>>16), byte(k >> 8), byte(k)})}
			if s.Headless {
				ep.Hostname, ep.Subdomain = fmt.Sprintf("%s-%d", s.Name, e), s.Name
			}
			s.Endpoints = append(s.Endpoints, ep)
			in.Pods = append(in.Pods, Pod{Namespace: s.Namespace, IPs: []netip.Addr{ep.IP}})
		}
		in.Services = append(in.Services, s)
	}
	return in
}

func BenchmarkViewLookup(b *testing.B) {
	const n = 10000
	v := mustView(b, largeInput(n))
	names := func(f func(i int) string) []string {
		out := make([]string, 1024)
		for i := range out {
			out[i] = f((i*7919 + 1) % n)
		}
		return out
	}
	for _, bc := range []struct {
		name  string
		qtype uint16
		names []string
	}{
		{"A", dns.TypeA, names(func(i int) string { return fmt.Sprintf("svc%d.ns%d.svc.cluster.local.", i, i%100) })},
		{"A-mixed-case", dns.TypeA, names(func(i int) string { return fmt.Sprintf("Svc%d.NS%d.svc.cluster.local.", i, i%100) })},
		{"SRV", dns.TypeSRV, names(func(i int) string { return fmt.Sprintf("_http._tcp.svc%d.ns%d.svc.cluster.local.", i, i%100) })},
		{"StatefulSet-pod", dns.TypeA, names(func(i int) string {
			i -= i % 10
			return fmt.Sprintf("svc%d-3.svc%d.ns%d.svc.cluster.local.", i, i, i%100)
		})},
		{"PTR", dns.TypePTR, names(func(i int) string { return rev(fmt.Sprintf("10.128.%d.%d", (i*10)>>8&0xff, (i*10)&0xff)) })},
		{"NXDOMAIN", dns.TypeA, names(func(i int) string { return fmt.Sprintf("nosuch%d.ns%d.svc.cluster.local.", i, i%100) })},
		{"not-ours", dns.TypeA, names(func(i int) string { return fmt.Sprintf("host%d.example.com.", i) })},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var answered int
			for i := 0; b.Loop(); i++ {
				res, ok := v.Lookup(bc.names[i%len(bc.names)], bc.qtype)
				if ok && (len(res.Answer) > 0 || res.Rcode == dns.RcodeNameError) {
					answered++
				}
			}
			if bc.name != "not-ours" && answered == 0 {
				b.Fatal("nothing answered")
			}
		})
	}
}

// BenchmarkNewView is the cost of a new desired state: building the View
// of 10,000 Services with 10 endpoints each.
// It also reports the heap a View of that size holds (MB-live).
func BenchmarkNewView(b *testing.B) {
	in := largeInput(10000)
	var v *View
	for b.Loop() {
		var err error
		if v, err = NewView(in); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var before, after runtime.MemStats
	v = nil
	runtime.GC()
	runtime.ReadMemStats(&before)
	v = mustView(b, in)
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "MB-live")
	runtime.KeepAlive(v)
}

// BenchmarkUDPQuery is one query's round trip over UDP on loopback, from
// a client that keeps its socket: the server's whole path (read, lookup,
// pack, write) plus the kernel's; "forwarded" adds the hop to a second
// server on loopback.
func BenchmarkUDPQuery(b *testing.B) {
	up := startUpstream(b, resolver)
	for _, bc := range []struct{ name, qname string }{
		{"cluster", "svc5.ns5.svc.cluster.local."},
		{"cluster-headless", "svc10.ns10.svc.cluster.local."},
		{"forwarded", "example.test."},
	} {
		b.Run(bc.name, func(b *testing.B) {
			_, addr := startServer(b, Options{
				View:      mustView(b, largeInput(1000)),
				Upstreams: []string{up.addr},
				Logger:    slog.New(slog.DiscardHandler),
			})
			c := &dns.Client{Timeout: 5 * time.Second}
			conn, err := c.Dial(addr)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			m := new(dns.Msg)
			m.SetQuestion(bc.qname, dns.TypeA)
			for b.Loop() {
				m.Id = dns.Id()
				r, _, err := c.ExchangeWithConn(m, conn)
				if err != nil {
					b.Fatal(err)
				}
				if len(r.Answer) == 0 {
					b.Fatalf("no answer: %v", r)
				}
			}
		})
	}
}
