package api

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
)

func TestNetworkDigestIgnoresGeneration(t *testing.T) {
	n := Network{
		Generation: 1,
		Machine:    "m1",
		PodCIDR:    netip.MustParsePrefix("198.18.64.0/24"),
		Services: []Service{{
			Namespace: "default", Name: "web",
			ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.10")},
			Ports:      []ServicePort{{Port: 80}},
			Endpoints:  []Endpoint{{IP: netip.MustParseAddr("198.18.64.2"), Machine: "m1", Pod: "default/web-1", Ready: true}},
		}},
	}
	later := n
	later.Generation = 7
	if n.Digest() != later.Digest() {
		t.Error("digest changed with the generation alone")
	}
	changed := n
	changed.Services = append([]Service{}, n.Services...)
	changed.Services[0].Endpoints = []Endpoint{{IP: netip.MustParseAddr("198.18.64.2"), Machine: "m1", Pod: "default/web-1"}}
	if n.Digest() == changed.Digest() {
		t.Error("digest did not change when an endpoint stopped being ready")
	}
}

func TestNetworkJSONRoundTrip(t *testing.T) {
	n := Network{
		Generation: 3,
		Machine:    "m2",
		PodCIDR:    netip.MustParsePrefix("198.18.65.0/24"),
		Routes:     []PodRoute{{CIDR: netip.MustParsePrefix("198.18.64.0/24"), Via: netip.MustParseAddr("198.18.0.11"), Machine: "m1"}},
		Policies: []NetworkPolicy{{Namespace: "a", Name: "p", Ingress: true,
			IngressRules: []PolicyRule{{Peers: []PolicyPeer{{Block: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}}}}}},
		Ingress: &Ingress{TLS: []IngressTLS{{Source: "a/tls", Cert: Sensitive("c"), Key: Sensitive("k")}}},
	}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	var back Network
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(n, back) {
		t.Errorf("round trip changed the network:\n got %+v\nwant %+v", back, n)
	}
}
