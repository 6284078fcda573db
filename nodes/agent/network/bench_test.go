package network

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/cni"
	"berth.dev/berth/nodes/runtime/netns"
)

// benchNetwork is a Network of services Services with two endpoints each
// (one on this machine), and a pod address per endpoint.
func benchNetwork(services int) api.Network {
	n := api.Network{
		Generation: 1, Machine: "m1", PodCIDR: netip.MustParsePrefix("198.18.64.0/24"),
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.64.0/18")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
		NodeIPs:      []netip.Addr{machineAddr.Addr()},
		DNS:          api.ClusterDNS{Upstreams: []string{"127.0.0.1:1"}},
	}
	for i := range services {
		ip := func(third, fourth int) netip.Addr {
			return netip.AddrFrom4([4]byte{198, byte(18 + third/256), byte(third % 256), byte(fourth)})
		}
		s := api.Service{Namespace: "default", Name: fmt.Sprintf("svc-%d", i),
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 19, byte(i / 256), byte(i % 256)})},
			Ports:      []api.ServicePort{{Name: "http", Port: 80}}}
		for j, machine := range []string{"m1", "m2"} {
			e := api.Endpoint{IP: ip(64+j+2*(i/250), 2+i%250), Machine: machine, Pod: fmt.Sprintf("default/svc-%d-%d", i, j), Ready: true,
				Ports: []api.EndpointPort{{Name: "http", Port: 8080}}}
			s.Endpoints = append(s.Endpoints, e)
			n.Pods = append(n.Pods, api.PodAddress{Namespace: "default", Name: e.Pod[len("default/"):], IPs: []netip.Addr{e.IP}})
		}
		n.Services = append(n.Services, s)
	}
	return n
}

// BenchmarkApplyOneEndpointChange applies a Network of 1,000 Services in
// which one endpoint changed its readiness since the last one: nftables
// difference, DNS view rebuilt, routes and bridge checked.
func BenchmarkApplyOneEndpointChange(b *testing.B) {
	testenv.RequireRoot(b)
	testenv.Require(b, filepath.Join(cni.DefaultPluginDir, "bridge"), filepath.Join(cni.DefaultPluginDir, "host-local"), filepath.Join(cni.DefaultPluginDir, "loopback"))
	machine, err := netns.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { netns.Remove(machine) })
	a, err := New(Options{Pods: &pods{}, StateDir: b.TempDir(), MachineNetNS: machine, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	ctx := context.Background()
	n := benchNetwork(1000)
	if err := a.Apply(ctx, n); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		n.Generation++
		e := &n.Services[i%len(n.Services)].Endpoints[0]
		e.Ready = !e.Ready
		if err := a.Apply(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
}
