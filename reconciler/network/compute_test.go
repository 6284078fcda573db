package network

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
)

// repo renders YAML documents (a Cluster and machines m1..mN are added
// unless the documents bring their own).
func repo(t testing.TB, cluster string, machines int, docs ...string) *render.Desired {
	t.Helper()
	all := []string{"apiVersion: berth.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n" + cluster}
	for i := 1; i <= machines; i++ {
		n := string(rune('0' + i))
		all = append(all, "apiVersion: berth.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: m"+n+"\n  labels:\n    n: \""+n+"\"\nspec:\n  address: 198.18.0.1"+n+"\n")
	}
	all = append(all, docs...)
	return load(t, fstest.MapFS{"repo.yaml": {Data: []byte(strings.Join(all, "\n---\n"))}})
}

const labCluster = "  podCIDR: 198.18.64.0/18\n  serviceCIDR: 198.19.0.0/16\n"

func healthy(names ...string) []Machine {
	var ms []Machine
	for _, n := range names {
		ms = append(ms, Machine{Name: n, Reachable: true, Healthy: true})
	}
	return ms
}

func svcYAML(name, spec string) string {
	return "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + name + "\nspec:\n" + spec
}

func svcOf(t testing.TB, res *Result, machine, key string) api.Service {
	t.Helper()
	for _, s := range res.Networks[machine].Services {
		if s.Namespace+"/"+s.Name == key {
			return s
		}
	}
	t.Fatalf("no Service %s on %s", key, machine)
	return api.Service{}
}

func diagnostics(res *Result) string {
	var b strings.Builder
	for _, d := range res.Diagnostics {
		b.WriteString(d.String() + "\n")
	}
	return b.String()
}

func TestNoDesired(t *testing.T) {
	if _, err := Compute(Input{}); !errors.Is(err, ErrNoDesired) {
		t.Fatalf("got %v, want ErrNoDesired", err)
	}
}

func TestPodCIDRs(t *testing.T) {
	t.Run("explicit, remembered and new never overlap", func(t *testing.T) {
		d := repo(t, labCluster, 3)
		d.Machines()[1].Spec.PodCIDR = "198.18.65.0/24"
		mem := Memory{PodCIDRs: map[string]netip.Prefix{
			"m1": netip.MustParsePrefix("198.18.65.0/24"), // taken by m2's own: m1 moves
			"m3": netip.MustParsePrefix("198.18.99.0/24"),
		}}
		res := compute(t, Input{Desired: d, Machines: healthy("m1", "m2", "m3"), Memory: mem})
		if got := res.Networks["m2"].PodCIDR.String(); got != "198.18.65.0/24" {
			t.Errorf("m2 = %s, want its own 198.18.65.0/24", got)
		}
		if got := res.Networks["m3"].PodCIDR.String(); got != "198.18.99.0/24" {
			t.Errorf("m3 = %s, want the remembered 198.18.99.0/24", got)
		}
		m1 := res.Networks["m1"].PodCIDR
		if !m1.IsValid() || m1.Overlaps(res.Networks["m2"].PodCIDR) || m1.Overlaps(res.Networks["m3"].PodCIDR) || m1.Bits() != 24 {
			t.Errorf("m1 = %s", m1)
		}
		if !strings.Contains(diagnostics(res), "pod CIDR moves from 198.18.65.0/24") {
			t.Errorf("no warning of m1's move:\n%s", diagnostics(res))
		}
		for name, n := range res.Networks {
			for _, r := range n.Routes {
				if r.Machine == name || r.CIDR == n.PodCIDR {
					t.Errorf("%s has a route to its own pods", name)
				}
			}
			if len(n.Routes) != 2 {
				t.Errorf("%s has %d routes, want 2", name, len(n.Routes))
			}
		}
	})
	t.Run("mask size and exhaustion", func(t *testing.T) {
		d := repo(t, "  podCIDR: 198.18.64.0/23\n  serviceCIDR: 198.19.0.0/16\n  podCIDRMaskSize: 24\n", 3)
		res := compute(t, Input{Desired: d})
		valid := 0
		for _, n := range res.Networks {
			if n.PodCIDR.IsValid() {
				valid++
			}
		}
		if valid != 2 || !strings.Contains(diagnostics(res), "no /24 left in pod CIDR 198.18.64.0/23 for machine") {
			t.Errorf("%d machines got a CIDR; diagnostics:\n%s", valid, diagnostics(res))
		}
		d = repo(t, "  podCIDR: 198.18.64.0/18\n  serviceCIDR: 198.19.0.0/16\n  podCIDRMaskSize: 26\n", 1)
		if got := compute(t, Input{Desired: d}).Networks["m1"].PodCIDR.Bits(); got != 26 {
			t.Errorf("podCIDRMaskSize 26 gave a /%d", got)
		}
	})
}

func TestClusterIPs(t *testing.T) {
	t.Run("explicit wins over memory; the loser moves", func(t *testing.T) {
		d := repo(t, labCluster, 1,
			svcYAML("a", "  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			svcYAML("b", "  ports: [{port: 80}]\n"),
			svcYAML("c", "  ports: [{port: 80}]\n"))
		mem := Memory{ClusterIPs: map[string]netip.Addr{
			"default/b": netip.MustParseAddr("198.19.0.10"),
			"default/c": netip.MustParseAddr("198.19.0.20"),
		}}
		res := compute(t, Input{Desired: d, Memory: mem})
		a, b, c := svcOf(t, res, "m1", "default/a"), svcOf(t, res, "m1", "default/b"), svcOf(t, res, "m1", "default/c")
		if a.ClusterIPs[0].String() != "198.19.0.10" || c.ClusterIPs[0].String() != "198.19.0.20" {
			t.Errorf("a = %v, c = %v", a.ClusterIPs, c.ClusterIPs)
		}
		if len(b.ClusterIPs) != 1 || b.ClusterIPs[0] == a.ClusterIPs[0] || b.ClusterIPs[0] == c.ClusterIPs[0] {
			t.Errorf("b = %v", b.ClusterIPs)
		}
		if !strings.Contains(diagnostics(res), "clusterIP 198.19.0.10 moves: Service default/a now has it") {
			t.Errorf("diagnostics:\n%s", diagnostics(res))
		}
	})
	t.Run("reserved addresses and exhaustion", func(t *testing.T) {
		// A /29 gives out .2 to .6: not the network, first or broadcast
		// address.
		var docs []string
		for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
			docs = append(docs, svcYAML(n, "  ports: [{port: 80}]\n"))
		}
		docs = append(docs, svcYAML("none", "  clusterIP: None\n  ports: [{port: 80}]\n"),
			svcYAML("ext", "  type: ExternalName\n  externalName: example.com\n"))
		d := repo(t, "  podCIDR: 198.18.64.0/18\n  serviceCIDR: 198.19.0.0/29\n", 1, docs...)
		res := compute(t, Input{Desired: d})
		var got []string
		for _, s := range res.Networks["m1"].Services {
			for _, a := range s.ClusterIPs {
				got = append(got, a.String())
			}
			if (s.Name == "none" || s.Name == "ext") && len(s.ClusterIPs) > 0 {
				t.Errorf("%s got %v", s.Name, s.ClusterIPs)
			}
		}
		slices.Sort(got)
		if want := []string{"198.19.0.2", "198.19.0.3", "198.19.0.4", "198.19.0.5", "198.19.0.6"}; !slices.Equal(got, want) {
			t.Errorf("allocated %v, want %v", got, want)
		}
		if !strings.Contains(diagnostics(res), "the service CIDR 198.19.0.0/29 is exhausted") {
			t.Errorf("diagnostics:\n%s", diagnostics(res))
		}
	})
	t.Run("an explicit reserved address is refused", func(t *testing.T) {
		d := repo(t, labCluster, 1, svcYAML("a", "  clusterIP: 198.19.0.1\n  ports: [{port: 80}]\n"))
		res := compute(t, Input{Desired: d})
		if ips := svcOf(t, res, "m1", "default/a").ClusterIPs; len(ips) != 0 {
			t.Errorf("got %v", ips)
		}
		if !strings.Contains(diagnostics(res), "repo.yaml:") || !strings.Contains(diagnostics(res), "clusterIP 198.19.0.1 is not one the service CIDR") {
			t.Errorf("diagnostics:\n%s", diagnostics(res))
		}
	})
}

func TestNodePorts(t *testing.T) {
	d := repo(t, labCluster, 1,
		svcYAML("dns", "  type: NodePort\n  ports:\n    - {name: udp, port: 53, protocol: UDP}\n    - {name: tcp, port: 53, protocol: TCP}\n    - {name: web, port: 80, nodePort: 30080}\n"),
		svcYAML("lb-no-ports", "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n"),
		svcYAML("plain", "  ports: [{port: 80}]\n"))
	res := compute(t, Input{Desired: d, Memory: Memory{NodePorts: map[string]int32{"default/dns:53": 30080, "default/plain:80": 31000}}})
	dns := svcOf(t, res, "m1", "default/dns")
	if dns.Ports[0].NodePort == 0 || dns.Ports[0].NodePort != dns.Ports[1].NodePort {
		t.Errorf("TCP and UDP of port 53 got %d and %d, want one node port", dns.Ports[0].NodePort, dns.Ports[1].NodePort)
	}
	if dns.Ports[0].NodePort == 30080 || dns.Ports[2].NodePort != 30080 {
		t.Errorf("the explicit 30080 must win over memory: %+v", dns.Ports)
	}
	if p := svcOf(t, res, "m1", "default/lb-no-ports").Ports[0].NodePort; p != 0 {
		t.Errorf("allocateLoadBalancerNodePorts false got %d", p)
	}
	if p := svcOf(t, res, "m1", "default/plain").Ports[0].NodePort; p != 0 {
		t.Errorf("a ClusterIP Service got node port %d", p)
	}
	if _, kept := res.Memory.NodePorts["default/plain:80"]; kept {
		t.Error("memory keeps a node port nobody has")
	}
	again := compute(t, Input{Desired: d, Memory: res.Memory})
	if !slices.Equal(svcOf(t, again, "m1", "default/dns").Ports, dns.Ports) {
		t.Error("node ports changed on the next pass")
	}
}

func TestLoadBalancer(t *testing.T) {
	cluster := labCluster + "  loadBalancer:\n    pools: [198.18.0.240-198.18.0.241]\n    machineSelector: {matchExpressions: [{key: n, operator: NotIn, values: [\"3\"]}]}\n"
	d := repo(t, cluster, 3,
		svcYAML("a", "  type: LoadBalancer\n  loadBalancerIP: 198.18.0.241\n  ports: [{port: 80}]\n"),
		svcYAML("b", "  type: LoadBalancer\n  loadBalancerIP: 198.18.0.99\n  ports: [{port: 80}]\n"),
		svcYAML("c", "  type: LoadBalancer\n  ports: [{port: 80}]\n"))
	res := compute(t, Input{Desired: d, Machines: healthy("m1", "m2", "m3")})
	a, b := svcOf(t, res, "m1", "default/a"), svcOf(t, res, "m1", "default/b")
	if a.LoadBalancerIPs[0].String() != "198.18.0.241" || b.LoadBalancerIPs[0].String() != "198.18.0.240" {
		t.Errorf("a = %v, b = %v", a.LoadBalancerIPs, b.LoadBalancerIPs)
	}
	ds := diagnostics(res)
	if !strings.Contains(ds, "loadBalancerIP 198.18.0.99 is in none of the Cluster's spec.loadBalancer.pools") ||
		!strings.Contains(ds, "Service default/c: spec.type: the Cluster's spec.loadBalancer.pools are exhausted") {
		t.Errorf("diagnostics:\n%s", ds)
	}
	holder := func(res *Result, a netip.Addr) []string {
		var hs []string
		for name, n := range res.Networks {
			if slices.Contains(n.HeldIPs, a) {
				hs = append(hs, name)
			}
		}
		return hs
	}
	ip := a.LoadBalancerIPs[0]
	first := holder(res, ip)
	if len(first) != 1 || first[0] == "m3" {
		t.Fatalf("held by %v, want one of m1 and m2 (the selector leaves m3 out)", first)
	}
	other := map[string]string{"m1": "m2", "m2": "m1"}[first[0]]
	// Healthy: stays, whatever the order of machines.
	ms := healthy("m3", "m2", "m1")
	if got := holder(compute(t, Input{Desired: d, Machines: ms, Memory: res.Memory}), ip); !slices.Equal(got, first) {
		t.Errorf("moved to %v while %s is healthy", got, first[0])
	}
	// Its holder fails: it moves, and stays moved when the holder is back.
	ms = healthy("m1", "m2", "m3")
	for i := range ms {
		if ms[i].Name == first[0] {
			ms[i].Healthy = false
		}
	}
	moved := compute(t, Input{Desired: d, Machines: ms, Memory: res.Memory})
	if got := holder(moved, ip); !slices.Equal(got, []string{other}) {
		t.Errorf("held by %v after %s failed, want %s", got, first[0], other)
	}
	if !strings.Contains(diagnostics(moved), "moves from machine "+first[0]+" to "+other+": its network is not healthy") {
		t.Errorf("diagnostics:\n%s", diagnostics(moved))
	}
	back := compute(t, Input{Desired: d, Machines: healthy("m1", "m2", "m3"), Memory: moved.Memory})
	if got := holder(back, ip); !slices.Equal(got, []string{other}) {
		t.Errorf("held by %v when %s came back, want it to stay with %s", got, first[0], other)
	}
	// Nobody healthy: it stays where it was.
	none := compute(t, Input{Desired: d, Memory: back.Memory})
	if got := holder(none, ip); !slices.Equal(got, []string{other}) {
		t.Errorf("held by %v with no healthy machine", got)
	}
}

func TestEndpoints(t *testing.T) {
	d := repo(t, labCluster, 2,
		svcYAML("web", "  selector: {app: web}\n  ports:\n    - {name: http, port: 80, targetPort: http}\n    - {name: udp, port: 53, protocol: UDP, targetPort: dns}\n"),
		svcYAML("nosel", "  ports: [{port: 80}]\n"))
	ms := healthy("m1", "m2")
	ready := running("default", "a", "198.18.64.2", map[string]string{"app": "web", "x": "y"}, port("http", 8080),
		corev1.ContainerPort{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP})
	notReady := running("default", "b", "198.18.64.3", map[string]string{"app": "web"}, port("http", 8081))
	notReady.Status.Ready = false
	stopping := running("default", "c", "198.18.65.2", map[string]string{"app": "web"}, port("http", 8080))
	stopping.Stopping = true
	terminating := running("default", "d", "198.18.65.3", map[string]string{"app": "web"}, port("http", 8080))
	terminating.Status.Terminating = true
	other := running("other", "e", "198.18.65.4", map[string]string{"app": "web"}, port("http", 8080))
	failed := running("default", "f", "198.18.65.5", map[string]string{"app": "web"}, port("http", 8080))
	failed.Status.Phase = corev1.PodFailed
	wrongProto := running("default", "g", "198.18.65.6", map[string]string{"app": "web"}, port("dns", 53))
	ms[0].Pods = []Pod{ready, notReady}
	ms[1].Pods = []Pod{stopping, terminating, other, failed, wrongProto}
	res := compute(t, Input{Desired: d, Machines: ms})
	got := map[string]api.Endpoint{}
	for _, e := range svcOf(t, res, "m2", "default/web").Endpoints {
		got[e.Pod] = e
	}
	want := map[string]api.Endpoint{
		"default/a": {IP: netip.MustParseAddr("198.18.64.2"), Machine: "m1", Pod: "default/a", Ready: true,
			Ports: []api.EndpointPort{{Name: "http", Protocol: "TCP", Port: 8080}, {Name: "udp", Protocol: "UDP", Port: 5353}}},
		"default/b": {IP: netip.MustParseAddr("198.18.64.3"), Machine: "m1", Pod: "default/b",
			Ports: []api.EndpointPort{{Name: "http", Protocol: "TCP", Port: 8081}}},
		"default/c": {IP: netip.MustParseAddr("198.18.65.2"), Machine: "m2", Pod: "default/c", Terminating: true,
			Ports: []api.EndpointPort{{Name: "http", Protocol: "TCP", Port: 8080}}},
		"default/d": {IP: netip.MustParseAddr("198.18.65.3"), Machine: "m2", Pod: "default/d", Terminating: true,
			Ports: []api.EndpointPort{{Name: "http", Protocol: "TCP", Port: 8080}}},
		// A TCP port named dns is not the UDP target port dns.
		"default/g": {IP: netip.MustParseAddr("198.18.65.6"), Machine: "m2", Pod: "default/g", Ready: true},
	}
	if len(got) != len(want) {
		t.Errorf("endpoints of %v, want %d", slices.Sorted(maps.Keys(got)), len(want))
	}
	for k, w := range want {
		if g := got[k]; !endpointEqual(g, w) {
			t.Errorf("%s:\ngot  %+v\nwant %+v", k, g, w)
		}
	}
	if eps := svcOf(t, res, "m1", "default/nosel").Endpoints; len(eps) != 0 {
		t.Errorf("a Service without selector has endpoints %v", eps)
	}
}

func endpointEqual(a, b api.Endpoint) bool {
	return a.IP == b.IP && a.Machine == b.Machine && a.Pod == b.Pod && a.Ready == b.Ready && a.Terminating == b.Terminating &&
		a.Hostname == b.Hostname && a.Subdomain == b.Subdomain && slices.Equal(a.Ports, b.Ports)
}

func TestNodePortSharedWithExplicit(t *testing.T) {
	d := repo(t, labCluster, 1, svcYAML("dns", "  type: NodePort\n  externalIPs: [198.18.0.99]\n  ports:\n    - {name: tcp, port: 53, nodePort: 30053}\n    - {name: udp, port: 53, protocol: UDP}\n"))
	res := compute(t, Input{Desired: d})
	if ps := svcOf(t, res, "m1", "default/dns").Ports; ps[0].NodePort != 30053 || ps[1].NodePort != 30053 {
		t.Errorf("ports %+v: want UDP 53 to share TCP 53's explicit node port", ps)
	}
	if !strings.Contains(diagnostics(res), "warning: Service default/dns: spec.externalIPs: externalIPs are not routed") {
		t.Errorf("diagnostics:\n%s", diagnostics(res))
	}
}

// TestSingleStack: addresses of the other family (an IPv6 machine address,
// an IPv6 pod address in an IPv4 pod network) are left out rather than
// sent to agents that program one family.
func TestSingleStack(t *testing.T) {
	d := repo(t, labCluster, 1, svcYAML("web", "  selector: {app: web}\n  ports: [{port: 80}]\n"),
		"apiVersion: berth.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: v6\nspec:\n  address: \"2001:db8::11\"\n")
	ms := healthy("m1", "v6")
	ms[0].Pods = []Pod{running("default", "a", "198.18.64.2", map[string]string{"app": "web"}), running("default", "b", "2001:db8::2", map[string]string{"app": "web"})}
	res := compute(t, Input{Desired: d, Machines: ms})
	if ips := res.Networks["v6"].NodeIPs; len(ips) != 0 {
		t.Errorf("v6 node IPs %v", ips)
	}
	if eps := svcOf(t, res, "m1", "default/web").Endpoints; len(eps) != 1 || eps[0].Pod != "default/a" {
		t.Errorf("endpoints %+v", eps)
	}
	if !strings.Contains(diagnostics(res), "no IPv4 address for machine v6") {
		t.Errorf("diagnostics:\n%s", diagnostics(res))
	}
}
