package network

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/cni"
	"berth.dev/berth/nodes/runtime"
	"berth.dev/berth/nodes/runtime/netns"
)

// pods records what the Applier tells the runtime.
type pods struct {
	mu  sync.Mutex
	set []runtime.PodNetwork
}

func (p *pods) SetPodNetwork(_ context.Context, pn runtime.PodNetwork) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.set = append(p.set, pn)
	return nil
}

func (p *pods) last() runtime.PodNetwork {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.set) == 0 {
		return runtime.PodNetwork{}
	}
	return p.set[len(p.set)-1]
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

var (
	machineAddr = netip.MustParsePrefix("198.18.211.1/24")
	peerAddr    = netip.MustParsePrefix("198.18.211.2/24")
)

// testMachine is a machine namespace joined by a veth pair (eth0 on both
// sides) to a peer namespace; both go when the test ends.
func testMachine(t *testing.T) (machine, peer string) {
	t.Helper()
	return linkedPair(t, machineAddr, peerAddr)
}

// linkedPair is two namespaces joined by a veth pair (eth0 on both sides,
// with the addresses given); both go when the test ends.
func linkedPair(t *testing.T, machineAddr, peerAddr netip.Prefix) (machine, peer string) {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	var err error
	for _, p := range []*string{&machine, &peer} {
		if *p, err = netns.New(dir); err != nil {
			t.Fatal(err)
		}
		path := *p
		t.Cleanup(func() {
			if err := netns.Remove(path); err != nil {
				t.Errorf("remove test namespace: %v", err)
			}
		})
	}
	mh, ph := nsHandle(t, machine), nsHandle(t, peer)
	pns, err := vnetns.GetFromPath(peer)
	if err != nil {
		t.Fatal(err)
	}
	defer pns.Close()
	if err := mh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(pns)}); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		h *netlink.Handle
		a netip.Prefix
	}{{mh, machineAddr}, {ph, peerAddr}} {
		l, err := side.h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := side.h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(side.a)}); err != nil {
			t.Fatal(err)
		}
		if err := side.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return machine, peer
}

func nsHandle(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	h, err := handle(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func newTestApplier(t *testing.T, machine string) (*Applier, *pods) {
	t.Helper()
	p := &pods{}
	a, err := New(Options{
		Pods: p, StateDir: t.TempDir(), MachineNetNS: machine,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return a, p
}

// addrsOn lists the IPv4 addresses on the machine's link.
func addrsOn(t *testing.T, ns, link string) []string {
	t.Helper()
	h := nsHandle(t, ns)
	l, err := h.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	as, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	slices.Sort(out)
	return out
}

// arpSniffer reads the ARP packets that reach eth0 in the namespace.
type arpSniffer struct{ fd int }

func sniffARP(t *testing.T, ns string) *arpSniffer {
	t.Helper()
	s := &arpSniffer{fd: -1}
	err := netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		s.fd = fd
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// drain discards what was captured so far.
func (s *arpSniffer) drain() {
	b := make([]byte, 128)
	for {
		if _, _, err := unix.Recvfrom(s.fd, b, unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

// announced waits for a gratuitous ARP (sender and target ip) from mac.
func (s *arpSniffer) announced(ip netip.Addr, mac net.HardwareAddr, within time.Duration) error {
	deadline := time.Now().Add(within)
	b := make([]byte, 128)
	var seen []string
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(s.fd, b, 0)
		if err != nil || n < 28 {
			continue
		}
		op := binary.BigEndian.Uint16(b[6:])
		sha := net.HardwareAddr(b[8:14])
		spa, _ := netip.AddrFromSlice(b[14:18])
		tpa, _ := netip.AddrFromSlice(b[24:28])
		seen = append(seen, fmt.Sprintf("op %d %s %s->%s", op, sha, spa, tpa))
		if spa == ip && tpa == ip && sha.String() == mac.String() {
			return nil
		}
	}
	return fmt.Errorf("no gratuitous ARP for %s from %s; saw %v", ip, mac, seen)
}

func TestHeldIPs(t *testing.T) {
	machine, peer := testMachine(t)
	a, _ := newTestApplier(t, machine)
	ctx := context.Background()
	held := netip.MustParseAddr("198.18.211.100")
	theirs := netip.MustParseAddr("198.18.211.50")
	// An address someone else added is never taken away.
	h := nsHandle(t, machine)
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(theirs, 32))}); err != nil {
		t.Fatal(err)
	}
	sniff := sniffARP(t, peer)

	n := api.Network{Generation: 1, Machine: "m1", NodeIPs: []netip.Addr{machineAddr.Addr()}, HeldIPs: []netip.Addr{held, theirs}}
	if err := a.Apply(ctx, n); err != nil {
		t.Fatal(err)
	}
	want := []string{"198.18.211.1/24", "198.18.211.100/32", "198.18.211.50/32"}
	if got := addrsOn(t, machine, "eth0"); !slices.Equal(got, want) {
		t.Errorf("addresses %v, want %v", got, want)
	}
	if err := sniff.announced(held, eth.Attrs().HardwareAddr, 3*time.Second); err != nil {
		t.Error(err)
	}
	// The peer reaches the held address (the kernel answers ARP for it).
	if err := netns.Do(peer, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(held.String(), "9"), 2*time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if strings.Contains(err.Error(), "connection refused") {
			return nil // a RST: the address answered
		}
		return err
	}); err != nil {
		t.Errorf("peer to the held address: %v", err)
	}
	// Idempotent.
	if err := a.Apply(ctx, n); err != nil {
		t.Fatal(err)
	}
	// A new agent announces what it holds again (the address may have
	// been elsewhere meanwhile), and keeps it as its own.
	sniff.drain()
	a2, err := New(Options{Pods: &pods{}, StateDir: a.opts.StateDir, MachineNetNS: machine})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	if err := a2.Apply(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := sniff.announced(held, eth.Attrs().HardwareAddr, 3*time.Second); err != nil {
		t.Errorf("after a restart: %v", err)
	}
	a = a2
	// No longer held: ours goes, theirs stays.
	n.Generation, n.HeldIPs = 2, nil
	if err := a.Apply(ctx, n); err != nil {
		t.Fatal(err)
	}
	want = []string{"198.18.211.1/24", "198.18.211.50/32"}
	if got := addrsOn(t, machine, "eth0"); !slices.Equal(got, want) {
		t.Errorf("addresses after release %v, want %v", got, want)
	}
}

// Without containerd: the bridge with the gateway, the routes, the DNS on
// the gateway and the runtime's pod network follow the Network.
func TestApplyPodNetworkRoutesAndDNS(t *testing.T) {
	testenv.Require(t, filepath.Join(cni.DefaultPluginDir, "bridge"), filepath.Join(cni.DefaultPluginDir, "host-local"), filepath.Join(cni.DefaultPluginDir, "loopback"))
	machine, _ := testMachine(t)
	a, p := newTestApplier(t, machine)
	ctx := context.Background()
	n := api.Network{
		Generation: 1, Machine: "m1", PodCIDR: netip.MustParsePrefix("198.18.212.0/24"),
		Routes: []api.PodRoute{{CIDR: netip.MustParsePrefix("198.18.213.0/24"), Via: peerAddr.Addr(), Machine: "m2"}},
		DNS:    api.ClusterDNS{Domain: "example.internal", Upstreams: []string{"127.0.0.1:1"}},
		Services: []api.Service{{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.212.10")},
			Ports: []api.ServicePort{{Port: 80}}}},
	}
	if err := a.Apply(ctx, n); err != nil {
		t.Fatal(err)
	}
	if got := addrsOn(t, machine, cni.DefaultBridge); !slices.Equal(got, []string{"198.18.212.1/24"}) {
		t.Errorf("bridge addresses %v", got)
	}
	routes, err := cni.Routes(machine)
	if err != nil || len(routes) != 1 || routes[0] != (cni.Route{Dst: n.Routes[0].CIDR, Via: peerAddr.Addr()}) {
		t.Errorf("routes %v, %v", routes, err)
	}
	pn := p.last()
	if pn.CNI == nil || pn.DNS != netip.MustParseAddr("198.18.212.1") || pn.Domain != "example.internal" {
		t.Errorf("pod network given to the runtime: %+v", pn)
	}
	if got := a.DNSAddrs(); !slices.Equal(got, []string{"198.18.212.1:53"}) {
		t.Errorf("dns listens on %v", got)
	}
	ask := func(name string) ([]string, error) {
		var out []string
		err := netns.Do(machine, func() error {
			c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
			q := new(mdns.Msg)
			q.SetQuestion(name, mdns.TypeA)
			r, _, err := c.Exchange(q, "198.18.212.1:53")
			if err != nil {
				return err
			}
			for _, rr := range r.Answer {
				if a, ok := rr.(*mdns.A); ok {
					out = append(out, a.A.String())
				}
			}
			return nil
		})
		return out, err
	}
	if got, err := ask("web.default.svc.example.internal."); err != nil || !slices.Equal(got, []string{"198.19.212.10"}) {
		t.Errorf("lookup: %v, %v", got, err)
	}

	// A new Network: the routes follow, the records are replaced.
	n.Generation = 2
	n.Routes = nil
	n.Services[0].ClusterIPs = []netip.Addr{netip.MustParseAddr("198.19.212.11")}
	if err := a.Apply(ctx, n); err != nil {
		t.Fatal(err)
	}
	if routes, err := cni.Routes(machine); err != nil || len(routes) != 0 {
		t.Errorf("routes after removal %v, %v", routes, err)
	}
	if got, err := ask("web.default.svc.example.internal."); err != nil || !slices.Equal(got, []string{"198.19.212.11"}) {
		t.Errorf("lookup after an update: %v, %v", got, err)
	}
	if p.last().CNI != pn.CNI {
		t.Error("the same pod CIDR made a new CNI network")
	}
}

// Two machines, each with its Applier: a pod on one reaches a pod on the
// other through the host-gw routes, and keeps its own address (no
// masquerade inside the cluster CIDRs).
func TestTwoMachinesRoutePods(t *testing.T) {
	testenv.Require(t, filepath.Join(cni.DefaultPluginDir, "bridge"), filepath.Join(cni.DefaultPluginDir, "host-local"), filepath.Join(cni.DefaultPluginDir, "loopback"))
	addr1, addr2 := netip.MustParsePrefix("198.18.214.1/24"), netip.MustParsePrefix("198.18.214.2/24")
	m1, m2 := linkedPair(t, addr1, addr2)
	cidr1, cidr2 := netip.MustParsePrefix("198.18.217.0/24"), netip.MustParsePrefix("198.18.218.0/24")
	cluster := []netip.Prefix{netip.MustParsePrefix("198.18.216.0/22")}
	ctx := context.Background()
	attachPod := func(machine string, cidr netip.Prefix, via netip.Addr, other netip.Prefix) (string, netip.Addr) {
		a, p := newTestApplier(t, machine)
		n := api.Network{Generation: 1, Machine: machine, PodCIDR: cidr, ClusterCIDRs: cluster,
			Routes: []api.PodRoute{{CIDR: other, Via: via}}, DNS: api.ClusterDNS{Upstreams: []string{"127.0.0.1:1"}}}
		if err := a.Apply(ctx, n); err != nil {
			t.Fatal(err)
		}
		pod, err := netns.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		cn := p.last().CNI
		t.Cleanup(func() {
			if err := cn.Detach(context.Background(), "pod", pod); err != nil {
				t.Errorf("detach: %v", err)
			}
			netns.Remove(pod)
		})
		att, err := cn.Attach(ctx, "pod", pod, nil)
		if err != nil {
			t.Fatal(err)
		}
		return pod, att.IPs[0].Addr()
	}
	pod1, ip1 := attachPod(m1, cidr1, addr2.Addr(), cidr2)
	pod2, ip2 := attachPod(m2, cidr2, addr1.Addr(), cidr1)

	var ln net.Listener
	if err := netns.Do(pod2, func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(ip2.String(), "8080"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	from := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			from <- err.Error()
			return
		}
		from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := netns.Dial(dctx, pod1, "tcp4", net.JoinHostPort(ip2.String(), "8080"))
	if err != nil {
		t.Fatalf("pod on m1 (%s) to pod on m2 (%s): %v", ip1, ip2, err)
	}
	c.Close()
	if got := <-from; got != ip1.String() {
		t.Errorf("the pod on m2 saw the connection from %s, want %s (unmasqueraded)", got, ip1)
	}
}
