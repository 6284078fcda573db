package network

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"pgregory.net/rapid"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

// fleetGen draws a repository (machines, Services of every type, an
// Ingress routing to each Service, a policy) and what the machines report.
func fleetGen(t *rapid.T) Input {
	nm := rapid.IntRange(1, 5).Draw(t, "machines")
	var docs []string
	docs = append(docs, "apiVersion: berth.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n"+
		"  podCIDR: 198.18.64.0/20\n  serviceCIDR: 198.19.0.0/"+rapid.SampledFrom([]string{"24", "28"}).Draw(t, "svcbits")+"\n"+
		"  loadBalancer: {pools: [198.18.0.240/29]}\n  ingress: {machineSelector: {}}\n")
	for i := 1; i <= nm; i++ {
		own := ""
		if rapid.Bool().Draw(t, fmt.Sprint("own", i)) {
			own = fmt.Sprintf("  podCIDR: 198.18.%d.0/24\n", 64+i)
		}
		docs = append(docs, fmt.Sprintf("apiVersion: berth.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: m%d\nspec:\n  address: 198.18.0.%d\n%s", i, 10+i, own))
	}
	namespaces := []string{"default", "ns1"}
	ns := rapid.SampledFrom(namespaces)
	ns1 := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns1\n  labels: {team: a}\n"
	docs = append(docs, ns1)
	nodePorts := map[int]bool{}
	nsv := rapid.IntRange(0, 12).Draw(t, "services")
	for i := range nsv {
		n := ns.Draw(t, "ns")
		typ := rapid.SampledFrom([]string{"ClusterIP", "NodePort", "LoadBalancer", "None", "ExternalName"}).Draw(t, "type")
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: s%d\n  namespace: %s\nspec:\n", i, n)
		switch typ {
		case "ExternalName":
			b.WriteString("  type: ExternalName\n  externalName: example.com\n")
			docs = append(docs, b.String())
			continue
		case "None":
			b.WriteString("  clusterIP: None\n")
		default:
			fmt.Fprintf(&b, "  type: %s\n", typ)
			if rapid.IntRange(0, 3).Draw(t, "explicitIP") == 0 {
				fmt.Fprintf(&b, "  clusterIP: 198.19.0.%d\n", 2+i)
			}
		}
		if rapid.IntRange(0, 4).Draw(t, "noselector") > 0 {
			fmt.Fprintf(&b, "  selector: {app: a%d}\n", rapid.IntRange(0, 3).Draw(t, "app"))
		}
		b.WriteString("  ports:\n")
		for j := range rapid.IntRange(1, 2).Draw(t, "ports") {
			fmt.Fprintf(&b, "    - name: p%d\n      port: %d\n", j, 80+j)
			if rapid.Bool().Draw(t, "named") {
				b.WriteString("      targetPort: http\n")
			}
			if typ == "NodePort" && rapid.IntRange(0, 3).Draw(t, "explicitNodePort") == 0 {
				np := 30000 + i*2 + j
				if !nodePorts[np] {
					nodePorts[np] = true
					fmt.Fprintf(&b, "      nodePort: %d\n", np)
				}
			}
		}
		docs = append(docs, b.String())
		docs = append(docs, fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: i%d\n  namespace: %s\nspec:\n  ingressClassName: berth\n"+
			"  rules: [{host: s%d.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s%d, port: {name: p0}}}}]}}]\n", i, n, i, i))
	}
	docs = append(docs, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\nspec:\n  podSelector: {matchLabels: {app: a1}}\n"+
		"  ingress: [{from: [{namespaceSelector: {matchLabels: {team: a}}}], ports: [{port: http}]}]\n")
	policies := []string{
		"  podSelector: {}\n",
		"  podSelector: {matchExpressions: [{key: app, operator: In, values: [a0, a2]}]}\n  policyTypes: [Egress]\n" +
			"  egress: [{to: [{ipBlock: {cidr: 198.18.0.0/15, except: [198.18.72.0/24]}}], ports: [{port: http}, {port: 53, protocol: UDP}]}]\n",
		"  podSelector: {matchLabels: {app: a2}}\n  egress: [{to: [{podSelector: {matchLabels: {app: a3}}}], ports: [{port: http}, {port: 9000, endPort: 9010}]}]\n" +
			"  ingress: [{from: [{podSelector: {}}, {namespaceSelector: {}}]}, {from: [{podSelector: {matchLabels: {app: none}}}]}]\n",
	}
	for i, p := range policies {
		if rapid.Bool().Draw(t, fmt.Sprint("policy", i)) {
			docs = append(docs, fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: q%d\n  namespace: %s\nspec:\n%s", i, ns.Draw(t, "policyns"), p))
		}
	}
	d, err := render.Load(t.Context(), fstest.MapFS{"repo.yaml": {Data: []byte(strings.Join(docs, "\n---\n"))}}, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range d.Diagnostics {
		if x.Severity == render.SeverityError {
			t.Fatalf("generated repository: %s", x)
		}
	}

	in := Input{Desired: d}
	ip := 0
	for i := 1; i <= nm; i++ {
		m := Machine{Name: fmt.Sprintf("m%d", i), Reachable: rapid.IntRange(0, 4).Draw(t, "reachable") > 0}
		m.Healthy = m.Reachable && rapid.IntRange(0, 4).Draw(t, "healthy") > 0
		for range rapid.IntRange(0, 6).Draw(t, "pods") {
			ip++
			n := ns.Draw(t, "podns")
			labels := map[string]string{"app": fmt.Sprintf("a%d", rapid.IntRange(0, 3).Draw(t, "podapp"))}
			p := running(n, fmt.Sprintf("pod%d", ip), fmt.Sprintf("198.18.72.%d", ip), labels, port("http", int32(rapid.IntRange(8000, 8003).Draw(t, "http"))))
			p.Status.Ready = rapid.Bool().Draw(t, "ready")
			p.Status.Terminating = rapid.IntRange(0, 4).Draw(t, "terminating") == 0
			p.Stopping = rapid.IntRange(0, 4).Draw(t, "stopping") == 0
			if rapid.IntRange(0, 4).Draw(t, "nospec") == 0 {
				p.Spec = nil
			}
			m.Pods = append(m.Pods, p)
		}
		in.Machines = append(in.Machines, m)
	}
	// Memory that may be stale or wrong.
	if rapid.Bool().Draw(t, "memory") {
		in.Memory = Memory{ClusterIPs: map[string]netip.Addr{}, NodePorts: map[string]int32{}, PodCIDRs: map[string]netip.Prefix{}, LoadBalancerIPs: map[string]netip.Addr{}, Holders: map[string]string{}}
		for i := range nsv {
			key := fmt.Sprintf("%s/s%d", ns.Draw(t, "memns"), i)
			in.Memory.ClusterIPs[key] = netip.AddrFrom4([4]byte{198, 19, 0, byte(rapid.IntRange(0, 255).Draw(t, "memip"))})
			in.Memory.NodePorts[key+":80"] = int32(rapid.IntRange(29990, 30010).Draw(t, "memport"))
			in.Memory.LoadBalancerIPs[key] = netip.AddrFrom4([4]byte{198, 18, 0, byte(rapid.IntRange(238, 248).Draw(t, "memlb"))})
			in.Memory.Holders[key] = fmt.Sprintf("m%d", rapid.IntRange(0, 6).Draw(t, "memholder"))
		}
		for i := 1; i <= nm; i++ {
			in.Memory.PodCIDRs[fmt.Sprintf("m%d", i)] = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(rapid.IntRange(60, 80).Draw(t, "memcidr")), 0}), 24)
		}
	}
	return in
}

func TestPropertyDeterministicAndOrderFree(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := fleetGen(t)
		a, err := Compute(in)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Compute(in)
		if !reflect.DeepEqual(a, b) {
			t.Fatal("two runs on one input differ")
		}
		// The same fleet in another order.
		shuffled := in
		d := *in.Desired
		d.Objects = rapid.Permutation(in.Desired.Objects).Draw(t, "objects")
		shuffled.Desired = &d
		shuffled.Machines = rapid.Permutation(in.Machines).Draw(t, "order")
		for i := range shuffled.Machines {
			shuffled.Machines[i].Pods = rapid.Permutation(shuffled.Machines[i].Pods).Draw(t, "pods")
		}
		c, _ := Compute(shuffled)
		if !reflect.DeepEqual(a.Networks, c.Networks) || !reflect.DeepEqual(a.Memory, c.Memory) || !reflect.DeepEqual(a.Diagnostics, c.Diagnostics) {
			t.Fatal("the same fleet in another order gives another result")
		}
	})
}

func TestPropertyStableAcrossPasses(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := fleetGen(t)
		a, _ := Compute(in)
		// Memory goes through JSON, as it does through the status branch.
		b, err := json.Marshal(a.Memory)
		if err != nil {
			t.Fatal(err)
		}
		var mem Memory
		if err := json.Unmarshal(b, &mem); err != nil {
			t.Fatal(err)
		}
		in.Memory = mem
		next, _ := Compute(in)
		if !reflect.DeepEqual(a.Networks, next.Networks) {
			t.Fatal("the next pass with the memory of this one changes the Networks")
		}
		if !reflect.DeepEqual(normalize(a.Memory), normalize(next.Memory)) {
			t.Fatalf("memory changes: %+v then %+v", a.Memory, next.Memory)
		}
	})
}

// TestPropertyOthersKeepTheirs removes a Service and brings it back: no
// other Service's addresses or ports move, either time.
func TestPropertyOthersKeepTheirs(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := fleetGen(t)
		var svcs []int
		for i, o := range in.Desired.Objects {
			if o.Kind == "Service" {
				svcs = append(svcs, i)
			}
		}
		if len(svcs) == 0 {
			return
		}
		drop := rapid.SampledFrom(svcs).Draw(t, "drop")
		gone := in.Desired.Objects[drop].Namespace + "/" + in.Desired.Objects[drop].Name
		before, _ := Compute(in)

		without := in
		d := *in.Desired
		d.Objects = append(append([]*render.Object{}, in.Desired.Objects[:drop]...), in.Desired.Objects[drop+1:]...)
		without.Desired, without.Memory = &d, before.Memory
		mid, _ := Compute(without)
		sameAllocations(t, before.Memory, mid.Memory, gone)

		in.Memory = mid.Memory
		after, _ := Compute(in)
		sameAllocations(t, mid.Memory, after.Memory, gone)
	})
}

// sameAllocations checks that every allocation in a, except those of the
// Service skip, is in b.
func sameAllocations(t *rapid.T, a, b Memory, skip string) {
	for k, v := range a.ClusterIPs {
		if k != skip && b.ClusterIPs[k] != v {
			t.Fatalf("clusterIP of %s moved from %s to %s", k, v, b.ClusterIPs[k])
		}
	}
	for k, v := range a.NodePorts {
		if !strings.HasPrefix(k, skip+":") && b.NodePorts[k] != v {
			t.Fatalf("node port %s moved from %d to %d", k, v, b.NodePorts[k])
		}
	}
	for k, v := range a.LoadBalancerIPs {
		if k != skip && b.LoadBalancerIPs[k] != v {
			t.Fatalf("LoadBalancer address of %s moved from %s to %s", k, v, b.LoadBalancerIPs[k])
		}
	}
	for k, v := range a.PodCIDRs {
		if b.PodCIDRs[k] != v {
			t.Fatalf("pod CIDR of %s moved from %s to %s", k, v, b.PodCIDRs[k])
		}
	}
}

func normalize(m Memory) Memory {
	b, _ := json.Marshal(m)
	var out Memory
	_ = json.Unmarshal(b, &out)
	return out
}

func TestPropertyInvariants(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := fleetGen(t)
		res, _ := Compute(in)
		svcCIDR := netip.MustParsePrefix(in.Desired.Cluster.Spec.ServiceCIDR)
		podCIDR := netip.MustParsePrefix(in.Desired.Cluster.Spec.PodCIDR)
		pool, _ := v1alpha1.ParseAddressRange("198.18.0.240/29")

		var any *api.Network
		for _, n := range res.Networks {
			any = n
		}
		// Pod CIDRs never overlap, and new ones come from the pod CIDR.
		var cidrs []netip.Prefix
		for _, n := range res.Networks {
			if !n.PodCIDR.IsValid() {
				continue
			}
			for _, c := range cidrs {
				if c.Overlaps(n.PodCIDR) {
					t.Fatalf("pod CIDRs %s and %s overlap", c, n.PodCIDR)
				}
			}
			if !podCIDR.Contains(n.PodCIDR.Addr()) {
				t.Fatalf("pod CIDR %s outside %s", n.PodCIDR, podCIDR)
			}
			cidrs = append(cidrs, n.PodCIDR)
		}
		clusterIPs := map[netip.Addr]string{}
		nodePorts := map[int32]string{}
		lbIPs := map[netip.Addr]string{}
		terminating := map[string]bool{}
		for _, m := range in.Machines {
			for _, p := range m.Pods {
				if p.Stopping || p.Status.Terminating {
					terminating[p.Status.Namespace+"/"+p.Status.Name] = true
				}
			}
		}
		readyAddrs := map[netip.Addr]bool{}
		if any == nil {
			return
		}
		for _, s := range any.Services {
			key := s.Namespace + "/" + s.Name
			for _, a := range s.ClusterIPs {
				if prev, dup := clusterIPs[a]; dup {
					t.Fatalf("clusterIP %s of %s and %s", a, prev, key)
				}
				clusterIPs[a] = key
				if !svcCIDR.Contains(a) || a == svcCIDR.Addr() || a == svcCIDR.Addr().Next() || a == lastAddrOf(svcCIDR) {
					t.Fatalf("clusterIP %s of %s: outside %s or reserved", a, key, svcCIDR)
				}
			}
			if (s.Headless || s.ExternalName != "") && len(s.ClusterIPs) > 0 {
				t.Fatalf("%s is headless or ExternalName and has a clusterIP", key)
			}
			seenHere := map[int32]bool{}
			for _, p := range s.Ports {
				if p.NodePort == 0 || seenHere[p.NodePort] {
					continue
				}
				seenHere[p.NodePort] = true
				if prev, dup := nodePorts[p.NodePort]; dup {
					t.Fatalf("node port %d of %s and %s", p.NodePort, prev, key)
				}
				nodePorts[p.NodePort] = key
				if p.NodePort < 30000 || p.NodePort > 32767 {
					t.Fatalf("node port %d", p.NodePort)
				}
			}
			for _, a := range s.LoadBalancerIPs {
				if prev, dup := lbIPs[a]; dup || !pool.Contains(a) {
					t.Fatalf("LoadBalancer address %s of %s (also %q) outside the pool or taken", a, key, prev)
				}
				lbIPs[a] = key
				holders := 0
				for name, n := range res.Networks {
					for _, h := range n.HeldIPs {
						if h == a {
							holders++
							if m := machineIn(in, name); m == nil || !m.Healthy {
								if anyHealthy(in) {
									t.Fatalf("%s held by %s, which is not healthy", a, name)
								}
							}
						}
					}
				}
				if holders > 1 || holders == 0 && anyHealthy(in) {
					t.Fatalf("%s has %d holders", a, holders)
				}
			}
			for _, e := range s.Endpoints {
				if terminating[e.Pod] && (e.Ready || !e.Terminating) {
					t.Fatalf("terminating pod %s is a ready endpoint of %s", e.Pod, key)
				}
				if e.Ready {
					readyAddrs[e.IP] = true
				}
			}
		}
		if ing := any.Ingress; ing != nil {
			for _, r := range ing.Rules {
				for _, p := range r.Paths {
					for _, ap := range p.Backend.Endpoints {
						if !readyAddrs[ap.Addr()] {
							t.Fatalf("ingress backend %s is not a ready endpoint", ap)
						}
					}
				}
			}
		}
		if any.Ingress == nil {
			t.Fatal("every machine is an ingress machine")
		}
	})
}

func lastAddrOf(p netip.Prefix) netip.Addr { return v1alpha1.RangeOf(p).Last }

func machineIn(in Input, name string) *Machine {
	for i := range in.Machines {
		if in.Machines[i].Name == name {
			return &in.Machines[i]
		}
	}
	return nil
}

func anyHealthy(in Input) bool {
	for _, m := range in.Machines {
		if m.Healthy {
			return true
		}
	}
	return false
}

// TestPropertyAgentAccepts checks what an agent refuses a whole Network
// for (nodes/agent's validateNetwork): IPv4 only, masked prefixes, no
// route to the machine's own pods or twice to one CIDR, ports in range,
// peers with addresses, held addresses once.
func TestPropertyAgentAccepts(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		res, _ := Compute(fleetGen(t))
		v4 := func(where string, a netip.Addr) {
			if !a.IsValid() || !a.Is4() || a.IsUnspecified() {
				t.Fatalf("%s: %s is not an IPv4 address", where, a)
			}
		}
		prefix := func(where string, p netip.Prefix) {
			if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
				t.Fatalf("%s: %s is not a masked IPv4 prefix", where, p)
			}
		}
		port := func(where string, p int32) {
			if p < 1 || p > 65535 {
				t.Fatalf("%s: port %d", where, p)
			}
		}
		for name, n := range res.Networks {
			if n.Machine != name || n.Generation != 0 {
				t.Fatalf("%s: machine %q generation %d", name, n.Machine, n.Generation)
			}
			if n.PodCIDR.IsValid() {
				prefix(name+" podCIDR", n.PodCIDR)
			}
			for _, p := range append(append([]netip.Prefix{}, n.ClusterCIDRs...), n.ServiceCIDRs...) {
				prefix(name+" cluster or service CIDR", p)
			}
			for _, a := range n.NodeIPs {
				v4(name+" node IP", a)
			}
			dsts := map[netip.Prefix]bool{}
			for _, r := range n.Routes {
				prefix(name+" route", r.CIDR)
				v4(name+" route via", r.Via)
				if n.PodCIDR.IsValid() && r.CIDR.Overlaps(n.PodCIDR) || dsts[r.CIDR] {
					t.Fatalf("%s: route to %s", name, r.CIDR)
				}
				dsts[r.CIDR] = true
			}
			seen := map[string]bool{}
			for _, s := range n.Services {
				key := s.Namespace + "/" + s.Name
				if seen[key] {
					t.Fatalf("%s: Service %s twice", name, key)
				}
				seen[key] = true
				for _, a := range append(append([]netip.Addr{}, s.ClusterIPs...), s.LoadBalancerIPs...) {
					v4(key, a)
				}
				for _, p := range s.Ports {
					port(key, p.Port)
				}
				for _, e := range s.Endpoints {
					v4(key+" endpoint", e.IP)
					for _, p := range e.Ports {
						port(key+" endpoint", p.Port)
					}
				}
			}
			for _, p := range n.Policies {
				if len(p.Pods) == 0 {
					t.Fatalf("%s: policy %s/%s selects no pod here", name, p.Namespace, p.Name)
				}
				for _, r := range append(append([]api.PolicyRule{}, p.IngressRules...), p.EgressRules...) {
					for _, peer := range r.Peers {
						if len(peer.IPs) == 0 && !peer.Block.IsValid() {
							t.Fatalf("%s: policy %s: a peer with neither addresses nor block", name, p.Name)
						}
					}
					for _, pp := range r.Ports {
						if pp.Port < 0 || pp.Port > 65535 || pp.EndPort != 0 && (pp.Port == 0 || pp.EndPort < pp.Port) {
							t.Fatalf("%s: policy %s: port %d-%d", name, p.Name, pp.Port, pp.EndPort)
						}
					}
				}
			}
			held := map[netip.Addr]bool{}
			for _, a := range n.HeldIPs {
				v4(name+" held", a)
				if held[a] {
					t.Fatalf("%s: holds %s twice", name, a)
				}
				held[a] = true
			}
		}
	})
}
