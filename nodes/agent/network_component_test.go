package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/agent/network"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/cni"
	"berth.dev/berth/nodes/nft"
	"berth.dev/berth/nodes/runtime/netns"
)

// netAgent is an agent on containerd whose pod network lives in a
// network namespace of the test's own (the "machine"), restartable.
type netAgent struct {
	t       *testing.T
	e       *agentEnv // containerd, registry, directories
	node    string
	machine string // the machine's network namespace
	netDir  string
	app     *network.Applier
}

// The machine's uplink to its peer, in newNetAgent.
var (
	uplinkMachine = netip.MustParsePrefix("198.18.210.1/24")
	uplinkPeer    = netip.MustParsePrefix("198.18.210.2/24")
)

// testNetNS makes a network namespace that goes when the test ends.
func testNetNS(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-netns-")
	if err != nil {
		t.Fatal(err)
	}
	p, err := netns.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Remove(p); err != nil {
			t.Errorf("remove a test namespace: %v", err)
		}
		os.RemoveAll(dir)
	})
	return p
}

// link joins two namespaces with a veth pair (eth0 on both sides) with
// the addresses given; with defaultRoute, a routes everything to b.
func link(a, b string, addrA, addrB netip.Prefix, defaultRoute bool) error {
	ans, err := vnetns.GetFromPath(a)
	if err != nil {
		return err
	}
	defer ans.Close()
	bns, err := vnetns.GetFromPath(b)
	if err != nil {
		return err
	}
	defer bns.Close()
	ah, err := netlink.NewHandleAt(ans)
	if err != nil {
		return err
	}
	defer ah.Close()
	bh, err := netlink.NewHandleAt(bns)
	if err != nil {
		return err
	}
	defer bh.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(bns)}
	if err := ah.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	for _, side := range []struct {
		h    *netlink.Handle
		addr netip.Prefix
	}{{ah, addrA}, {bh, addrB}} {
		l, err := side.h.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := side.h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: side.addr.Addr().AsSlice(), Mask: net.CIDRMask(side.addr.Bits(), 32)}}); err != nil {
			return err
		}
		if err := side.h.LinkSetUp(l); err != nil {
			return err
		}
	}
	if !defaultRoute {
		return nil
	}
	l, err := ah.LinkByName("eth0")
	if err != nil {
		return err
	}
	return ah.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: addrB.Addr().AsSlice()})
}

func requireNetAgent(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.Require(t, filepath.Join(cni.DefaultPluginDir, "bridge"), filepath.Join(cni.DefaultPluginDir, "host-local"), filepath.Join(cni.DefaultPluginDir, "loopback"))
}

// newNetAgent is an agent whose machine has an uplink to a peer namespace
// (its default route).
func newNetAgent(t *testing.T) *netAgent {
	requireNetAgent(t)
	machine, peer := testNetNS(t), testNetNS(t)
	if err := link(machine, peer, uplinkMachine, uplinkPeer, true); err != nil {
		t.Fatal(err)
	}
	return startNetAgent(t, testenv.Containerd(t), testenv.EchoRegistry(t), "m1", machine)
}

// startNetAgent starts the agent of node on machine, with a containerd
// namespace and directories of its own; it is stopped and its pods
// removed when the test ends.
func startNetAgent(t *testing.T, cd *testenv.ContainerdDaemon, reg *testenv.RegistryDaemon, node, machine string) *netAgent {
	a := &netAgent{t: t, node: node, machine: machine}
	e, dir := prepareAgentEnv(t, cd, reg, "net-", func() { a.stop() })
	a.e, a.netDir = e, filepath.Join(dir, "network")
	a.start()
	return a
}

func (a *netAgent) start() {
	t := a.t
	e := a.e
	e.rt = newContainerdRuntime(t, e.cd, e.reg, e.ns, e.rtDir)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	app, err := network.New(network.Options{Pods: e.rt, StateDir: a.netDir, MachineNetNS: a.machine, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a.app = app
	m, err := agent.New(agent.Options{
		Runtime: e.rt, Network: app, StateDir: e.stateDir, LogDir: e.logDir, NodeName: a.node, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.m, e.cancel, e.done = m, cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		m.Run(ctx)
	}()
}

func (a *netAgent) stop() {
	a.e.stop()
	if a.app != nil {
		if err := a.app.Close(); err != nil {
			a.t.Errorf("close the network applier: %v", err)
		}
		a.app = nil
	}
}

// exec runs a command in the pod's container and returns its output.
func (a *netAgent) exec(pod string, cmd ...string) (int, string) {
	a.t.Helper()
	var out strings.Builder
	code, err := a.e.m.Exec(context.Background(), api.ExecRequest{Pod: pod, Command: cmd, Stdout: &out, Stderr: &out, Timeout: 20 * time.Second})
	if err != nil {
		a.t.Fatalf("exec %v in %s: %v", cmd, pod, err)
	}
	return code, out.String()
}

// eventually retries fn until it returns nil or the time is up.
func eventually(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// getIn requests url from inside the namespace at path.
func getIn(path, url string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: netns.Dialer(path), DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), err
}

// lookup asks server (in the namespace at path) for name's A records over
// network (udp or tcp).
func lookup(path, network, server, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := netns.Dial(ctx, path, network, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c := &mdns.Conn{Conn: conn}
	q := new(mdns.Msg)
	q.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if err := c.WriteMsg(q); err != nil {
		return nil, err
	}
	r, err := c.ReadMsg()
	if err != nil {
		return nil, err
	}
	if r.Rcode != mdns.RcodeSuccess {
		return nil, fmt.Errorf("rcode %s", mdns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, nil
}

// A machine's agent with a pod CIDR: two pods get addresses from it and
// reach each other, a Service's ClusterIP reaches its Ready pod from a pod
// and from the machine, the Service's name resolves through the DNS the
// agent serves on the gateway, a removed pod's address goes back to
// host-local, and a restarted agent applies the Network it was given.
func TestComponentPodNetwork(t *testing.T) {
	a := newNetAgent(t)
	ctx := context.Background()
	podCIDR := netip.MustParsePrefix("198.18.200.0/24")
	gateway := "198.18.200.1"
	clusterIP := netip.MustParseAddr("198.19.200.10")
	base := api.Network{
		Generation:   1,
		Machine:      "m1",
		PodCIDR:      podCIDR,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.200.0/23")},
		NodeIPs:      []netip.Addr{uplinkMachine.Addr()},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.200.0/24")},
		// Nothing outside the test's namespaces is ever asked.
		DNS: api.ClusterDNS{Upstreams: []string{"127.0.0.1:1"}},
	}
	if err := a.e.m.SetNetwork(ctx, base); err != nil {
		t.Fatal(err)
	}
	webA, webB := echoPod(a.e, "web-a"), echoPod(a.e, "web-b")
	webA.Spec.Containers[0].Env = append(webA.Spec.Containers[0].Env, corev1.EnvVar{Name: "MY_IP",
		ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}})
	if err := a.e.m.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: []api.Pod{webA, webB}}); err != nil {
		t.Fatal(err)
	}
	readyWithIP := func(s api.PodStatus) bool { return s.Ready && s.PodIP != "" }
	stA := a.e.waitPod("default/web-a", 60*time.Second, "ready with an address", readyWithIP)
	stB := a.e.waitPod("default/web-b", 60*time.Second, "ready with an address", readyWithIP)
	ipA, ipB := netip.MustParseAddr(stA.PodIP), netip.MustParseAddr(stB.PodIP)
	if !podCIDR.Contains(ipA) || !podCIDR.Contains(ipB) || ipA == ipB || ipA.String() == gateway || ipB.String() == gateway {
		t.Fatalf("pod addresses %s and %s; want two pod addresses of %s beside the gateway", ipA, ipB, podCIDR)
	}

	t.Run("PodsReachEachOther", func(t *testing.T) {
		code, out := a.exec("default/web-a", "wget", "-qO-", "http://"+ipB.String()+":8080/")
		if code != 0 || !strings.Contains(out, "pod=web-b") {
			t.Errorf("web-a to web-b by address: exit %d, %q", code, out)
		}
		code, out = a.exec("default/web-b", "wget", "-qO-", "http://"+ipA.String()+":8080/")
		if code != 0 || !strings.Contains(out, "pod=web-a") {
			t.Errorf("web-b to web-a by address: exit %d, %q", code, out)
		}
		// status.podIP reaches the container's environment, and the hosts
		// file names the pod's address.
		if _, out := a.exec("default/web-a", "sh", "-c", "echo $MY_IP"); strings.TrimSpace(out) != ipA.String() {
			t.Errorf("web-a's MY_IP (status.podIP) = %q, want %s", out, ipA)
		}
		if _, out := a.exec("default/web-a", "cat", "/etc/hosts"); !strings.Contains(out, ipA.String()+"\tweb-a") {
			t.Errorf("web-a's hosts file does not name its address:\n%s", out)
		}
	})

	withService := base
	withService.Generation = 2
	withService.Services = []api.Service{{
		Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{clusterIP},
		Ports: []api.ServicePort{{Name: "http", Port: 80}},
		Endpoints: []api.Endpoint{
			{IP: ipB, Machine: "m1", Pod: "default/web-b", Ready: true, Ports: []api.EndpointPort{{Name: "http", Port: 8080}}},
			// Not ready: never routed to, never in DNS.
			{IP: ipA, Machine: "m1", Pod: "default/web-a", Ports: []api.EndpointPort{{Name: "http", Port: 8080}}},
		},
	}}
	withService.Pods = []api.PodAddress{{Namespace: "default", Name: "web-a", IPs: []netip.Addr{ipA}}, {Namespace: "default", Name: "web-b", IPs: []netip.Addr{ipB}}}
	if err := a.e.m.SetNetwork(ctx, withService); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.e.m.Node(ctx); n.Network != (api.NetworkStatus{Generation: 2, Digest: withService.Digest()}) {
		t.Errorf("node's network status %+v", n.Network)
	}

	serviceWorks := func(t *testing.T) {
		t.Helper()
		for i := 0; i < 3; i++ {
			code, out := a.exec("default/web-a", "wget", "-qO-", "http://"+clusterIP.String()+"/")
			if code != 0 || !strings.Contains(out, "pod=web-b") {
				t.Errorf("web-a to the ClusterIP: exit %d, %q; want web-b", code, out)
			}
		}
		eventually(t, 10*time.Second, "the machine to the ClusterIP", func() error {
			body, err := getIn(a.machine, "http://"+clusterIP.String()+"/")
			if err == nil && !strings.Contains(body, "pod=web-b") {
				err = fmt.Errorf("answered %q; want web-b", body)
			}
			return err
		})
	}
	dnsWorks := func(t *testing.T) {
		t.Helper()
		for _, proto := range []string{"udp", "tcp"} {
			eventually(t, 10*time.Second, "lookup over "+proto, func() error {
				got, err := lookup(a.machine, proto, net.JoinHostPort(gateway, "53"), "web.default.svc.cluster.local")
				if err == nil && (len(got) != 1 || got[0] != clusterIP.String()) {
					err = fmt.Errorf("answered %v; want %s", got, clusterIP)
				}
				return err
			})
		}
	}
	t.Run("ServiceClusterIP", serviceWorks)
	t.Run("DNS", func(t *testing.T) {
		dnsWorks(t)
		_, resolv := a.exec("default/web-a", "cat", "/etc/resolv.conf")
		if !strings.Contains(resolv, "nameserver "+gateway) || !strings.Contains(resolv, "search default.svc.cluster.local svc.cluster.local cluster.local") ||
			!strings.Contains(resolv, "ndots:5") {
			t.Errorf("web-a's resolv.conf:\n%s", resolv)
		}
		code, out := a.exec("default/web-a", "/bin/busybox", "nslookup", "web.default.svc.cluster.local")
		if code != 0 || !strings.Contains(out, clusterIP.String()) {
			t.Errorf("nslookup in web-a: exit %d:\n%s", code, out)
		}
		// A pod's own name, from its address.
		got, err := lookup(a.machine, "udp", net.JoinHostPort(gateway, "53"), strings.ReplaceAll(ipB.String(), ".", "-")+".default.pod.cluster.local")
		if err != nil || len(got) != 1 || got[0] != ipB.String() {
			t.Errorf("pod name of web-b: %v, %v", got, err)
		}
	})

	var again api.Network // the Network after web-b was made again
	t.Run("RemovedPodReturnsItsAddress", func(t *testing.T) {
		alloc := filepath.Join(a.netDir, "cni", "ipam", cni.DefaultNetworkName, ipB.String())
		if _, err := os.Stat(alloc); err != nil {
			t.Fatalf("web-b's address is not held by host-local: %v", err)
		}
		// The controller takes web-b out of the Service first.
		noEndpoints := withService
		noEndpoints.Generation = 3
		noEndpoints.Services = []api.Service{withService.Services[0]}
		noEndpoints.Services[0].Endpoints = nil
		if err := a.e.m.SetNetwork(ctx, noEndpoints); err != nil {
			t.Fatal(err)
		}
		if err := a.e.m.SetPods(ctx, api.DesiredPods{Generation: 2, Pods: []api.Pod{webA}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "web-b's address released", func() error {
			if _, err := os.Stat(alloc); !os.IsNotExist(err) {
				return fmt.Errorf("%s still there (%v)", alloc, err)
			}
			return nil
		})
		// A Service without endpoints rejects at once.
		code, _ := a.exec("default/web-a", "wget", "-qO-", "http://"+clusterIP.String()+"/")
		if code == 0 {
			t.Error("the ClusterIP of a Service without endpoints answered")
		}
		// Back with web-b, for what follows.
		if err := a.e.m.SetPods(ctx, api.DesiredPods{Generation: 3, Pods: []api.Pod{webA, webB}}); err != nil {
			t.Fatal(err)
		}
		stB = a.e.waitPod("default/web-b", 60*time.Second, "ready with an address", readyWithIP)
		ipB = netip.MustParseAddr(stB.PodIP)
		again = withService
		again.Generation = 4
		again.Services = []api.Service{withService.Services[0]}
		again.Services[0].Endpoints = []api.Endpoint{{IP: ipB, Machine: "m1", Pod: "default/web-b", Ready: true, Ports: []api.EndpointPort{{Name: "http", Port: 8080}}}}
		if err := a.e.m.SetNetwork(ctx, again); err != nil {
			t.Fatal(err)
		}
		serviceWorks(t)
	})

	t.Run("AgentRestartReappliesNetwork", func(t *testing.T) {
		a.stop()
		// What the agent applied goes away (its DNS server stopped with it).
		if err := deleteTable(a.machine); err != nil {
			t.Fatal(err)
		}
		if _, err := lookup(a.machine, "udp", net.JoinHostPort(gateway, "53"), "web.default.svc.cluster.local"); err == nil {
			t.Fatal("the DNS still answers with the agent stopped")
		}
		a.start()
		a.e.waitPod("default/web-a", 30*time.Second, "adopted and ready", readyWithIP)
		a.e.waitPod("default/web-b", 30*time.Second, "adopted and ready", readyWithIP)
		eventually(t, 20*time.Second, "network status after a restart", func() error {
			n, err := a.e.m.Node(ctx)
			if err == nil && (n.Network.Generation != 4 || n.Network.Error != "") {
				err = fmt.Errorf("status %+v", n.Network)
			}
			return err
		})
		serviceWorks(t)
		dnsWorks(t)
	})

	t.Run("NetworkPolicy", func(t *testing.T) {
		if again.Generation == 0 {
			t.Fatal("needs what RemovedPodReturnsItsAddress sets up")
		}
		ipB := again.Services[0].Endpoints[0].IP
		reach := func(target string) bool {
			code, out := a.exec("default/web-a", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 "+target+" | head -1")
			return code == 0 && strings.Contains(out, "200 OK")
		}
		isolate := func(gen int64, rules ...api.PolicyRule) {
			n := again
			n.Generation = gen
			n.Policies = []api.NetworkPolicy{{Namespace: "default", Name: "web-b", Pods: []netip.Addr{ipB}, Ingress: true, IngressRules: rules}}
			if err := a.e.m.SetNetwork(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		// Ingress isolated with no rule: nothing reaches web-b, directly
		// or through its Service.
		isolate(5)
		if reach(ipB.String() + " 8080") {
			t.Error("web-a reached web-b despite a policy denying all ingress")
		}
		if reach(clusterIP.String() + " 80") {
			t.Error("web-a reached web-b through the Service despite a policy denying all ingress")
		}
		// Allowed from web-a on 8080.
		isolate(6, api.PolicyRule{Peers: []api.PolicyPeer{{IPs: []netip.Addr{ipA}}}, Ports: []api.PolicyPort{{Port: 8080}}})
		if !reach(ipB.String()+" 8080") || !reach(clusterIP.String()+" 80") {
			t.Error("web-a did not reach web-b though the policy allows it")
		}
	})
}

// deleteTable removes berth's nftables table in the namespace at path.
func deleteTable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	s, err := nft.NewSyncer(nft.Options{NetNS: int(f.Fd())})
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Delete(context.Background())
}

// Two machines, each with its agent: a pod on one reaches a pod on the
// other by address through the routes each agent set, and through a
// Service whose only endpoint is on the other machine.
func TestComponentPodNetworkTwoMachines(t *testing.T) {
	requireNetAgent(t)
	cd, reg := testenv.Containerd(t), testenv.EchoRegistry(t)
	m1, m2 := testNetNS(t), testNetNS(t)
	addr1, addr2 := netip.MustParsePrefix("198.18.226.1/24"), netip.MustParsePrefix("198.18.226.2/24")
	if err := link(m1, m2, addr1, addr2, false); err != nil {
		t.Fatal(err)
	}
	a1, a2 := startNetAgent(t, cd, reg, "m1", m1), startNetAgent(t, cd, reg, "m2", m2)
	ctx := context.Background()
	cidr1, cidr2 := netip.MustParsePrefix("198.18.229.0/24"), netip.MustParsePrefix("198.18.230.0/24")
	clusterIP := netip.MustParseAddr("198.19.226.10")
	network := func(node string, own, other netip.Prefix, via netip.Addr, endpoint netip.Addr) api.Network {
		n := api.Network{
			Generation: 1, Machine: node, PodCIDR: own,
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.228.0/22")},
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.226.0/24")},
			Routes:       []api.PodRoute{{CIDR: other, Via: via, Machine: "other"}},
			DNS:          api.ClusterDNS{Upstreams: []string{"127.0.0.1:1"}},
		}
		if endpoint.IsValid() {
			n.Generation = 2
			n.Services = []api.Service{{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{clusterIP},
				Ports: []api.ServicePort{{Port: 80}},
				Endpoints: []api.Endpoint{{IP: endpoint, Machine: "m2", Pod: "default/web-2", Ready: true,
					Ports: []api.EndpointPort{{Port: 8080}}}}}}
		}
		return n
	}
	if err := a1.e.m.SetNetwork(ctx, network("m1", cidr1, cidr2, addr2.Addr(), netip.Addr{})); err != nil {
		t.Fatal(err)
	}
	if err := a2.e.m.SetNetwork(ctx, network("m2", cidr2, cidr1, addr1.Addr(), netip.Addr{})); err != nil {
		t.Fatal(err)
	}
	web1, web2 := echoPod(a1.e, "web-1"), echoPod(a2.e, "web-2")
	if err := a1.e.m.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: []api.Pod{web1}}); err != nil {
		t.Fatal(err)
	}
	if err := a2.e.m.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: []api.Pod{web2}}); err != nil {
		t.Fatal(err)
	}
	readyWithIP := func(s api.PodStatus) bool { return s.Ready && s.PodIP != "" }
	ip1 := netip.MustParseAddr(a1.e.waitPod("default/web-1", 60*time.Second, "ready with an address", readyWithIP).PodIP)
	ip2 := netip.MustParseAddr(a2.e.waitPod("default/web-2", 60*time.Second, "ready with an address", readyWithIP).PodIP)
	if !cidr1.Contains(ip1) || !cidr2.Contains(ip2) {
		t.Fatalf("pod addresses %s and %s; want one of %s and one of %s", ip1, ip2, cidr1, cidr2)
	}
	if code, out := a1.exec("default/web-1", "wget", "-qO-", "http://"+ip2.String()+":8080/"); code != 0 || !strings.Contains(out, "pod=web-2") {
		t.Errorf("web-1 on m1 to web-2 on m2: exit %d, %q", code, out)
	}
	if code, out := a2.exec("default/web-2", "wget", "-qO-", "http://"+ip1.String()+":8080/"); code != 0 || !strings.Contains(out, "pod=web-1") {
		t.Errorf("web-2 on m2 to web-1 on m1: exit %d, %q", code, out)
	}
	// The Service of web-2, seen from m1: its endpoint is not local.
	if err := a1.e.m.SetNetwork(ctx, network("m1", cidr1, cidr2, addr2.Addr(), ip2)); err != nil {
		t.Fatal(err)
	}
	if code, out := a1.exec("default/web-1", "wget", "-qO-", "http://"+clusterIP.String()+"/"); code != 0 || !strings.Contains(out, "pod=web-2") {
		t.Errorf("web-1 to the ClusterIP of web-2's Service: exit %d, %q", code, out)
	}
}
