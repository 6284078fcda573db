package dns_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"

	clusterdns "berth.dev/berth/nodes/dns"
)

// The agent builds a View from its desired state, serves it on the pod
// network's address, and swaps in a new View when the state changes.
func Example() {
	view, err := clusterdns.NewView(clusterdns.Input{
		Services: []clusterdns.Service{{
			Namespace:  "default",
			Name:       "web",
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.20")},
			Ports:      []clusterdns.ServicePort{{Name: "http", Port: 80}},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := clusterdns.New(clusterdns.Options{
		Listen:    []string{"127.0.0.1:0"}, // the bridge address on a machine
		Upstreams: []string{"192.0.2.53"},  // or read from /etc/resolv.conf
		View:      view,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()

	q := new(dns.Msg)
	q.SetQuestion("_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV)
	r, err := dns.Exchange(q, srv.Addrs()[0])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Answer[0])
	fmt.Println(r.Extra[0])

	cancel()
	fmt.Println(<-done)
	// Output:
	// _http._tcp.web.default.svc.cluster.local.	5	IN	SRV	0 100 80 web.default.svc.cluster.local.
	// web.default.svc.cluster.local.	5	IN	A	10.96.0.20
	// <nil>
}

func ExamplePodResolvConf() {
	ndots := "2"
	conf, warnings := clusterdns.PodResolvConf(clusterdns.PodDNS{
		Namespace:   "shop",
		Nameservers: []netip.Addr{netip.MustParseAddr("198.18.0.1")},
		Policy:      corev1.DNSClusterFirst,
		Config: &corev1.PodDNSConfig{
			Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &ndots}, {Name: "edns0"}},
		},
		Host: &clusterdns.ResolvConf{Nameservers: []string{"192.0.2.53"}, Searches: []string{"corp.example"}},
	})
	fmt.Print(string(conf.Bytes()))
	fmt.Println(len(warnings), "warnings")
	// Output:
	// search shop.svc.cluster.local svc.cluster.local cluster.local corp.example
	// nameserver 198.18.0.1
	// options ndots:2 edns0
	// 0 warnings
}
