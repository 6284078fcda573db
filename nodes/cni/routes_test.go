package cni

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/runtime/netns"
)

// TestHostGW joins two machines by a veth, gives each a pod, and routes
// each machine's pod CIDR via the other's address.
func TestHostGW(t *testing.T) {
	requireCNI(t)
	ctx := context.Background()
	mA, mB := newNetNS(t), newNetNS(t)
	addrA, addrB := netip.MustParsePrefix("198.18.250.1/24"), netip.MustParsePrefix("198.18.250.2/24")
	link(t, mA, "up-a", addrA, mB, "up-b", addrB)

	nA := newTestNetwork(t, mA, "198.18.101.0/24")
	nB := newTestNetwork(t, mB, "198.18.102.0/24")
	podA, podB := newNetNS(t), newNetNS(t)
	attA, err := nA.Attach(ctx, "a-"+suffix(), podA, nil)
	if err != nil {
		t.Fatal(err)
	}
	attB, err := nB.Attach(ctx, "b-"+suffix(), podB, nil)
	if err != nil {
		t.Fatal(err)
	}
	ipA, ipB := attA.IPs[0].Addr(), attB.IPs[0].Addr()
	srvB := serve(t, podB, ipB, "pod b")
	srvA := serve(t, podA, ipA, "pod a")

	// Without routes machine A does not know where B's pods are.
	if got, err := fetch(podA, srvB); err == nil {
		t.Fatalf("pod a reached pod b before any route: %q", got)
	}

	hA := nlHandle(t, mA)
	// A route berth does not own, which SetRoutes must leave alone.
	foreign := netlink.Route{
		Dst: prefixNet(netip.MustParsePrefix("198.18.104.0/24")),
		Gw:  addrB.Addr().AsSlice(),
	}
	if err := hA.RouteAdd(&foreign); err != nil {
		t.Fatal(err)
	}
	stale := Route{Dst: netip.MustParsePrefix("198.18.103.0/24"), Via: addrB.Addr()}
	toB := Route{Dst: nB.cfg.PodCIDR, Via: addrB.Addr()}
	toA := Route{Dst: nA.cfg.PodCIDR, Via: addrA.Addr()}
	if err := SetRoutes(mA, []Route{toB, stale}); err != nil {
		t.Fatal(err)
	}
	if err := SetRoutes(mB, []Route{toA}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{mA, mB} {
		if v := sysctl(t, m, "net/ipv4/ip_forward"); v != "1" {
			t.Errorf("ip_forward = %s in a machine", v)
		}
	}
	if got, err := fetch(podA, srvB); got != "pod b" {
		t.Errorf("pod a to pod b across machines: %q, %v", got, err)
	}
	if got, err := fetch(podB, srvA); got != "pod a" {
		t.Errorf("pod b to pod a across machines: %q, %v", got, err)
	}
	if err := ping(podA, ipB); err != nil {
		t.Errorf("ping pod b from pod a: %v", err)
	}
	assertRoutes(t, mA, toB, stale)

	// Again: nothing changes.
	before := routeDump(t, hA)
	if err := SetRoutes(mA, []Route{toB, stale}); err != nil {
		t.Fatal(err)
	}
	if after := routeDump(t, hA); !slices.Equal(before, after) {
		t.Errorf("repeated SetRoutes changed routes:\nbefore %v\nafter  %v", before, after)
	}

	// The stale route goes; the foreign one stays.
	if err := SetRoutes(mA, []Route{toB}); err != nil {
		t.Fatal(err)
	}
	assertRoutes(t, mA, toB)
	if !slices.ContainsFunc(routeDump(t, hA), func(s string) bool { return strings.HasPrefix(s, "198.18.104.0/24 via 198.18.250.2 ") }) {
		t.Errorf("the route berth does not own was removed: %v", routeDump(t, hA))
	}

	// A changed gateway is replaced (198.18.250.3 is on the link, though
	// nothing answers there), then put back.
	moved := Route{Dst: toB.Dst, Via: netip.MustParseAddr("198.18.250.3")}
	if err := SetRoutes(mA, []Route{moved}); err != nil {
		t.Fatal(err)
	}
	assertRoutes(t, mA, moved)
	if err := SetRoutes(mA, []Route{toB}); err != nil {
		t.Fatal(err)
	}
	assertRoutes(t, mA, toB)

	// The foreign route's destination with its own gateway counts as
	// present; with another it is a conflict, and the route is untouched.
	same := Route{Dst: netip.MustParsePrefix("198.18.104.0/24"), Via: addrB.Addr()}
	if err := SetRoutes(mA, []Route{toB, same}); err != nil {
		t.Errorf("a foreign route with the wanted gateway: %v", err)
	}
	assertRoutes(t, mA, toB)
	other := Route{Dst: same.Dst, Via: netip.MustParseAddr("198.18.250.3")}
	if err := SetRoutes(mA, []Route{toB, other}); !errors.Is(err, ErrRouteConflict) {
		t.Errorf("conflicting foreign route: %v, want ErrRouteConflict", err)
	}
	assertRoutes(t, mA, toB)
	if !slices.ContainsFunc(routeDump(t, hA), func(s string) bool { return strings.HasPrefix(s, "198.18.104.0/24 via 198.18.250.2 ") }) {
		t.Errorf("the conflicting foreign route was changed: %v", routeDump(t, hA))
	}

	// No routes: berth's go, pods on A lose B.
	if err := SetRoutes(mA, nil); err != nil {
		t.Fatal(err)
	}
	assertRoutes(t, mA)
	if got, err := fetch(podA, srvB); err == nil {
		t.Errorf("pod a reached pod b after the routes were removed: %q", got)
	}
}

// link joins the namespaces at a and b by a veth pair, addressed and up.
func link(t *testing.T, a, nameA string, addrA netip.Prefix, b, nameB string, addrB netip.Prefix) {
	t.Helper()
	nsB, err := vnetns.GetFromPath(b)
	if err != nil {
		t.Fatal(err)
	}
	defer nsB.Close()
	hA, hB := nlHandle(t, a), nlHandle(t, b)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nameA}, PeerName: nameB, PeerNamespace: netlink.NsFd(nsB)}
	if err := hA.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	for _, s := range []struct {
		h    *netlink.Handle
		name string
		addr netip.Prefix
	}{{hA, nameA, addrA}, {hB, nameB, addrB}} {
		l, err := s.h.LinkByName(s.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.h.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(s.addr)}); err != nil {
			t.Fatal(err)
		}
		if err := s.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

func assertRoutes(t *testing.T, ns string, want ...Route) {
	t.Helper()
	got, err := Routes(ns)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(want, func(a, b Route) int { return a.Dst.Compare(b.Dst) })
	if !slices.Equal(got, want) {
		t.Errorf("berth's routes %v, want %v", got, want)
	}
}

// routeDump lists the main table as "DST via GW proto N" lines.
func routeDump(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		dst := "default"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		gw := net.IP(r.Gw).String()
		out = append(out, dst+" via "+gw+" proto "+r.Protocol.String())
	}
	slices.Sort(out)
	return out
}

// sysctl reads /proc/sys/KEY inside the namespace at path.
func sysctl(t *testing.T, path, key string) string {
	t.Helper()
	var v string
	if err := netns.Do(path, func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestEnableForwarding(t *testing.T) {
	testenv.RequireRoot(t)
	m := newNetNS(t)
	if v := sysctl(t, m, "net/ipv4/ip_forward"); v != "0" {
		t.Fatalf("a new namespace forwards already (ip_forward=%s): the test cannot tell", v)
	}
	if err := EnableForwarding(m); err != nil {
		t.Fatal(err)
	}
	if v := sysctl(t, m, "net/ipv4/ip_forward"); v != "1" {
		t.Errorf("ip_forward = %s after EnableForwarding", v)
	}
	// Another namespace is not affected.
	if v := sysctl(t, newNetNS(t), "net/ipv4/ip_forward"); v != "0" {
		t.Errorf("ip_forward = %s in another namespace", v)
	}
}
