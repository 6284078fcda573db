package network

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/dns"
	"berth.dev/berth/nodes/nft"
)

var (
	a = netip.MustParseAddr
	p = netip.MustParsePrefix
)

func translateInput() api.Network {
	ep := func(ip, machine string, ready, terminating bool) api.Endpoint {
		return api.Endpoint{IP: a(ip), Machine: machine, Pod: "default/" + ip, Ready: ready, Terminating: terminating,
			Ports: []api.EndpointPort{{Name: "http", Port: 8080}}}
	}
	return api.Network{
		Generation: 7, Machine: "m1", PodCIDR: p("198.18.64.0/24"),
		ClusterCIDRs: []netip.Prefix{p("198.18.64.0/18")}, ServiceCIDRs: []netip.Prefix{p("198.19.0.0/16")},
		NodeIPs: []netip.Addr{a("198.18.0.11")},
		Services: []api.Service{
			{Namespace: "default", Name: "web", Type: corev1.ServiceTypeNodePort, ClusterIPs: []netip.Addr{a("198.19.0.10")},
				Ports: []api.ServicePort{{Name: "http", Port: 80, NodePort: 30080}}, AffinitySeconds: 30, InternalTrafficLocal: true,
				Endpoints: []api.Endpoint{
					ep("198.18.64.2", "m1", true, false),
					ep("198.18.65.2", "m2", true, false),
					ep("198.18.64.3", "m1", false, false),
					ep("198.18.64.4", "m1", true, true),
				}},
			{Namespace: "default", Name: "db", Headless: true, PublishNotReady: true,
				Ports:     []api.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}},
				Endpoints: []api.Endpoint{{IP: a("198.18.64.9"), Machine: "m1", Hostname: "db-0", Subdomain: "db"}}},
			{Namespace: "default", Name: "ext", Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"},
		},
		Pods: []api.PodAddress{{Namespace: "default", Name: "web-1", IPs: []netip.Addr{a("198.18.64.2")}}},
		Policies: []api.NetworkPolicy{{Namespace: "default", Name: "deny", Pods: []netip.Addr{a("198.18.64.2")}, Ingress: true,
			IngressRules: []api.PolicyRule{{Ports: []api.PolicyPort{{Port: 8080}}}}}},
	}
}

func TestNftDesired(t *testing.T) {
	n := translateInput()
	got := nftDesired(&n)
	want := &nft.Desired{
		NodeIPs: n.NodeIPs, ClusterCIDRs: n.ClusterCIDRs, ServiceCIDRs: n.ServiceCIDRs,
		NodePodCIDRs: []netip.Prefix{n.PodCIDR},
		Services: []nft.Service{{
			Namespace: "default", Name: "web", Type: nft.NodePort, ClusterIPs: []netip.Addr{a("198.19.0.10")},
			Ports:           []nft.ServicePort{{Name: "http", Protocol: nft.TCP, Port: 80, NodePort: 30080}},
			AffinityTimeout: 30 * time.Second, InternalTrafficLocal: true,
			Endpoints: []nft.Endpoint{
				{IP: a("198.18.64.2"), Ready: true, Local: true, Ports: []nft.EndpointPort{{Name: "http", Port: 8080}}},
				{IP: a("198.18.65.2"), Ready: true, Ports: []nft.EndpointPort{{Name: "http", Port: 8080}}},
			},
		}},
		Policies: []nft.Policy{{Namespace: "default", Name: "deny", Pods: []netip.Addr{a("198.18.64.2")}, Ingress: true,
			IngressRules: []nft.PolicyRule{{Ports: []nft.PolicyPort{{Protocol: nft.TCP, Port: 8080}}}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestDNSInput(t *testing.T) {
	n := translateInput()
	in := dnsInput(&n, a("198.18.64.1"))
	if in.Serial != 7 || !reflect.DeepEqual(in.NameserverIPs, []netip.Addr{a("198.18.64.1")}) ||
		!reflect.DeepEqual(in.ReverseZones, []netip.Prefix{p("198.19.0.0/16"), p("198.18.64.0/18")}) {
		t.Errorf("input %+v", in)
	}
	if len(in.Services) != 3 {
		t.Fatalf("services %+v", in.Services)
	}
	web := in.Services[0]
	if len(web.Endpoints) != 2 || web.Endpoints[0].IP != a("198.18.64.2") || web.Endpoints[1].IP != a("198.18.65.2") {
		t.Errorf("web's endpoints (ready, not terminating): %+v", web.Endpoints)
	}
	db := in.Services[1]
	if !db.Headless || len(db.Endpoints) != 1 || db.Endpoints[0].Hostname != "db-0" || db.Endpoints[0].Ports == nil {
		t.Errorf("db (publishes not-ready addresses): %+v", db)
	}
	v, err := dns.NewView(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Problems()) > 0 {
		t.Errorf("problems: %v", v.Problems())
	}
	for name, want := range map[string]string{
		"web.default.svc.cluster.local.":         "198.19.0.10",
		"db-0.db.default.svc.cluster.local.":     "198.18.64.9",
		"198-18-64-2.default.pod.cluster.local.": "198.18.64.2",
	} {
		r, ok := v.Lookup(name, 1)
		if !ok || len(r.Answer) == 0 || !containsA(r, want) {
			t.Errorf("%s: %+v, want %s", name, r.Answer, want)
		}
	}
}

func containsA(r dns.Result, ip string) bool {
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == 1 && strings.HasSuffix(rr.String(), "\t"+ip) {
			return true
		}
	}
	return false
}

func TestGratuitousARPPacket(t *testing.T) {
	mac := []byte{2, 0, 0, 0, 0, 1}
	got := garp(arpRequest, mac, a("198.18.0.200"))
	want := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 0, 200, 0, 0, 0, 0, 0, 0, 198, 18, 0, 200}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request % x\nwant     % x", got, want)
	}
}
