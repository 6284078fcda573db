package network

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"berth.dev/berth/nodes/runtime/netns"
)

// handle opens netlink in the namespace at path ("" is the caller's).
func handle(path string) (*netlink.Handle, error) {
	if path == "" {
		return netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
}

// inNS runs fn in the namespace at path ("" is the caller's).
func inNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	return netns.Do(path, fn)
}

// ensureBridge makes the bridge (as the CNI bridge plugin would, which
// then finds it) with the gateway address, up, so that the cluster DNS can
// listen on the gateway before the first pod is attached. old, when
// valid, is an earlier gateway address to remove (the plugin refuses a
// bridge with another address in the pod CIDR's family).
func ensureBridge(nsPath, name string, gw, old netip.Prefix) error {
	h, err := handle(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("bridge %s: %w", name, err)
		}
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = h.LinkByName(name); err != nil {
			return fmt.Errorf("bridge %s: %w", name, err)
		}
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("%s is a %s, not a bridge", name, link.Type())
	}
	if old.IsValid() && old != gw {
		if err := h.AddrDel(link, &netlink.Addr{IPNet: ipNet(old)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("bridge %s: remove the former gateway %s: %w", name, old, err)
		}
	}
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: ipNet(gw)}); err != nil {
		return fmt.Errorf("bridge %s: address %s: %w", name, gw, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bridge %s: up: %w", name, err)
	}
	return nil
}

// bridgeNetfilter makes bridged IPv4 traffic pass the IP hooks (nftables'
// ip family, conntrack) in the namespace: kube-proxy's requirement for
// Service traffic between pods of one bridge.
func bridgeNetfilter(nsPath string) error {
	return inNS(nsPath, func() error {
		return os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("1\n"), 0o644)
	})
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// heldFile records the held addresses this package added, so that it
// removes those and only those when they are no longer held.
const heldFile = "held-ips.json"

type heldRecord struct {
	// Link is the interface they were added to.
	Link  string       `json:"link"`
	Addrs []netip.Addr `json:"addrs"`
}

func (a *Applier) loadHeld() (heldRecord, error) {
	var r heldRecord
	b, err := os.ReadFile(filepath.Join(a.opts.StateDir, heldFile))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}

func (a *Applier) saveHeld(r heldRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.opts.StateDir, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(a.opts.StateDir, "."+heldFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(a.opts.StateDir, heldFile))
}

// setHeld adds each held address as a /32 to the interface that has the
// first node address, announces the ones it adds with gratuitous ARP, and
// removes those it added before that are no longer held. An address the
// interface had already (not added here) is left to whoever added it.
func (a *Applier) setHeld(nodeIPs, held []netip.Addr) error {
	prev, err := a.loadHeld()
	if err != nil {
		return fmt.Errorf("read %s: %w", heldFile, err)
	}
	if len(held) == 0 && len(prev.Addrs) == 0 {
		return nil
	}
	h, err := handle(a.opts.MachineNetNS)
	if err != nil {
		return err
	}
	defer h.Close()

	var errs []error
	mine := heldRecord{Link: prev.Link}
	var link netlink.Link
	if len(held) > 0 {
		if len(nodeIPs) == 0 {
			return errors.New("no node address to find the interface by")
		}
		if link, err = linkWithAddr(h, nodeIPs[0]); err != nil {
			return err
		}
		mine.Link = link.Attrs().Name
	}
	// Those no longer held (or held on another interface now) go.
	for _, ip := range prev.Addrs {
		if slices.Contains(held, ip) && prev.Link == mine.Link {
			mine.Addrs = append(mine.Addrs, ip)
			continue
		}
		old, err := h.LinkByName(prev.Link)
		if err == nil {
			err = h.AddrDel(old, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, 32))})
		}
		var nf netlink.LinkNotFoundError
		if err != nil && !errors.As(err, &nf) && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", ip, prev.Link, err))
			mine.Addrs = append(mine.Addrs, ip) // still ours, tried again next time
			continue
		}
		a.log.Info("released held address", "ip", ip, "link", prev.Link)
	}
	if link != nil {
		have, err := h.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("addresses of %s: %w", mine.Link, err)
		}
		for _, ip := range held {
			ours := slices.Contains(mine.Addrs, ip)
			if !ours && hasAddr(have, ip) {
				continue // someone else's
			}
			if !ours || !hasAddr(have, ip) {
				if err := h.AddrReplace(link, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, 32))}); err != nil {
					errs = append(errs, fmt.Errorf("add %s to %s: %w", ip, mine.Link, err))
					continue
				}
				if !ours {
					mine.Addrs = append(mine.Addrs, ip)
				}
				a.log.Info("holding address", "ip", ip, "link", mine.Link)
				delete(a.announced, ip)
			}
			// Announced once per address added and per agent start: the
			// address may have been elsewhere while no agent ran here.
			if a.announced[ip] {
				continue
			}
			if err := a.announce(link, ip); err != nil {
				errs = append(errs, fmt.Errorf("announce %s: %w", ip, err))
				continue
			}
			a.announced[ip] = true
		}
	}
	for ip := range a.announced {
		if !slices.Contains(mine.Addrs, ip) {
			delete(a.announced, ip)
		}
	}
	if err := a.saveHeld(mine); err != nil {
		errs = append(errs, fmt.Errorf("record held addresses: %w", err))
	}
	return errors.Join(errs...)
}

func hasAddr(addrs []netlink.Addr, ip netip.Addr) bool {
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true
		}
	}
	return false
}

// linkWithAddr finds the interface that has ip.
func linkWithAddr(h *netlink.Handle, ip netip.Addr) (netlink.Link, error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return h.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface has the node address %s", ip)
}

// announce sends gratuitous ARP for ip on link — a request and a reply,
// both with ip as sender and target, to the broadcast address — so that
// neighbours update their caches when the address moves here.
func (a *Applier) announce(link netlink.Link, ip netip.Addr) error {
	mac := link.Attrs().HardwareAddr
	if len(mac) != 6 {
		return fmt.Errorf("%s has no Ethernet address", link.Attrs().Name)
	}
	return inNS(a.opts.MachineNetNS, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{
			Protocol: htons(unix.ETH_P_ARP),
			Ifindex:  link.Attrs().Index,
			Halen:    6,
			Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		}
		for _, op := range []uint16{arpRequest, arpReply} {
			if err := unix.Sendto(fd, garp(op, mac, ip), 0, to); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
		return nil
	})
}

const (
	arpRequest = 1
	arpReply   = 2
)

// garp is a gratuitous ARP packet (RFC 5227 announcement): Ethernet and
// IPv4, sender and target address both ip; the target hardware address is
// zero in a request, the broadcast address in a reply.
func garp(op uint16, mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
	copy(b[8:14], mac)
	ip4 := ip.As4()
	copy(b[14:18], ip4[:])
	if op == arpReply {
		copy(b[18:24], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	copy(b[24:28], ip4[:])
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
