package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrExists is returned by Up when a lab is already up on the host (in the
// same directory or another one).
var ErrExists = errors.New("a lab is already up")

// ErrAddressInUse is returned by Up when the lab's addresses are already in
// use on the host by something the lab did not make.
var ErrAddressInUse = errors.New("lab addresses already in use")

// bridgeAlias is the bridge's interface alias: it names the lab directory,
// so that a Down without lab.json can tell its own lab from another's.
func bridgeAlias(dir string) string { return "berth lab " + dir }

// linkList lists links, retrying a dump the kernel interrupted.
func linkList(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for range 5 {
		var links []netlink.Link
		if links, err = h.LinkList(); err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list links: %w", err)
}

// checkHost refuses to make a lab where one exists or where something else
// uses the lab's addresses.
func checkHost(dir string) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	links, err := linkList(h)
	if err != nil {
		return err
	}
	for _, l := range links {
		a := l.Attrs()
		if a.Name == BridgeName {
			other, ok := strings.CutPrefix(a.Alias, "berth lab ")
			if !ok || other == "" {
				other = "an unknown directory"
			}
			return fmt.Errorf("%w: bridge %s exists, made for %s (run lab down first)", ErrExists, BridgeName, other)
		}
	}
	if names, _ := filepath.Glob(filepath.Join(netnsDir, Prefix+"*")); len(names) > 0 {
		return fmt.Errorf("%w: network namespace %s exists (run lab down first)", ErrExists, filepath.Base(names[0]))
	}
	// Addresses of the lab's range on any link, and routes into it.
	for _, l := range links {
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			if p, ok := prefixOf(a.IPNet); ok && p.Overlaps(LabRange) {
				return fmt.Errorf("%w: %s is on %s", ErrAddressInUse, p, l.Attrs().Name)
			}
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() >= LabRange.Bits() && LabRange.Overlaps(p) {
			dev := fmt.Sprint(r.LinkIndex)
			if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			return fmt.Errorf("%w: a route to %s exists (dev %s)", ErrAddressInUse, p, dev)
		}
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// prepareNetnsDir makes /run/netns a shared bind mount of itself, as
// iproute2 does, so that namespaces bound in it are seen from every mount
// namespace. It reports what it made.
func prepareNetnsDir() (madeDir, madeMount bool, err error) {
	if err := os.Mkdir(netnsDir, 0o755); err == nil {
		madeDir = true
	} else if !errors.Is(err, os.ErrExist) {
		return false, false, fmt.Errorf("create %s: %w", netnsDir, err)
	}
	for {
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return madeDir, madeMount, nil
		}
		if !errors.Is(err, unix.EINVAL) || madeMount {
			return madeDir, madeMount, fmt.Errorf("make %s shared: %w", netnsDir, err)
		}
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return madeDir, madeMount, fmt.Errorf("bind %s: %w", netnsDir, err)
		}
		madeMount = true
	}
}

// createNetns makes a network namespace and binds it at path, as `ip netns
// add` does.
func createNetns(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create network namespace: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread is left in the new namespace and
		// ends with this goroutine.
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("create network namespace %s: %w", path, err)
	}
	return nil
}

// deleteNetns unbinds and removes a named namespace, as `ip netns delete`
// does. A missing one is not an error.
func deleteNetns(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete network namespace %s: %w", path, err)
	}
	return nil
}

// setSysctl writes a /proc/sys value (path relative to /proc/sys) in the
// namespace bound at ns, or in this process's namespace when ns is "".
func setSysctl(ns, key, value string) error {
	write := func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	}
	var err error
	if ns == "" {
		err = write()
	} else {
		err = inNetns(ns, write)
	}
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// noIPv6 keeps a link from sending IPv6 (link-local addresses, router
// solicitations): lab traffic stays on 198.18.0.0/15. Where the kernel has
// no IPv6 there is nothing to do.
func noIPv6(ns, link string) error {
	key := filepath.Join("net/ipv6/conf", link, "disable_ipv6")
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return nil
	}
	return setSysctl(ns, key, "1")
}

// network makes the bridge, the veth pairs and the routes, recording each
// thing before it is made.
func (u *upper) network() error {
	l := u.lab
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()

	// The bridge, with no IPv6 and the bridge address.
	if err := u.j.record(func(s *state) { s.Made.Links = append(s.Made.Links, l.Bridge) }); err != nil {
		return err
	}
	la := netlink.NewLinkAttrs()
	la.Name = l.Bridge
	br := &netlink.Bridge{LinkAttrs: la}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", l.Bridge, err)
	}
	if err := h.LinkSetAlias(br, bridgeAlias(l.Dir)); err != nil {
		return fmt.Errorf("bridge %s: set alias: %w", l.Bridge, err)
	}
	if err := noIPv6("", l.Bridge); err != nil {
		return err
	}
	if err := h.AddrAdd(br, &netlink.Addr{IPNet: ipNet(l.BridgeAddr)}); err != nil {
		return fmt.Errorf("bridge %s: add %s: %w", l.Bridge, l.BridgeAddr, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge %s: up: %w", l.Bridge, err)
	}

	for _, m := range l.Machines {
		if err := u.machineNetwork(h, br, m); err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
	}

	// Host routes to each machine's pod CIDR through its address.
	for _, m := range l.Machines {
		r := route{Dst: m.PodCIDR.String(), Gw: m.Address.Addr().String()}
		if err := u.j.record(func(s *state) { s.Made.Routes = append(s.Made.Routes, r) }); err != nil {
			return err
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: ipNet(m.PodCIDR), Gw: m.Address.Addr().AsSlice()}); err != nil {
			return fmt.Errorf("route %s via %s: %w", r.Dst, r.Gw, err)
		}
	}
	return nil
}

// machineNetwork makes a machine's namespace and its veth pair, addresses
// and routes.
func (u *upper) machineNetwork(h *netlink.Handle, br netlink.Link, m Machine) error {
	if err := u.j.record(func(s *state) { s.Made.Namespaces = append(s.Made.Namespaces, m.Netns) }); err != nil {
		return err
	}
	if err := createNetns(m.NetnsPath); err != nil {
		return err
	}
	ns, err := netns.GetFromPath(m.NetnsPath)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", m.NetnsPath, err)
	}
	defer ns.Close()

	if err := u.j.record(func(s *state) { s.Made.Links = append(s.Made.Links, m.HostLink) }); err != nil {
		return err
	}
	veth := netlink.NewVeth(netlink.LinkAttrs{Name: m.HostLink, MasterIndex: br.Attrs().Index, TxQLen: -1})
	veth.PeerName = MachineLink
	veth.PeerNamespace = netlink.NsFd(ns)
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", m.HostLink, err)
	}
	if err := noIPv6("", m.HostLink); err != nil {
		return err
	}
	if err := h.LinkSetUp(veth); err != nil {
		return fmt.Errorf("veth %s: up: %w", m.HostLink, err)
	}

	// Inside: no IPv6 on any link, forwarding on (the machine routes its
	// pods' traffic), loopback and eth0 up, the default route through the
	// bridge. The other machines' pod CIDRs are routed by the machine's
	// agent, from the Network the controller gives it (a route the lab
	// made there would be one the agent does not own).
	for _, kv := range [][2]string{
		{"net/ipv6/conf/all/disable_ipv6", "1"},
		{"net/ipv6/conf/default/disable_ipv6", "1"},
		{"net/ipv6/conf/" + MachineLink + "/disable_ipv6", "1"},
		{"net/ipv4/ip_forward", "1"},
	} {
		if strings.HasPrefix(kv[0], "net/ipv6") {
			if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
				continue
			}
		}
		if err := setSysctl(m.NetnsPath, kv[0], kv[1]); err != nil {
			return err
		}
	}
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", m.Netns, err)
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	eth, err := nh.LinkByName(MachineLink)
	if err != nil {
		return fmt.Errorf("%s: %w", MachineLink, err)
	}
	if err := nh.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(m.Address)}); err != nil {
		return fmt.Errorf("%s: add %s: %w", MachineLink, m.Address, err)
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("%s: up: %w", MachineLink, err)
	}
	gw := u.lab.BridgeAddr.Addr()
	if err := nh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}
