package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"berth.dev/berth/nodes/runtime/netns"
)

// RouteProtocol marks the routes SetRoutes owns (rtm_protocol; iproute2
// shows it as "proto 181"). The kernel and iproute2's rt_protos name no
// protocol with this number, and SetRoutes never removes or changes a route
// without it.
const RouteProtocol netlink.RouteProtocol = 0xb5

// Route sends traffic for another machine's pod CIDR through that
// machine's address (host-gw).
type Route struct {
	Dst netip.Prefix // the other machine's pod CIDR
	Via netip.Addr   // the other machine's address, on a link of this one
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Via.String() }

// ErrRouteConflict is returned (wrapped) by SetRoutes when a route berth
// does not own sends a desired destination elsewhere; that route is left
// as it is.
var ErrRouteConflict = errors.New("a route not owned by berth sends the destination elsewhere")

func checkRoutes(routes []Route) error {
	seen := map[netip.Prefix]bool{}
	var errs []error
	for _, r := range routes {
		switch {
		case !r.Dst.IsValid() || !r.Dst.Addr().Is4():
			errs = append(errs, fmt.Errorf("route %s: destination is not an IPv4 prefix", r))
		case r.Dst.Masked() != r.Dst:
			errs = append(errs, fmt.Errorf("route %s: destination has host bits set", r))
		case !r.Via.Is4():
			errs = append(errs, fmt.Errorf("route %s: gateway is not an IPv4 address", r))
		case seen[r.Dst]:
			errs = append(errs, fmt.Errorf("route %s: destination given twice", r))
		}
		seen[r.Dst] = true
	}
	return errors.Join(errs...)
}

// SetRoutes makes routes the host-gw routes of the network namespace at
// netnsPath (empty: the caller's own) and turns on IPv4 forwarding there.
// It is idempotent: it adds the routes that are missing, replaces those of
// its own that point elsewhere, and deletes routes of its own
// (RouteProtocol, main table) that are no longer wanted. A route it does
// not own is never touched; one for a wanted destination with the wanted
// gateway counts as present (the lab makes such routes), one with another
// gateway is an ErrRouteConflict. All routes are tried; the errors are
// joined.
func SetRoutes(netnsPath string, routes []Route) error {
	if err := checkRoutes(routes); err != nil {
		return fmt.Errorf("set pod routes: %w", err)
	}
	if err := EnableForwarding(netnsPath); err != nil {
		return fmt.Errorf("set pod routes: %w", err)
	}
	h, err := handle(netnsPath)
	if err != nil {
		return fmt.Errorf("set pod routes: %w", err)
	}
	defer h.Close()
	existing, err := mainRoutes(h)
	if err != nil {
		return fmt.Errorf("set pod routes: %w", err)
	}
	want := map[netip.Prefix]netip.Addr{}
	for _, r := range routes {
		want[r.Dst] = r.Via
	}
	var errs []error
	for _, r := range routes {
		var ours, other []installed
		for _, e := range existing[r.Dst] {
			if e.owned {
				ours = append(ours, e)
			} else {
				other = append(other, e)
			}
		}
		if len(other) > 0 {
			if !hasGateway(other, r.Via) {
				errs = append(errs, fmt.Errorf("route %s: %w (%s)", r, ErrRouteConflict, other[0].route))
			}
			// Present or conflicting, the destination is not ours: any
			// route of ours for it only shadows or duplicates that one.
			for _, e := range ours {
				if err := h.RouteDel(&e.route); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("delete route %s: %w", e.route, err))
				}
			}
			continue
		}
		if len(ours) == 1 && ours[0].via == r.Via {
			continue
		}
		for _, e := range ours[min(1, len(ours)):] {
			// Duplicates (another metric): one is enough.
			if err := h.RouteDel(&e.route); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s: %w", e.route, err))
			}
		}
		nr := netlink.Route{
			Dst:      prefixNet(r.Dst),
			Gw:       r.Via.AsSlice(),
			Protocol: RouteProtocol,
			Table:    unix.RT_TABLE_MAIN,
			Scope:    netlink.SCOPE_UNIVERSE,
		}
		if len(ours) > 0 {
			nr.Priority = ours[0].route.Priority
		}
		if err := h.RouteReplace(&nr); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r, err))
		}
	}
	for dst, es := range existing {
		if _, ok := want[dst]; ok {
			continue
		}
		for _, e := range es {
			if !e.owned {
				continue
			}
			if err := h.RouteDel(&e.route); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete stale route %s: %w", e.route, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("set pod routes: %w", err)
	}
	return nil
}

// Routes lists the routes SetRoutes owns in the network namespace at
// netnsPath (empty: the caller's own), by destination.
func Routes(netnsPath string) ([]Route, error) {
	h, err := handle(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("list pod routes: %w", err)
	}
	defer h.Close()
	existing, err := mainRoutes(h)
	if err != nil {
		return nil, fmt.Errorf("list pod routes: %w", err)
	}
	var out []Route
	for dst, es := range existing {
		for _, e := range es {
			if e.owned {
				out = append(out, Route{Dst: dst, Via: e.via})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Dst.Compare(out[j].Dst); c != 0 {
			return c < 0
		}
		return out[i].Via.Less(out[j].Via)
	})
	return out, nil
}

// installed is a route of the main table, with what SetRoutes compares.
type installed struct {
	route netlink.Route
	via   netip.Addr // invalid for a route without a single gateway
	owned bool
}

// mainRoutes lists the IPv4 routes of the main table with a destination,
// by destination.
func mainRoutes(h *netlink.Handle) (map[netip.Prefix][]installed, error) {
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := map[netip.Prefix][]installed{}
	for _, r := range rs {
		if r.Dst == nil {
			continue // the default route
		}
		dst, ok := netipPrefix(r.Dst)
		if !ok {
			continue
		}
		e := installed{route: r, owned: r.Protocol == RouteProtocol}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok && len(r.MultiPath) == 0 {
			e.via = gw.Unmap()
		}
		out[dst] = append(out[dst], e)
	}
	return out, nil
}

func hasGateway(es []installed, via netip.Addr) bool {
	for _, e := range es {
		if e.via == via {
			return true
		}
	}
	return false
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// handle opens netlink in the network namespace at path, or in the
// caller's own for "".
func handle(path string) (*netlink.Handle, error) {
	if path == "" {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		return h, nil
	}
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", path, err)
	}
	return h, nil
}

// EnableForwarding sets net.ipv4.ip_forward to 1 in the network namespace
// at netnsPath (empty: the caller's own). The sysctls under /proc/sys/net
// belong to the namespace of the thread that opens them, so the file is
// written from a thread inside the namespace.
func EnableForwarding(netnsPath string) error {
	write := func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	}
	var err error
	if netnsPath == "" {
		err = write()
	} else {
		err = netns.Do(netnsPath, write)
	}
	if err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}
