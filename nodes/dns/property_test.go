package dns

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
	"pgregory.net/rapid"
)

// TestViewProperties checks, for any set of Services, what the spec
// promises: a ClusterIP Service's name gives its address and the address
// its name; a headless one gives exactly its ready addresses, each
// endpoint its own name with a PTR back; every named port an SRV record
// per target, with the targets' addresses as extras; and every negative
// answer exactly one SOA.
func TestViewProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		v4 := func(label string, a, b byte) netip.Addr {
			return netip.AddrFrom4([4]byte{10, a, b, rapid.ByteRange(1, 6).Draw(t, label)})
		}
		var services []Service
		for i := range rapid.IntRange(0, 12).Draw(t, "services") {
			s := Service{
				Namespace: rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "ns"),
				Name:      rapid.SampledFrom([]string{"s0", "s1", "s2", "s3", "web"}).Draw(t, "name"),
				Headless:  rapid.Bool().Draw(t, "headless"),
			}
			if !s.Headless {
				s.ClusterIPs = []netip.Addr{v4("clusterIP", 96, byte(i))}
			}
			for range rapid.IntRange(0, 2).Draw(t, "ports") {
				s.Ports = append(s.Ports, ServicePort{
					Name: rapid.SampledFrom([]string{"http", "grpc", ""}).Draw(t, "port name"),
					Port: int32(rapid.IntRange(1, 65535).Draw(t, "port")),
				})
			}
			// An address is one pod: listed again, it has the same
			// hostname.
			pods := map[netip.Addr]Endpoint{}
			for range rapid.IntRange(0, 4).Draw(t, "endpoints") {
				ep := Endpoint{IP: v4("endpoint", 244, 0)}
				if p, ok := pods[ep.IP]; ok {
					ep = p
				} else if rapid.Bool().Draw(t, "has hostname") {
					ep.Hostname = rapid.SampledFrom([]string{"h0", "h1"}).Draw(t, "hostname")
					ep.Subdomain = rapid.SampledFrom([]string{s.Name, "other"}).Draw(t, "subdomain")
				}
				pods[ep.IP] = ep
				s.Endpoints = append(s.Endpoints, ep)
			}
			services = append(services, s)
		}
		v, err := NewView(Input{Services: services})
		if err != nil {
			t.Fatal(err)
		}
		ask := func(name string, qtype uint16) Result {
			res, ok := v.Lookup(name, qtype)
			if !ok {
				t.Fatalf("%s %s not answered", name, dns.TypeToString[qtype])
			}
			if len(res.Answer) == 0 && (len(res.Ns) != 1 || res.Ns[0].Header().Rrtype != dns.TypeSOA) {
				t.Fatalf("%s %s: negative answer with authority %v", name, dns.TypeToString[qtype], res.Ns)
			}
			return res
		}
		addrs := func(rrs []dns.RR) []string {
			var out []string
			for _, rr := range rrs {
				out = append(out, rr.(*dns.A).A.String())
			}
			slices.Sort(out)
			return slices.Compact(out)
		}
		ptrs := func(ip netip.Addr) []string {
			var out []string
			for _, rr := range ask(reverseName(ip), dns.TypePTR).Answer {
				out = append(out, rr.(*dns.PTR).Ptr)
			}
			return out
		}

		seen := map[string]bool{}
		for _, s := range services {
			base := fmt.Sprintf("%s.%s.svc.cluster.local.", s.Name, s.Namespace)
			if seen[base] {
				continue // the first of a name is kept
			}
			seen[base] = true
			headless := len(s.ClusterIPs) == 0

			res := ask(base, dns.TypeA)
			var want []string
			endpointNames := map[string]bool{}
			switch {
			case headless && len(s.Endpoints) == 0:
				if res.Rcode != dns.RcodeNameError {
					t.Fatalf("%s headless without endpoints: %s", base, dns.RcodeToString[res.Rcode])
				}
				continue
			case headless:
				for _, ep := range s.Endpoints {
					want = append(want, ep.IP.String())
				}
			default:
				want = []string{s.ClusterIPs[0].String()}
				if !slices.Contains(ptrs(s.ClusterIPs[0]), base) {
					t.Fatalf("PTR of %s lacks %s", s.ClusterIPs[0], base)
				}
			}
			slices.Sort(want)
			want = slices.Compact(want)
			if got := addrs(res.Answer); !slices.Equal(got, want) {
				t.Fatalf("%s A = %v, want %v", base, got, want)
			}
			for _, ep := range s.Endpoints {
				name := dashed(ep.IP) + "." + base
				if ep.Hostname != "" && ep.Subdomain == s.Name {
					name = ep.Hostname + "." + base
				}
				endpointNames[name] = true
				if got := addrs(ask(name, dns.TypeA).Answer); !slices.Contains(got, ep.IP.String()) {
					t.Fatalf("%s A = %v, lacks %s", name, got, ep.IP)
				}
				if p := ptrs(ep.IP); !slices.ContainsFunc(p, func(n string) bool { return endpointNames[n] || seen[n] }) {
					t.Fatalf("PTR of %s = %v", ep.IP, p)
				}
			}
			for _, p := range s.Ports {
				if p.Name == "" {
					continue
				}
				name := "_" + p.Name + "._tcp." + base
				res := ask(name, dns.TypeSRV)
				targets := map[string]bool{}
				for _, rr := range res.Answer {
					targets[rr.(*dns.SRV).Target] = true
				}
				if !headless && (len(targets) != 1 || !targets[base]) {
					t.Fatalf("%s SRV targets %v, want %s", name, targets, base)
				}
				if headless && len(targets) != len(endpointNames) {
					t.Fatalf("%s SRV targets %v, want %v", name, targets, endpointNames)
				}
				for _, rr := range res.Extra {
					if !targets[rr.Header().Name] {
						t.Fatalf("%s extra %s is no target", name, rr)
					}
				}
			}
		}
		if res := ask("zz.a.svc.cluster.local.", dns.TypeA); res.Rcode != dns.RcodeNameError {
			t.Fatalf("zz.a: %s", dns.RcodeToString[res.Rcode])
		}
	})
}
