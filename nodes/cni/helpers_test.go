package cni

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/runtime/netns"
)

// requireCNI skips (or under BERTH_E2E=required fails) a test that needs
// root and Debian's CNI plugins.
func requireCNI(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	bins := make([]string, len(plugins))
	for i, p := range plugins {
		bins[i] = filepath.Join(DefaultPluginDir, p) // Debian package containernetworking-plugins
	}
	testenv.Require(t, bins...)
}

// newNetNS makes a network namespace (loopback up) that is removed when
// the test ends, with everything in it.
func newNetNS(t testing.TB) string {
	t.Helper()
	path, err := netns.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Remove(path); err != nil {
			t.Errorf("remove test namespace: %v", err)
		}
	})
	return path
}

// testLogger writes the package's log lines to the test's log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// newTestNetwork makes a Network for a fresh machine namespace (or the
// given one) with its state in a temporary directory. The bridge goes with
// the namespace, the state with the directory.
func newTestNetwork(t testing.TB, machine string, cidr string) *Network {
	t.Helper()
	if machine == "" {
		machine = newNetNS(t)
	}
	n, err := New(Config{
		PodCIDR:      netip.MustParsePrefix(cidr),
		StateDir:     t.TempDir(),
		MachineNetNS: machine,
		Logger:       testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// suffix makes pod ids unique between runs sharing nothing but habits.
func suffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// serve answers every connection to a TCP listener made inside the
// namespace at path on addr with greeting, until the test ends. It returns
// the listener's address.
func serve(t testing.TB, path string, addr netip.Addr, greeting string) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(path, func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, greeting)
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// fetch connects from inside the namespace at path to to and reads what
// the server says.
func fetch(path string, to netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := netns.Dial(ctx, path, "tcp4", to.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// ping sends one ICMP echo request from inside the namespace at path to
// dst and waits for the reply.
func ping(path string, dst netip.Addr) error {
	var pc net.PacketConn
	if err := netns.Do(path, func() error {
		var err error
		pc, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return err
	}
	defer pc.Close()
	id := uint16(time.Now().UnixNano())
	msg := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'b', 'e', 'r', 't', 'h'}
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	if _, err := pc.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		// Raw IPv4 ICMP sockets return the ICMP message without the IP
		// header. Type 0 is an echo reply.
		if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && from.String() == dst.String() {
			return nil
		}
		if n >= 8 && buf[0] == 3 {
			return errors.New("destination unreachable")
		}
	}
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// nlHandle opens netlink in the namespace at path for the test.
func nlHandle(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// bridgePorts lists the links enslaved to the bridge in the machine.
func bridgePorts(t testing.TB, h *netlink.Handle, bridge string) []netlink.Link {
	t.Helper()
	br, err := h.LinkByName(bridge)
	if err != nil {
		t.Fatalf("bridge %s: %v", bridge, err)
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var ports []netlink.Link
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l)
		}
	}
	return ports
}
