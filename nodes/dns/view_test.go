package dns

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

var (
	ip   = netip.MustParseAddr
	cidr = netip.MustParsePrefix
)

// testInput is a small cluster: a ClusterIP Service with a named and an
// unnamed port on two stacks, a StatefulSet's headless Service, a
// headless Service without ready pods, ExternalName Services in and out of
// the zone, and pods behind and outside Services.
func testInput() Input {
	return Input{
		Serial: 7,
		Services: []Service{
			{Namespace: "default", Name: "kubernetes", ClusterIPs: []netip.Addr{ip("10.96.0.1")},
				Ports:     []ServicePort{{Name: "https", Port: 443, TargetPort: 6443}},
				Endpoints: []Endpoint{{IP: ip("198.18.0.10")}}},
			{Namespace: "default", Name: "web", Type: corev1.ServiceTypeNodePort,
				ClusterIPs: []netip.Addr{ip("10.96.0.20"), ip("fd00:96::20")},
				Ports:      []ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: 8080}, {Port: 9090}},
				Endpoints:  []Endpoint{{IP: ip("10.244.1.5")}, {IP: ip("10.244.2.7")}}},
			{Namespace: "default", Name: "noeps", ClusterIPs: []netip.Addr{ip("10.96.0.30")},
				Ports: []ServicePort{{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}}},
			{Namespace: "db", Name: "pg", Headless: true,
				Ports: []ServicePort{{Name: "postgres", Port: 5432}},
				Endpoints: []Endpoint{
					{IP: ip("10.244.1.10"), Hostname: "pg-0", Subdomain: "pg"},
					{IP: ip("10.244.2.11"), Hostname: "pg-1", Subdomain: "pg"},
					// A hostname under another subdomain does not name the
					// endpoint here.
					{IP: ip("10.244.1.12"), Hostname: "other", Subdomain: "elsewhere"},
				}},
			{Namespace: "db", Name: "metrics", ClusterIPs: nil, // no cluster IP: headless
				Endpoints: []Endpoint{{IP: ip("10.244.1.10"), Hostname: "pg-0", Subdomain: "pg",
					Ports: []EndpointPort{{Name: "prom", Port: 9187}}}}},
			{Namespace: "db", Name: "empty", Headless: true, Ports: []ServicePort{{Name: "x", Port: 1}}},
			{Namespace: "default", Name: "ext", Type: corev1.ServiceTypeExternalName, ExternalName: "WWW.Example.com"},
			{Namespace: "default", Name: "alias", Type: corev1.ServiceTypeExternalName, ExternalName: "web.default.svc.cluster.local."},
			{Namespace: "default", Name: "loop1", Type: corev1.ServiceTypeExternalName, ExternalName: "loop2.default.svc.cluster.local"},
			{Namespace: "default", Name: "loop2", Type: corev1.ServiceTypeExternalName, ExternalName: "loop1.default.svc.cluster.local"},
		},
		Pods: []Pod{
			{Namespace: "default", IPs: []netip.Addr{ip("10.244.1.5")}},
			{Namespace: "db", IPs: []netip.Addr{ip("10.244.1.10")}},
			{Namespace: "kube-system", IPs: []netip.Addr{ip("10.244.3.3"), ip("fd00:244::3")}},
		},
		Namespaces:    []string{"empty-ns"},
		NameserverIPs: []netip.Addr{ip("10.96.0.10")},
		ReverseZones:  []netip.Prefix{cidr("10.96.0.0/12"), cidr("10.244.0.0/16"), cidr("fd00:244::/64")},
	}
}

// rev is the reverse name of an address, by miekg/dns.
func rev(a string) string {
	name, err := dns.ReverseAddr(a)
	if err != nil {
		panic(err)
	}
	return name
}

func mustView(t testing.TB, in Input) *View {
	t.Helper()
	v, err := NewView(in)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// rrText is a record as one line with single spaces.
func rrText(rr dns.RR) string { return strings.Join(strings.Fields(rr.String()), " ") }

func rrTexts(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rrText(rr))
	}
	slices.Sort(out)
	return out
}

func TestViewLookup(t *testing.T) {
	v := mustView(t, testInput())
	if p := v.Problems(); len(p) != 0 {
		t.Fatalf("problems: %q", p)
	}
	const (
		nxdomain = "NXDOMAIN"
		noerror  = "NOERROR"
	)
	soa := "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5"
	tests := []struct {
		name   string
		qtype  uint16
		rcode  string
		answer []string
		extra  []string
		ns     string // the authority section's single record, if any
		chase  string
	}{
		{"web.default.svc.cluster.local.", dns.TypeA, noerror, []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}, nil, "", ""},
		{"web.default.svc.cluster.local.", dns.TypeAAAA, noerror, []string{"web.default.svc.cluster.local. 5 IN AAAA fd00:96::20"}, nil, "", ""},
		{"WEB.Default.SVC.Cluster.LOCAL.", dns.TypeA, noerror, []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}, nil, "", ""},
		{"noeps.default.svc.cluster.local.", dns.TypeA, noerror, []string{"noeps.default.svc.cluster.local. 5 IN A 10.96.0.30"}, nil, "", ""},
		// Endpoint names of a ClusterIP Service, as CoreDNS has them.
		{"198-18-0-10.kubernetes.default.svc.cluster.local.", dns.TypeA, noerror, []string{"198-18-0-10.kubernetes.default.svc.cluster.local. 5 IN A 198.18.0.10"}, nil, "", ""},
		// Headless: every ready endpoint.
		{"pg.db.svc.cluster.local.", dns.TypeA, noerror, []string{
			"pg.db.svc.cluster.local. 5 IN A 10.244.1.10",
			"pg.db.svc.cluster.local. 5 IN A 10.244.1.12",
			"pg.db.svc.cluster.local. 5 IN A 10.244.2.11",
		}, nil, "", ""},
		{"pg.db.svc.cluster.local.", dns.TypeAAAA, noerror, nil, nil, soa, ""},
		{"pg-0.pg.db.svc.cluster.local.", dns.TypeA, noerror, []string{"pg-0.pg.db.svc.cluster.local. 5 IN A 10.244.1.10"}, nil, "", ""},
		{"PG-1.pg.db.svc.cluster.local.", dns.TypeA, noerror, []string{"pg-1.pg.db.svc.cluster.local. 5 IN A 10.244.2.11"}, nil, "", ""},
		{"10-244-1-12.pg.db.svc.cluster.local.", dns.TypeA, noerror, []string{"10-244-1-12.pg.db.svc.cluster.local. 5 IN A 10.244.1.12"}, nil, "", ""},
		{"other.pg.db.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil, soa, ""},
		{"pg-0.metrics.db.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil, soa, ""},
		{"10-244-1-10.metrics.db.svc.cluster.local.", dns.TypeA, noerror, []string{"10-244-1-10.metrics.db.svc.cluster.local. 5 IN A 10.244.1.10"}, nil, "", ""},
		// The spec: a headless Service without ready endpoints is NXDOMAIN.
		{"empty.db.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil, soa, ""},
		{"nosuch.default.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil, soa, ""},
		// SRV: a ClusterIP Service points at itself, a headless one at
		// each endpoint by name, at the endpoint's port.
		{"_https._tcp.kubernetes.default.svc.cluster.local.", dns.TypeSRV, noerror,
			[]string{"_https._tcp.kubernetes.default.svc.cluster.local. 5 IN SRV 0 100 443 kubernetes.default.svc.cluster.local."},
			[]string{"kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"}, "", ""},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, noerror,
			[]string{"_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."},
			[]string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20", "web.default.svc.cluster.local. 5 IN AAAA fd00:96::20"}, "", ""},
		{"_dns._udp.noeps.default.svc.cluster.local.", dns.TypeSRV, noerror,
			[]string{"_dns._udp.noeps.default.svc.cluster.local. 5 IN SRV 0 100 53 noeps.default.svc.cluster.local."},
			[]string{"noeps.default.svc.cluster.local. 5 IN A 10.96.0.30"}, "", ""},
		{"_dns._tcp.noeps.default.svc.cluster.local.", dns.TypeSRV, nxdomain, nil, nil, soa, ""},
		{"web.default.svc.cluster.local.", dns.TypeSRV, noerror, []string{
			"web.default.svc.cluster.local. 5 IN SRV 0 50 80 web.default.svc.cluster.local.",
			"web.default.svc.cluster.local. 5 IN SRV 0 50 9090 web.default.svc.cluster.local.",
		}, []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20", "web.default.svc.cluster.local. 5 IN AAAA fd00:96::20"}, "", ""},
		{"_postgres._tcp.pg.db.svc.cluster.local.", dns.TypeSRV, noerror, []string{
			"_postgres._tcp.pg.db.svc.cluster.local. 5 IN SRV 0 33 5432 10-244-1-12.pg.db.svc.cluster.local.",
			"_postgres._tcp.pg.db.svc.cluster.local. 5 IN SRV 0 33 5432 pg-0.pg.db.svc.cluster.local.",
			"_postgres._tcp.pg.db.svc.cluster.local. 5 IN SRV 0 33 5432 pg-1.pg.db.svc.cluster.local.",
		}, []string{
			"10-244-1-12.pg.db.svc.cluster.local. 5 IN A 10.244.1.12",
			"pg-0.pg.db.svc.cluster.local. 5 IN A 10.244.1.10",
			"pg-1.pg.db.svc.cluster.local. 5 IN A 10.244.2.11",
		}, "", ""},
		{"_prom._tcp.metrics.db.svc.cluster.local.", dns.TypeSRV, noerror,
			[]string{"_prom._tcp.metrics.db.svc.cluster.local. 5 IN SRV 0 100 9187 10-244-1-10.metrics.db.svc.cluster.local."},
			[]string{"10-244-1-10.metrics.db.svc.cluster.local. 5 IN A 10.244.1.10"}, "", ""},
		// Names that exist without records of the type asked: NODATA.
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeA, noerror, nil, nil, soa, ""},
		{"_tcp.web.default.svc.cluster.local.", dns.TypeA, noerror, nil, nil, soa, ""},
		{"default.svc.cluster.local.", dns.TypeA, noerror, nil, nil, soa, ""},
		{"empty-ns.svc.cluster.local.", dns.TypeA, noerror, nil, nil, soa, ""},
		{"svc.cluster.local.", dns.TypeA, noerror, nil, nil, soa, ""},
		{"nonexistent.svc.cluster.local.", dns.TypeA, nxdomain, nil, nil, soa, ""},
		{"cluster.local.", dns.TypeA, noerror, nil, nil, soa, ""},
		{"cluster.local.", dns.TypeSOA, noerror, []string{soa}, nil, "", ""},
		{"cluster.local.", dns.TypeNS, noerror, []string{"cluster.local. 5 IN NS ns.dns.cluster.local."},
			[]string{"ns.dns.cluster.local. 5 IN A 10.96.0.10"}, "", ""},
		{"web.default.svc.cluster.local.", dns.TypeANY, noerror, []string{
			"web.default.svc.cluster.local. 5 IN A 10.96.0.20",
			"web.default.svc.cluster.local. 5 IN AAAA fd00:96::20",
			"web.default.svc.cluster.local. 5 IN SRV 0 50 80 web.default.svc.cluster.local.",
			"web.default.svc.cluster.local. 5 IN SRV 0 50 9090 web.default.svc.cluster.local.",
		}, nil, "", ""},
		{"dns-version.cluster.local.", dns.TypeTXT, noerror, []string{`dns-version.cluster.local. 5 IN TXT "1.1.0"`}, nil, "", ""},
		// ExternalName: a CNAME, chased in the zone, handed back out of it.
		{"ext.default.svc.cluster.local.", dns.TypeCNAME, noerror, []string{"ext.default.svc.cluster.local. 5 IN CNAME www.example.com."}, nil, "", ""},
		{"ext.default.svc.cluster.local.", dns.TypeA, noerror, []string{"ext.default.svc.cluster.local. 5 IN CNAME www.example.com."}, nil, "", "www.example.com."},
		{"alias.default.svc.cluster.local.", dns.TypeA, noerror, []string{
			"alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
			"web.default.svc.cluster.local. 5 IN A 10.96.0.20",
		}, nil, "", ""},
		// Pods by address, verified against the pods of the namespace.
		{"10-244-3-3.kube-system.pod.cluster.local.", dns.TypeA, noerror, []string{"10-244-3-3.kube-system.pod.cluster.local. 5 IN A 10.244.3.3"}, nil, "", ""},
		{"fd00-244--3.kube-system.pod.cluster.local.", dns.TypeAAAA, noerror, []string{"fd00-244--3.kube-system.pod.cluster.local. 5 IN AAAA fd00:244::3"}, nil, "", ""},
		{"fd00-244-0-0-0-0-0-3.kube-system.pod.cluster.local.", dns.TypeAAAA, noerror, []string{"fd00-244-0-0-0-0-0-3.kube-system.pod.cluster.local. 5 IN AAAA fd00:244::3"}, nil, "", ""},
		{"10-244-3-3.kube-system.pod.cluster.local.", dns.TypeAAAA, noerror, nil, nil, soa, ""},
		{"10-244-3-4.kube-system.pod.cluster.local.", dns.TypeA, nxdomain, nil, nil, soa, ""},
		{"10-244-3-3.default.pod.cluster.local.", dns.TypeA, nxdomain, nil, nil, soa, ""},
		{"kube-system.pod.cluster.local.", dns.TypeA, noerror, nil, nil, soa, ""},
		// PTR: Service addresses, endpoints by their names (before the
		// pod's own), other pods by their address names.
		{"1.0.96.10.in-addr.arpa.", dns.TypePTR, noerror, []string{"1.0.96.10.in-addr.arpa. 5 IN PTR kubernetes.default.svc.cluster.local."}, nil, "", ""},
		{"10.1.244.10.in-addr.arpa.", dns.TypePTR, noerror, []string{
			"10.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-10.metrics.db.svc.cluster.local.",
			"10.1.244.10.in-addr.arpa. 5 IN PTR pg-0.pg.db.svc.cluster.local.",
		}, nil, "", ""},
		{"5.1.244.10.in-addr.arpa.", dns.TypePTR, noerror, []string{"5.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-5.web.default.svc.cluster.local."}, nil, "", ""},
		{"3.3.244.10.in-addr.arpa.", dns.TypePTR, noerror, []string{"3.3.244.10.in-addr.arpa. 5 IN PTR 10-244-3-3.kube-system.pod.cluster.local."}, nil, "", ""},
		{rev("fd00:96::20"), dns.TypePTR, noerror,
			[]string{rev("fd00:96::20") + " 5 IN PTR web.default.svc.cluster.local."}, nil, "", ""},
		{"99.0.96.10.in-addr.arpa.", dns.TypePTR, nxdomain, nil, nil,
			"10.in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5", ""},
		{rev("fd00:244::4"), dns.TypePTR, nxdomain, nil, nil,
			"0.0.0.0.0.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5", ""},
		{"1.0.96.10.in-addr.arpa.", dns.TypeA, noerror, nil, nil,
			"10.in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			res, ok := v.Lookup(tt.name, tt.qtype)
			if !ok {
				t.Fatal("not answered by the view")
			}
			if got := dns.RcodeToString[res.Rcode]; got != tt.rcode {
				t.Errorf("rcode %s, want %s", got, tt.rcode)
			}
			want := slices.Clone(tt.answer)
			slices.Sort(want)
			if got := rrTexts(res.Answer); !slices.Equal(got, want) {
				t.Errorf("answer:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if got := rrTexts(res.Extra); !slices.Equal(got, tt.extra) && len(got)+len(tt.extra) > 0 {
				t.Errorf("extra:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.extra, "\n"))
			}
			var ns string
			if len(res.Ns) > 0 {
				ns = rrText(res.Ns[0])
			}
			if ns != tt.ns || len(res.Ns) > 1 {
				t.Errorf("authority %q (%d records), want %q", ns, len(res.Ns), tt.ns)
			}
			if res.Chase != tt.chase {
				t.Errorf("chase %q, want %q", res.Chase, tt.chase)
			}
		})
	}
}

func TestViewNotOurs(t *testing.T) {
	v := mustView(t, testInput())
	for _, name := range []string{
		"example.com.",
		"cluster.local.example.com.",
		"xcluster.local.",
		"1.1.168.192.in-addr.arpa.", // outside the reverse zones
		"96.10.in-addr.arpa.",       // not a whole address
		"in-addr.arpa.",
	} {
		if res, ok := v.Lookup(name, dns.TypePTR); ok {
			t.Errorf("%s answered by the view: %+v", name, res)
		}
	}
}

func TestViewCNAMELoop(t *testing.T) {
	v := mustView(t, testInput())
	res, ok := v.Lookup("loop1.default.svc.cluster.local.", dns.TypeA)
	if !ok || res.Rcode != dns.RcodeServerFailure {
		t.Fatalf("loop: ok %v rcode %s, want SERVFAIL", ok, dns.RcodeToString[res.Rcode])
	}
	if len(res.Answer) != maxChase+1 {
		t.Errorf("loop followed %d times, want %d", len(res.Answer), maxChase+1)
	}
}

func TestViewPodModes(t *testing.T) {
	in := testInput()
	in.PodMode = PodsInsecure
	v := mustView(t, in)
	res, _ := v.Lookup("10-1-2-3.empty-ns.pod.cluster.local.", dns.TypeA)
	if got := rrTexts(res.Answer); !slices.Equal(got, []string{"10-1-2-3.empty-ns.pod.cluster.local. 5 IN A 10.1.2.3"}) {
		t.Errorf("insecure pod name: %q", got)
	}
	res, _ = v.Lookup("10-1-2-3.nons.pod.cluster.local.", dns.TypeA)
	if res.Rcode != dns.RcodeNameError {
		t.Errorf("insecure pod name in a namespace that does not exist: %s", dns.RcodeToString[res.Rcode])
	}
	res, _ = v.Lookup("not-an-ip.default.pod.cluster.local.", dns.TypeA)
	if res.Rcode != dns.RcodeNameError {
		t.Errorf("insecure pod name that is no address: %s", dns.RcodeToString[res.Rcode])
	}

	in.PodMode = PodsDisabled
	v = mustView(t, in)
	res, _ = v.Lookup("10-244-3-3.kube-system.pod.cluster.local.", dns.TypeA)
	if res.Rcode != dns.RcodeNameError {
		t.Errorf("disabled pod names: %s", dns.RcodeToString[res.Rcode])
	}
	res, _ = v.Lookup("3.3.244.10.in-addr.arpa.", dns.TypePTR)
	if res.Rcode != dns.RcodeNameError {
		t.Errorf("disabled pod PTR: %s %q", dns.RcodeToString[res.Rcode], rrTexts(res.Answer))
	}
	// The pods' namespace still exists.
	res, _ = v.Lookup("kube-system.svc.cluster.local.", dns.TypeA)
	if res.Rcode != dns.RcodeSuccess {
		t.Errorf("namespace of pods with pod names disabled: %s", dns.RcodeToString[res.Rcode])
	}
}

func TestViewOptions(t *testing.T) {
	v := mustView(t, Input{Domain: "Fleet.Example.", TTL: 30, Services: []Service{
		{Namespace: "a", Name: "b", ClusterIPs: []netip.Addr{ip("10.0.0.1")}},
	}})
	if v.Domain() != "fleet.example" || v.TTL() != 30 {
		t.Errorf("domain %q ttl %d", v.Domain(), v.TTL())
	}
	res, _ := v.Lookup("b.a.svc.fleet.example.", dns.TypeA)
	if got := rrTexts(res.Answer); !slices.Equal(got, []string{"b.a.svc.fleet.example. 30 IN A 10.0.0.1"}) {
		t.Errorf("answer %q", got)
	}
	if _, ok := v.Lookup("b.a.svc.cluster.local.", dns.TypeA); ok {
		t.Error("the default domain is answered under another domain")
	}

	for _, in := range []Input{{Domain: "a..b"}, {Domain: "."}, {TTL: MaxTTL + 1}, {Domain: "bad domain"}} {
		if _, err := NewView(in); err == nil {
			t.Errorf("NewView(%+v) accepted", in)
		}
	}
}

func TestViewProblems(t *testing.T) {
	v := mustView(t, Input{
		Services: []Service{
			{Namespace: "a.b", Name: "x", ClusterIPs: []netip.Addr{ip("10.0.0.1")}},
			{Namespace: "ns", Name: "UPPER_case", ClusterIPs: []netip.Addr{ip("10.0.0.2")}},
			{Namespace: "ns", Name: "ok", ClusterIPs: []netip.Addr{ip("10.0.0.3")}, Ports: []ServicePort{{Name: "p", Port: 70000}}},
			{Namespace: "ns", Name: "ok", ClusterIPs: []netip.Addr{ip("10.0.0.4")}},
			{Namespace: "ns", Name: "ipext", Type: corev1.ServiceTypeExternalName, ExternalName: "10.1.1.1"},
			{Namespace: "ns", Name: "hl", Headless: true, Endpoints: []Endpoint{{}}},
		},
		Pods: []Pod{{Namespace: "ns", IPs: []netip.Addr{{}}}},
	})
	if got := len(v.Problems()); got != 7 {
		t.Errorf("%d problems, want 7:\n%s", got, strings.Join(v.Problems(), "\n"))
	}
	res, _ := v.Lookup("ok.ns.svc.cluster.local.", dns.TypeA)
	if got := rrTexts(res.Answer); !slices.Equal(got, []string{"ok.ns.svc.cluster.local. 5 IN A 10.0.0.3"}) {
		t.Errorf("the first of two equal Services is not the one kept: %q", got)
	}
}

func TestReverseNames(t *testing.T) {
	for _, a := range []string{"10.0.0.1", "255.255.255.255", "0.0.0.0", "fd00::1", "2001:db8::ff00:42:8329"} {
		addr := ip(a)
		name := reverseName(addr)
		want, _ := dns.ReverseAddr(a)
		if name != want {
			t.Errorf("reverseName(%s) = %s, want %s", a, name, want)
		}
		back, ok := parseReverse(name)
		if !ok || back != addr {
			t.Errorf("parseReverse(%s) = %v %v", name, back, ok)
		}
		d, ok := parseDashed(dashed(addr))
		if !ok || d != addr {
			t.Errorf("parseDashed(%s) = %v %v", dashed(addr), d, ok)
		}
	}
	for _, bad := range []string{"1.2.3.in-addr.arpa.", "01.2.3.4.in-addr.arpa.", "256.2.3.4.in-addr.arpa.", "x.2.3.4.in-addr.arpa.", "1.ip6.arpa."} {
		if a, ok := parseReverse(bad); ok {
			t.Errorf("parseReverse(%s) = %v", bad, a)
		}
	}
	for p, want := range map[string]string{
		"10.96.0.0/12":   "10.in-addr.arpa.",
		"10.244.0.0/16":  "244.10.in-addr.arpa.",
		"10.244.1.0/24":  "1.244.10.in-addr.arpa.",
		"0.0.0.0/0":      "in-addr.arpa.",
		"fd00:244::/64":  "0.0.0.0.0.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa.",
		"fd00::/8":       "d.f.ip6.arpa.",
		"fd00:abcd::/30": "c.b.a.0.0.d.f.ip6.arpa.",
	} {
		if got := reverseZoneName(cidr(p)); got != want {
			t.Errorf("reverseZoneName(%s) = %s, want %s", p, got, want)
		}
	}
}

func TestViewDuplicateEndpoint(t *testing.T) {
	v := mustView(t, Input{Services: []Service{{Namespace: "ns", Name: "hl", Headless: true, Endpoints: []Endpoint{
		{IP: ip("10.0.0.1"), Ports: []EndpointPort{{Name: "a", Port: 1}}},
		{IP: ip("10.0.0.1"), Ports: []EndpointPort{{Name: "b", Port: 2}}},
	}}}})
	res, _ := v.Lookup("hl.ns.svc.cluster.local.", dns.TypeA)
	if len(res.Answer) != 1 {
		t.Errorf("A: %q", rrTexts(res.Answer))
	}
	res, _ = v.Lookup("hl.ns.svc.cluster.local.", dns.TypeSRV)
	want := []string{
		"hl.ns.svc.cluster.local. 5 IN SRV 0 50 1 10-0-0-1.hl.ns.svc.cluster.local.",
		"hl.ns.svc.cluster.local. 5 IN SRV 0 50 2 10-0-0-1.hl.ns.svc.cluster.local.",
	}
	if got := rrTexts(res.Answer); !slices.Equal(got, want) || len(res.Extra) != 1 {
		t.Errorf("SRV %q with %d extra", got, len(res.Extra))
	}
	res, _ = v.Lookup("_b._tcp.hl.ns.svc.cluster.local.", dns.TypeSRV)
	if got := rrTexts(res.Answer); !slices.Equal(got, []string{"_b._tcp.hl.ns.svc.cluster.local. 5 IN SRV 0 100 2 10-0-0-1.hl.ns.svc.cluster.local."}) {
		t.Errorf("SRV _b: %q", got)
	}
	res, _ = v.Lookup(rev("10.0.0.1"), dns.TypePTR)
	if len(res.Answer) != 1 {
		t.Errorf("PTR: %q", rrTexts(res.Answer))
	}
}
