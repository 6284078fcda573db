package dns

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/internal/testenv"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNetns runs f on a thread inside the namespace h; the thread is never
// unlocked, so it dies with its goroutine instead of going back to the
// pool inside another namespace.
func inNetns(t testing.TB, h netns.NsHandle, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in netns: %v", err)
	}
}

// podNetns makes a named network namespace with loopback up, standing for
// a pod's, and gives it a resolv.conf (ip netns exec mounts
// /etc/netns/<name>/resolv.conf over /etc/resolv.conf).
func podNetns(t testing.TB, resolv []byte) (string, netns.NsHandle) {
	t.Helper()
	name := fmt.Sprintf("bdns-%d-%d", os.Getpid(), rand.IntN(1<<20))
	h := testenv.NamedNetns(t, name)
	// Loopback, and an address like a pod's: without a non-loopback
	// address glibc's AI_ADDRCONFIG asks nothing for IPv4 alone.
	inNetns(t, h, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		// A veth pair with both ends in the namespace (this kernel may
		// have no dummy links).
		eth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0peer"}
		if err := netlink.LinkAdd(eth); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("eth0peer")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(peer); err != nil {
			return err
		}
		addr, err := netlink.ParseAddr("198.18.0.2/24")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth, addr); err != nil {
			return err
		}
		return netlink.LinkSetUp(eth)
	})
	dir := filepath.Join("/etc/netns", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		os.Remove("/etc/netns") // only if no one else uses it
	})
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), resolv, 0o644); err != nil {
		t.Fatal(err)
	}
	return name, h
}

// TestGlibcResolver puts the pieces together as a pod sees them: glibc's
// stub resolver (getent), reading the resolv.conf PodResolvConf wrote for
// a ClusterFirst pod in namespace default, asks the server on port 53 in
// the pod's network namespace; short names go through the search list,
// A and AAAA are asked together, and a name outside the cluster is
// forwarded to an upstream in the same namespace.
func TestGlibcResolver(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.Require(t, "ip", "getent")

	conf, warnings := PodResolvConf(PodDNS{
		Namespace:   "default",
		Nameservers: []netip.Addr{ip("127.0.0.1")},
		Host:        &ResolvConf{},
	})
	if len(warnings) > 0 {
		t.Fatal(warnings)
	}
	name, h := podNetns(t, conf.Bytes())

	// The server's sockets are bound inside the pod's namespace (where the
	// agent's are on the bridge); it forwards from the test's own, as the
	// agent does from the machine's, to an upstream on loopback there.
	up := startUpstream(t, resolver)
	var s *Server
	inNetns(t, h, func() error {
		var err error
		s, err = New(Options{
			Listen:    []string{"127.0.0.1:53"},
			Upstreams: []string{up.addr},
			View:      mustView(t, testInput()),
			Logger:    slog.New(slog.DiscardHandler),
		})
		if err != nil {
			return err
		}
		return s.Listen()
	})
	stop := runServer(t, s)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})

	getent := func(db, host string) ([]string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", name, "getent", db, host).Output()
		var addrs []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				addrs = append(addrs, f[0])
			}
		}
		slices.Sort(addrs)
		return slices.Compact(addrs), err
	}
	for _, tt := range []struct {
		db, host string
		want     []string
	}{
		{"ahosts", "web", []string{"10.96.0.20", "fd00:96::20"}},
		{"ahostsv4", "web.default", []string{"10.96.0.20"}},
		{"ahostsv4", "pg.db", []string{"10.244.1.10", "10.244.1.12", "10.244.2.11"}},
		{"ahosts", "pg-0.pg.db", []string{"10.244.1.10"}},
		{"ahostsv4", "kubernetes.default.svc.cluster.local", []string{"10.96.0.1"}},
		{"ahostsv4", "example.test", []string{"192.0.2.1"}},
	} {
		got, err := getent(tt.db, tt.host)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("getent %s %s = %q, %v; want %q", tt.db, tt.host, got, err, tt.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", name, "getent", "hosts", "10.96.0.1").Output()
	if got := strings.Fields(string(out)); err != nil || !slices.Equal(got, []string{"10.96.0.1", "kubernetes.default.svc.cluster.local"}) {
		t.Errorf("getent hosts 10.96.0.1 = %q, %v", got, err)
	}
	// Unknown names fail (exit status 2: not found), after the whole
	// search list.
	if got, err := getent("ahosts", "nosuch"); err == nil {
		t.Errorf("getent ahosts nosuch = %q", got)
	}
}
