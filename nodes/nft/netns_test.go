package nft

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"berth.dev/berth/internal/testenv"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testNetns is a network namespace a test made, named so that `ip netns
// exec` reaches it, deleted when the test ends.
type testNetns struct {
	name string
	h    netns.NsHandle
}

var (
	nsCounter int
	sweep     sync.Once
)

// sweepStale deletes the namespaces of test processes that died before
// their cleanup ran (a -timeout panic, a kill): named bnft-TAG-PID-N with
// no process PID.
func sweepStale(t testing.TB) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		parts := strings.Split(e.Name(), "-")
		if len(parts) != 4 || parts[0] != "bnft" {
			continue
		}
		pid, err := strconv.Atoi(parts[2])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		if err := netns.DeleteNamed(e.Name()); err != nil {
			t.Logf("delete stale netns %s: %v", e.Name(), err)
		}
	}
}

// newNetns creates a namespace with its loopback up.
func newNetns(t testing.TB, tag string) *testNetns {
	t.Helper()
	testenv.RequireRoot(t)
	sweep.Do(func() { sweepStale(t) })
	nsCounter++
	name := fmt.Sprintf("bnft-%s-%d-%d", tag, os.Getpid(), nsCounter)
	n := &testNetns{name: name, h: testenv.NamedNetns(t, name)}
	n.do(t, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	return n
}

// do runs f on a thread inside the namespace.
func (n *testNetns) do(t testing.TB, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: it dies with the goroutine rather
		// than go back to the pool inside another namespace.
		if err := netns.Set(n.h); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in netns %s: %v", n.name, err)
	}
}

// nft runs Debian's nft inside the namespace.
func (n *testNetns) nft(t testing.TB, args ...string) string {
	t.Helper()
	testenv.Require(t, "nft", "ip")
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// syncer opens a Syncer on a uniquely named table in the namespace.
func (n *testNetns) syncer(t testing.TB) *Syncer {
	t.Helper()
	s, err := NewSyncer(Options{Table: "berth-test", NetNS: int(n.h)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Delete(context.Background()); err != nil {
			t.Errorf("delete table: %v", err)
		}
		s.Close()
	})
	return s
}

// link makes a veth pair between a and b with the given addresses (a /30
// each side) and routes.
func link(t testing.TB, a *testNetns, aAddr string, b *testNetns, bAddr string) {
	t.Helper()
	nsCounter++
	name := fmt.Sprintf("bnv%d%d", os.Getpid()%100000, nsCounter)
	peer := name + "p"
	a.do(t, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(int(b.h))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth %s: %w", name, err)
		}
		return addrUp(name, aAddr)
	})
	b.do(t, func() error { return addrUp(peer, bAddr) })
}

func addrUp(name, cidr string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("address %s on %s: %w", cidr, name, err)
	}
	return netlink.LinkSetUp(l)
}

// defaultRoute routes everything via gw.
func (n *testNetns) defaultRoute(t testing.TB, gw string) {
	n.do(t, func() error {
		return netlink.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gw: net.ParseIP(gw)})
	})
}

func (n *testNetns) sysctl(t testing.TB, key, value string) {
	n.do(t, func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) })
}

// listen starts a TCP server in the namespace that answers each connection
// with reply and closes it.
func (n *testNetns) listen(t testing.TB, addr, reply string) {
	t.Helper()
	var ln net.Listener
	n.do(t, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s from %s\n", reply, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
}

// dialTimeout bounds a connect that should succeed. It is longer than
// the first SYN retransmission (1 s): a client that reuses a source port
// within conntrack's TIME_WAIT meets the old NAT binding and the server's
// TIME_WAIT socket, and its first SYN may go unanswered.
const dialTimeout = 3 * time.Second

// denyTimeout is how long a connect that should be dropped is given.
const denyTimeout = 700 * time.Millisecond

// dial connects from the namespace to addr and returns the first line read.
func (n *testNetns) dial(t testing.TB, addr string) (string, error) {
	t.Helper()
	return n.dialWithin(t, addr, dialTimeout)
}

// dialWithin is dial with a connect timeout.
func (n *testNetns) dialWithin(t testing.TB, addr string, timeout time.Duration) (string, error) {
	t.Helper()
	var conn net.Conn
	var derr error
	n.do(t, func() error {
		d := net.Dialer{Timeout: timeout}
		conn, derr = d.Dial("tcp4", addr)
		return nil
	})
	if derr != nil {
		return "", derr
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(dialTimeout))
	buf := make([]byte, 200)
	k, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:k])), nil
}
