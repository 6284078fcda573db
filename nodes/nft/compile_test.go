package nft

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// assertGolden compares got with testdata/name, or rewrites it with -update.
func assertGolden(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, name, got, *update)
}

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func ep(ip string, port uint16, ready, local bool) Endpoint {
	return Endpoint{IP: addr(ip), Ports: []EndpointPort{{Name: "http", Port: port}}, Ready: ready, Local: local}
}

// node is the table-wide part every golden case shares.
func node(svcs ...Service) *Desired {
	return &Desired{
		NodeIPs:      []netip.Addr{addr("198.18.0.2"), addr("127.0.0.1"), addr("fd00::2")},
		ClusterCIDRs: []netip.Prefix{prefix("198.18.16.0/20"), prefix("198.18.32.0/20")},
		NodePodCIDRs: []netip.Prefix{prefix("198.18.16.0/24")},
		ServiceCIDRs: []netip.Prefix{prefix("198.19.0.0/16")},
		Services:     svcs,
	}
}

func web(mut func(*Service)) Service {
	s := Service{
		Namespace: "shop", Name: "web", Type: ClusterIP,
		ClusterIPs: []netip.Addr{addr("198.19.0.10")},
		Ports:      []ServicePort{{Name: "http", Protocol: TCP, Port: 80}},
		Endpoints:  []Endpoint{ep("198.18.32.7", 8080, true, false), ep("198.18.16.5", 8080, true, true)},
	}
	if mut != nil {
		mut(&s)
	}
	return s
}

func TestCompileGolden(t *testing.T) {
	cases := []struct {
		name string
		d    *Desired
	}{
		{"empty", node()},
		{"clusterip", node(web(nil))},
		{"nodeport", node(web(func(s *Service) { s.Type = NodePort; s.Ports[0].NodePort = 30080 }))},
		{"loadbalancer", node(web(func(s *Service) {
			s.Type = LoadBalancer
			s.Ports[0].NodePort = 30080
			s.LoadBalancerIPs = []netip.Addr{addr("198.18.200.1")}
		}))},
		{"affinity", node(web(func(s *Service) { s.AffinityTimeout = 3 * time.Hour }))},
		{"local", node(web(func(s *Service) {
			s.Type = NodePort
			s.Ports[0].NodePort = 30080
			s.ExternalTrafficLocal = true
		}))},
		{"local-none-here", node(web(func(s *Service) {
			s.Type = NodePort
			s.Ports[0].NodePort = 30080
			s.ExternalTrafficLocal = true
			s.InternalTrafficLocal = true
			s.Endpoints = s.Endpoints[:1] // only the remote one
		}))},
		{"no-endpoints", node(web(func(s *Service) {
			s.Type = NodePort
			s.Ports[0].NodePort = 30080
			s.Endpoints = nil
		}))},
		{"not-ready", node(web(func(s *Service) {
			s.Endpoints = append(s.Endpoints, ep("198.18.16.9", 8080, false, true))
			s.Endpoints[0].Ready = false
		}))},
		{"multiport-udp-sctp", node(web(func(s *Service) {
			s.Name = "dns"
			s.Ports = []ServicePort{{Name: "dns", Protocol: UDP, Port: 53}, {Name: "dns-tcp", Protocol: TCP, Port: 53}, {Name: "sig", Protocol: SCTP, Port: 3868}}
			s.Endpoints = []Endpoint{{IP: addr("198.18.16.3"), Ready: true, Local: true,
				Ports: []EndpointPort{{Name: "dns", Port: 5353}, {Name: "dns-tcp", Port: 5353}}}}
		}))},
	}
	withPolicies := node(web(nil))
	withPolicies.Policies = []Policy{
		{Namespace: "shop", Name: "web-in", Pods: []netip.Addr{addr("198.18.16.5")}, Ingress: true,
			IngressRules: []PolicyRule{
				{Peers: []PolicyPeer{{IPs: []netip.Addr{addr("198.18.32.7"), addr("198.18.32.8")}}}, Ports: []PolicyPort{{Protocol: TCP, Port: 8080}}},
				{Peers: []PolicyPeer{{Block: prefix("198.18.128.0/17"), Except: []netip.Prefix{prefix("198.18.200.0/24")}}},
					Ports: []PolicyPort{{Protocol: UDP, Port: 5000, EndPort: 5010}, {Protocol: SCTP}}},
			}},
		{Namespace: "shop", Name: "deny-egress", Pods: []netip.Addr{addr("198.18.16.5"), addr("198.18.16.6")}, Egress: true},
		{Namespace: "shop", Name: "allow-all", Pods: []netip.Addr{addr("198.18.16.6")}, Ingress: true, IngressRules: []PolicyRule{{}}},
	}
	cases = append(cases, struct {
		name string
		d    *Desired
	}{"policies", withPolicies})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Compile("berth", c.d)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := Compile("berth", c.d)
			if r.String() != again.String() {
				t.Fatal("Compile is not deterministic")
			}
			assertGolden(t, c.name+".nft", r.String())
		})
	}
}

func TestCompileOrderIndependent(t *testing.T) {
	a := node(web(nil), web(func(s *Service) { s.Name = "api"; s.ClusterIPs = []netip.Addr{addr("198.19.0.11")} }))
	b := node(a.Services[1], a.Services[0])
	b.Services[0].Endpoints = []Endpoint{a.Services[1].Endpoints[1], a.Services[1].Endpoints[0]}
	ra, err := Compile("", a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Compile("", b)
	if err != nil {
		t.Fatal(err)
	}
	if ra.String() != rb.String() {
		t.Errorf("the order of services and endpoints changed the rule set:\n%s", golden.Diff(ra.String(), rb.String()))
	}
	if ra.Table != DefaultTable {
		t.Errorf("table = %q, want %q", ra.Table, DefaultTable)
	}
}

func TestCompileErrors(t *testing.T) {
	for name, d := range map[string]*Desired{
		"duplicate service":   node(web(nil), web(nil)),
		"shared address":      node(web(nil), web(func(s *Service) { s.Name = "other" })),
		"bad protocol":        node(web(func(s *Service) { s.Ports[0].Protocol = "ICMP" })),
		"port 0":              node(web(func(s *Service) { s.Ports[0].Port = 0 })),
		"no name":             node(web(func(s *Service) { s.Name = "" })),
		"duplicate port":      node(web(func(s *Service) { s.Ports = append(s.Ports, s.Ports[0]) })),
		"policy without name": {Policies: []Policy{{Namespace: "a", Ingress: true}}},
		"policy port range":   {Policies: []Policy{{Namespace: "a", Name: "b", Ingress: true, IngressRules: []PolicyRule{{Ports: []PolicyPort{{Protocol: TCP, Port: 9, EndPort: 8}}}}}}},
		"policy empty peer":   {Policies: []Policy{{Namespace: "a", Name: "b", Ingress: true, IngressRules: []PolicyRule{{Peers: []PolicyPeer{{}}}}}}},
	} {
		if _, err := Compile("berth", d); err == nil {
			t.Errorf("%s: Compile succeeded", name)
		}
	}
}

func TestNamesBounded(t *testing.T) {
	long := strings.Repeat("n", 253)
	d := node(web(func(s *Service) { s.Namespace = long; s.Name = long; s.AffinityTimeout = time.Minute }))
	d.Policies = []Policy{{Namespace: long, Name: long, Pods: []netip.Addr{addr("198.18.16.5")}, Ingress: true,
		IngressRules: []PolicyRule{{Peers: []PolicyPeer{{Block: prefix("198.18.0.0/16"), Except: []netip.Prefix{prefix("198.18.1.0/24")}}}}}}}
	r, err := Compile("berth", d)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range r.Chains {
		names[c.Name] = true
	}
	for _, s := range r.Sets {
		names[s.Name] = true
	}
	for n := range names {
		if len(n) > 255 {
			t.Errorf("name of %d bytes: %s", len(n), n)
		}
	}
	if len(names) != len(r.Chains)+len(r.Sets) {
		t.Error("truncated names collide")
	}
}

func TestIntervalElements(t *testing.T) {
	got := []string{}
	for _, e := range intervalElements([]netip.Prefix{prefix("10.0.1.0/24"), prefix("10.0.0.0/24"), prefix("10.0.0.128/25"),
		prefix("10.0.4.0/24"), prefix("0.0.0.0/0"), prefix("fd00::/8")}) {
		got = append(got, intervalText(e.Key, e.KeyEnd))
	}
	if want := "0.0.0.0/0"; strings.Join(got, " ") != want {
		t.Errorf("with 0/0: %v, want %s", got, want)
	}
	got = got[:0]
	for _, e := range intervalElements([]netip.Prefix{prefix("10.0.1.0/24"), prefix("10.0.0.0/24"), prefix("10.0.0.128/25"), prefix("10.0.4.0/24"), prefix("10.0.2.0/24")}) {
		got = append(got, intervalText(e.Key, e.KeyEnd))
	}
	if want := "10.0.0.0-10.0.2.255 10.0.4.0/24"; strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

func TestFirstError(t *testing.T) {
	a, b, c := errors.New("a"), errors.New("b"), errors.New("c")
	nested := fmt.Errorf("receive: %w", errors.Join(errors.Join(a, b), c))
	if got := firstError(nested).Error(); got != "a (and 2 more errors)" {
		t.Errorf("firstError = %q", got)
	}
	if !errors.Is(firstError(nested), a) {
		t.Error("firstError does not wrap the first error")
	}
	if firstError(a) != a {
		t.Error("a single error was changed")
	}
}

func addrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
