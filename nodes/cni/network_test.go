package cni

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"berth.dev/berth/nodes/runtime/netns"
)

func TestAttachDetach(t *testing.T) {
	requireCNI(t)
	ctx := context.Background()
	n := newTestNetwork(t, "", "198.18.64.0/24")
	cfg := n.Config()
	podA, podB := newNetNS(t), newNetNS(t)
	idA, idB := "pod-a-"+suffix(), "pod-b-"+suffix()

	a, err := n.Attach(ctx, idA, podA, map[string]string{"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Attach(ctx, idB, podB, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a: %+v, b: %+v", a, b)
	for _, att := range []Attachment{a, b} {
		if len(att.IPs) != 1 || !cfg.PodCIDR.Contains(att.IPs[0].Addr()) || att.IPs[0].Bits() != cfg.PodCIDR.Bits() {
			t.Fatalf("addresses %v, want one from %s", att.IPs, cfg.PodCIDR)
		}
		if att.IPs[0].Addr() == cfg.Gateway() {
			t.Errorf("pod got the gateway address %s", cfg.Gateway())
		}
		if att.Gateway != cfg.Gateway() || att.Interface != PodInterface || att.MAC == "" {
			t.Errorf("attachment %+v: want gateway %s on %s with a MAC", att, cfg.Gateway(), PodInterface)
		}
	}
	ipA, ipB := a.IPs[0].Addr(), b.IPs[0].Addr()
	if ipA == ipB {
		t.Fatalf("both pods got %s", ipA)
	}

	// The address is on eth0 inside the pod's namespace.
	links, err := nlHandle(t, podA).LinkByName(PodInterface)
	if err != nil {
		t.Fatalf("pod interface: %v", err)
	}
	addrs, err := nlHandle(t, podA).AddrList(links, 2 /* AF_INET */)
	if err != nil || len(addrs) != 1 || addrs[0].IP.String() != ipA.String() {
		t.Errorf("addresses on the pod's %s: %v, %v; want %s", PodInterface, addrs, err, ipA)
	}

	// libcni's cache and host-local's files are in this machine's state
	// dir, not in /var/lib/cni where every machine of a lab would share them.
	for _, f := range []string{
		filepath.Join(cfg.cacheDir(), "results", cfg.NetworkName+"-"+idA+"-"+PodInterface),
		filepath.Join(cfg.allocDir(), ipA.String()),
	} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("state file: %v", err)
		}
	}
	for _, f := range []string{
		filepath.Join(libcni.CacheDir, "results", cfg.NetworkName+"-"+idA+"-"+PodInterface),
		filepath.Join("/var/lib/cni/networks", cfg.NetworkName, ipA.String()),
	} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s written outside the state dir", f)
		}
	}

	allocs, err := n.Allocations()
	if err != nil {
		t.Fatal(err)
	}
	want := []Allocation{{IP: ipA, PodID: idA, Interface: PodInterface}, {IP: ipB, PodID: idB, Interface: PodInterface}}
	slices.SortFunc(want, func(x, y Allocation) int { return x.IP.Compare(y.IP) })
	if !slices.Equal(allocs, want) {
		t.Errorf("allocations %+v, want %+v", allocs, want)
	}

	// Pod to pod, pod to the gateway (the machine), both ways.
	if got, err := fetch(podA, serve(t, podB, ipB, "from b")); got != "from b" {
		t.Errorf("pod a to pod b over TCP: %q, %v", got, err)
	}
	if got, err := fetch(podB, serve(t, podA, ipA, "from a")); got != "from a" {
		t.Errorf("pod b to pod a over TCP: %q, %v", got, err)
	}
	if got, err := fetch(podA, serve(t, cfg.MachineNetNS, cfg.Gateway(), "from machine")); got != "from machine" {
		t.Errorf("pod a to the gateway over TCP: %q, %v", got, err)
	}
	for _, p := range []struct {
		from string
		to   netip.Addr
	}{{podA, ipB}, {podB, ipA}, {podA, cfg.Gateway()}} {
		if err := ping(p.from, p.to); err != nil {
			t.Errorf("ping %v: %v", p.to, err)
		}
	}

	// Every port of the bridge hairpins, so a pod reaches itself through
	// a Service address that the machine's nftables sends back to it.
	h := nlHandle(t, cfg.MachineNetNS)
	ports := bridgePorts(t, h, cfg.Bridge)
	if len(ports) != 2 {
		t.Fatalf("bridge has %d ports, want 2", len(ports))
	}
	for _, p := range ports {
		pi, err := h.LinkGetProtinfo(p)
		if err != nil || !pi.Hairpin {
			t.Errorf("port %s: hairpin %v (%v)", p.Attrs().Name, pi.Hairpin, err)
		}
	}
	// The bridge holds the gateway address.
	br, err := h.LinkByName(cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if addrs, err := h.AddrList(br, 2); err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != netip.PrefixFrom(cfg.Gateway(), cfg.PodCIDR.Bits()).String() {
		t.Errorf("bridge addresses %v, %v; want %s/%d", addrs, err, cfg.Gateway(), cfg.PodCIDR.Bits())
	}

	for _, p := range []struct{ id, path string }{{idA, podA}, {idB, podB}} {
		if err := n.Detach(ctx, p.id, p.path); err != nil {
			t.Fatal(err)
		}
	}
	assertReleased(t, n)
	if ports := bridgePorts(t, h, cfg.Bridge); len(ports) != 0 {
		t.Errorf("bridge keeps %d ports after detach", len(ports))
	}
	// Detach is idempotent.
	if err := n.Detach(ctx, idA, podA); err != nil {
		t.Errorf("second detach: %v", err)
	}
	// The namespaces can be attached again and get addresses again.
	if _, err := n.Attach(ctx, idA, podA, nil); err != nil {
		t.Fatalf("attach after detach: %v", err)
	}
	// Attach repeated without a Detach (an agent retrying after a crash)
	// converges: one address, one port, a working pod.
	again, err := n.Attach(ctx, idA, podA, nil)
	if err != nil {
		t.Fatalf("repeated attach: %v", err)
	}
	if allocs, err := n.Allocations(); err != nil || len(allocs) != 1 || allocs[0].IP != again.IPs[0].Addr() {
		t.Errorf("allocations after a repeated attach: %+v, %v; want only %s", allocs, err, again.IPs[0])
	}
	if ports := bridgePorts(t, h, cfg.Bridge); len(ports) != 1 {
		t.Errorf("bridge has %d ports after a repeated attach, want 1", len(ports))
	}
	if got, err := fetch(podA, serve(t, cfg.MachineNetNS, cfg.Gateway(), "again")); got != "again" {
		t.Errorf("pod after a repeated attach: %q, %v", got, err)
	}
	// The pod moves to a new namespace: the old one loses its veth.
	podC := newNetNS(t)
	if _, err := n.Attach(ctx, idA, podC, nil); err != nil {
		t.Fatalf("attach in a new namespace: %v", err)
	}
	if _, err := nlHandle(t, podA).LinkByName(PodInterface); err == nil {
		t.Errorf("the old namespace keeps %s", PodInterface)
	}
	if ports := bridgePorts(t, h, cfg.Bridge); len(ports) != 1 {
		t.Errorf("bridge has %d ports after the move, want 1", len(ports))
	}
	if err := n.Detach(ctx, idA, podC); err != nil {
		t.Fatal(err)
	}
	assertReleased(t, n)
}

// assertReleased checks that host-local and libcni hold nothing: no
// address files, no cached results.
func assertReleased(t *testing.T, n *Network) {
	t.Helper()
	entries, err := os.ReadDir(n.cfg.allocDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "lock" && !strings.HasPrefix(e.Name(), "last_reserved_ip.") {
			t.Errorf("host-local keeps %s", e.Name())
		}
	}
	cached, err := os.ReadDir(filepath.Join(n.cfg.cacheDir(), "results"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range cached {
		t.Errorf("libcni keeps cached result %s", e.Name())
	}
}

func TestDetachGoneNamespace(t *testing.T) {
	requireCNI(t)
	ctx := context.Background()
	n := newTestNetwork(t, "", "198.18.65.0/24")
	h := nlHandle(t, n.cfg.MachineNetNS)

	// The namespace was removed before the pod was detached.
	pod := newNetNS(t)
	id := "gone-" + suffix()
	if _, err := n.Attach(ctx, id, pod, nil); err != nil {
		t.Fatal(err)
	}
	if err := netns.Remove(pod); err != nil {
		t.Fatal(err)
	}
	if err := n.Detach(ctx, id, pod); err != nil {
		t.Fatalf("detach after the namespace was removed: %v", err)
	}
	if err := n.Detach(ctx, id, pod); err != nil {
		t.Fatalf("second detach after the namespace was removed: %v", err)
	}
	assertReleased(t, n)

	// A file is left at the path with no namespace on it (after a reboot).
	pod = newNetNS(t)
	id = "stale-" + suffix()
	if _, err := n.Attach(ctx, id, pod, nil); err != nil {
		t.Fatal(err)
	}
	if err := netns.Remove(pod); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pod, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := n.Detach(ctx, id, pod); err != nil {
		t.Fatalf("detach with a stale file at the namespace path: %v", err)
	}
	assertReleased(t, n)
	if ports := bridgePorts(t, h, n.cfg.Bridge); len(ports) != 0 {
		t.Errorf("bridge keeps %d ports", len(ports))
	}

	// Never attached at all.
	if err := n.Detach(ctx, "never-"+suffix(), filepath.Join(t.TempDir(), "none")); err != nil {
		t.Errorf("detach of a pod never attached: %v", err)
	}
}

func TestAttachFailureLeavesNothing(t *testing.T) {
	requireCNI(t)
	ctx := context.Background()
	// The real bridge and host-local, and a loopback plugin that fails ADD:
	// the bridge network is attached first, so the failure comes after an
	// address was allocated and a veth made.
	plugDir := t.TempDir()
	for _, p := range []string{"bridge", "host-local"} {
		if err := os.Symlink(filepath.Join(DefaultPluginDir, p), filepath.Join(plugDir, p)); err != nil {
			t.Fatal(err)
		}
	}
	failing := "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"injected failure\"}'; exit 1; fi\n"
	if err := os.WriteFile(filepath.Join(plugDir, "loopback"), []byte(failing), 0o755); err != nil {
		t.Fatal(err)
	}
	machine := newNetNS(t)
	n, err := New(Config{
		PodCIDR:      netip.MustParsePrefix("198.18.66.0/24"),
		StateDir:     t.TempDir(),
		PluginDir:    plugDir,
		MachineNetNS: machine,
		Logger:       testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	pod := newNetNS(t)
	_, err = n.Attach(ctx, "fails-"+suffix(), pod, nil)
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("attach with a failing plugin: %v", err)
	}
	assertReleased(t, n)
	if ports := bridgePorts(t, nlHandle(t, machine), n.cfg.Bridge); len(ports) != 0 {
		t.Errorf("bridge keeps %d ports after a failed attach", len(ports))
	}
	if _, err := nlHandle(t, pod).LinkByName(PodInterface); err == nil {
		t.Errorf("the pod keeps %s after a failed attach", PodInterface)
	}

	// A namespace path with nothing there fails before any plugin work.
	if _, err := n.Attach(ctx, "nons-"+suffix(), filepath.Join(t.TempDir(), "none"), nil); err == nil {
		t.Fatal("attach without a namespace succeeded")
	}
	assertReleased(t, n)
}

func TestGC(t *testing.T) {
	requireCNI(t)
	ctx := context.Background()
	n := newTestNetwork(t, "", "198.18.67.0/24")
	h := nlHandle(t, n.cfg.MachineNetNS)

	live, gone, orphan := newNetNS(t), newNetNS(t), newNetNS(t)
	liveID, goneID, orphanID := "live-"+suffix(), "gone-"+suffix(), "orphan-"+suffix()
	att := map[string]Attachment{}
	for _, p := range []struct{ id, path string }{{liveID, live}, {goneID, gone}, {orphanID, orphan}} {
		a, err := n.Attach(ctx, p.id, p.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		att[p.id] = a
	}
	// goneID's namespace went without a Detach (an agent crash); orphanID's
	// namespace is still there but its pod is not live any more.
	if err := netns.Remove(gone); err != nil {
		t.Fatal(err)
	}
	// An allocation DEL cannot match (another interface name), as a
	// hand-edited or older configuration leaves: removed under the lock.
	ghost := "198.18.67.200"
	if err := os.WriteFile(filepath.Join(n.cfg.allocDir(), ghost), []byte("ghost\r\neth9"), 0o600); err != nil {
		t.Fatal(err)
	}

	isLive := func(id string) bool { return id == liveID }
	collected, err := n.GC(ctx, isLive)
	if err != nil {
		t.Fatal(err)
	}
	wantCollected := []string{goneID, "ghost", orphanID}
	slices.Sort(wantCollected)
	if !slices.Equal(collected, wantCollected) {
		t.Errorf("collected %v, want %v", collected, wantCollected)
	}
	allocs, err := n.Allocations()
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 1 || allocs[0].PodID != liveID || allocs[0].IP != att[liveID].IPs[0].Addr() {
		t.Errorf("allocations after GC: %+v, want only %s's", allocs, liveID)
	}
	cached, err := n.cachedResults()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cached {
		if c.ContainerID != liveID {
			t.Errorf("cached result of %s kept", c.ContainerID)
		}
	}
	if len(cached) == 0 {
		t.Error("the live pod's cached results were removed")
	}
	// The orphan's veth went with its DEL; the live pod's stays and works.
	if ports := bridgePorts(t, h, n.cfg.Bridge); len(ports) != 1 {
		t.Errorf("bridge has %d ports after GC, want 1", len(ports))
	}
	if got, err := fetch(live, serve(t, n.cfg.MachineNetNS, n.cfg.Gateway(), "alive")); got != "alive" {
		t.Errorf("live pod after GC: %q, %v", got, err)
	}
	// Nothing more to collect.
	if again, err := n.GC(ctx, isLive); err != nil || len(again) != 0 {
		t.Errorf("second GC collected %v, %v", again, err)
	}
	if err := n.Detach(ctx, liveID, live); err != nil {
		t.Fatal(err)
	}
	assertReleased(t, n)
}

func TestConcurrentAttach(t *testing.T) {
	requireCNI(t)
	ctx := context.Background()
	n := newTestNetwork(t, "", "198.18.68.0/24")
	const pods = 10
	paths := make([]string, pods)
	ids := make([]string, pods)
	for i := range paths {
		paths[i] = newNetNS(t)
		ids[i] = "par-" + suffix()
	}
	ips := make([]Attachment, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i := range paths {
		wg.Go(func() { ips[i], errs[i] = n.Attach(ctx, ids[i], paths[i], nil) })
	}
	wg.Wait()
	seen := map[string]string{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("attach %d: %v", i, err)
		}
		ip := ips[i].IPs[0].Addr().String()
		if other, ok := seen[ip]; ok {
			t.Errorf("%s given to %s and %s", ip, other, ids[i])
		}
		seen[ip] = ids[i]
	}
	allocs, err := n.Allocations()
	if err != nil || len(allocs) != pods {
		t.Errorf("%d allocations (%v), want %d", len(allocs), err, pods)
	}
	for i := range paths {
		wg.Go(func() { errs[i] = n.Detach(ctx, ids[i], paths[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("detach %d: %v", i, err)
		}
	}
	assertReleased(t, n)
}

func TestCancelledWait(t *testing.T) {
	requireCNI(t)
	n := newTestNetwork(t, "", "198.18.69.0/24")
	release, err := n.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.Attach(ctx, "waits-"+suffix(), newNetNS(t), nil); err == nil {
		t.Fatal("attach ran while another CNI call held the lock and its context was done")
	}
}

// BenchmarkAttachDetach times one pod's Attach and Detach (five plugin
// runs: bridge with host-local, and loopback, on each side).
func BenchmarkAttachDetach(b *testing.B) {
	requireCNI(b)
	ctx := context.Background()
	n := newTestNetwork(b, "", "198.18.70.0/24")
	n.log = slog.New(slog.DiscardHandler)
	pod := newNetNS(b)
	id := "bench-" + suffix()
	for b.Loop() {
		if _, err := n.Attach(ctx, id, pod, nil); err != nil {
			b.Fatal(err)
		}
		if err := n.Detach(ctx, id, pod); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
}

// BenchmarkPluginExec times one run of a plugin binary doing nothing
// (VERSION), the floor under every plugin run in BenchmarkAttachDetach.
func BenchmarkPluginExec(b *testing.B) {
	requireCNI(b)
	for b.Loop() {
		cmd := exec.Command(filepath.Join(DefaultPluginDir, "loopback"))
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
		if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "1.0.0") {
			b.Fatalf("%s: %v", out, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
}
