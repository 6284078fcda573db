package runtime

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/cni"
	"berth.dev/berth/nodes/runtime/netns"
)

// Sandboxes on a pod network: a pod made before the network keeps
// loopback only, a new one gets an address (in status, hosts and with the
// cluster DNS in resolv.conf), CNI DEL returns it on removal, and an
// address leaked by a pod without a sandbox is collected when the network
// is set.
func TestPodNetworkSandboxes(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.Require(t, filepath.Join(cni.DefaultPluginDir, "bridge"), filepath.Join(cni.DefaultPluginDir, "host-local"), filepath.Join(cni.DefaultPluginDir, "loopback"))
	cd := testenv.Containerd(t)
	h := newHarness(t, cd)
	ctx := context.Background()
	machine, err := netns.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Remove(machine) })

	early := testPod("early", "unused")
	if sb, err := h.rt.CreateSandbox(ctx, early); err != nil || len(sb.PodIPs) != 0 {
		t.Fatalf("sandbox without a pod network: %+v, %v", sb, err)
	}

	cidr := netip.MustParsePrefix("198.18.220.0/24")
	n, err := cni.New(cni.Config{PodCIDR: cidr, StateDir: filepath.Join(h.state, "cni"), MachineNetNS: machine})
	if err != nil {
		t.Fatal(err)
	}
	// A pod that has no sandbox holds an address (an agent that died
	// between ADD and its record).
	leakNS, err := netns.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Remove(leakNS) })
	if _, err := n.Attach(ctx, "uid-gone", leakNS, nil); err != nil {
		t.Fatal(err)
	}
	gw := netip.MustParseAddr("198.18.220.1")
	if err := h.rt.SetPodNetwork(ctx, PodNetwork{CNI: n, DNS: gw, Domain: "cluster.local"}); err != nil {
		t.Fatal(err)
	}
	holders := func() []string {
		allocs, err := n.Allocations()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range allocs {
			out = append(out, a.PodID)
		}
		return out
	}
	if got := holders(); len(got) != 0 {
		t.Errorf("addresses held after the collection: %v; want none", got)
	}

	pod := testPod("web", "unused")
	pod.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"example.test"}}
	sb, err := h.rt.CreateSandbox(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if len(sb.PodIPs) != 1 || !cidr.Contains(netip.MustParseAddr(sb.PodIPs[0])) {
		t.Fatalf("pod addresses %v; want one of %s", sb.PodIPs, cidr)
	}
	if got := holders(); !slices.Equal(got, []string{pod.UID}) {
		t.Errorf("addresses held for %v; want %s", got, pod.UID)
	}
	resolv, _ := os.ReadFile(filepath.Join(sb.Dir, "etc", "resolv.conf"))
	if want := "search default.svc.cluster.local svc.cluster.local cluster.local"; !strings.Contains(string(resolv), want) ||
		!strings.Contains(string(resolv), "nameserver 198.18.220.1\n") || !strings.Contains(string(resolv), " example.test") ||
		!strings.Contains(string(resolv), "options ndots:5") {
		t.Errorf("resolv.conf:\n%s", resolv)
	}
	hosts, _ := os.ReadFile(filepath.Join(sb.Dir, "etc", "hosts"))
	if !strings.Contains(string(hosts), sb.PodIPs[0]+"\tweb\n") {
		t.Errorf("hosts:\n%s", hosts)
	}
	sbs, err := h.rt.ListSandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sbs {
		if s.PodUID == early.UID && len(s.PodIPs) != 0 {
			t.Errorf("the pod made before the network got addresses: %v", s.PodIPs)
		}
	}
	// A new Runtime (agent restart) finds the addresses in the record.
	if again, err := h.newRuntime().CreateSandbox(ctx, pod); err != nil || !slices.Equal(again.PodIPs, sb.PodIPs) {
		t.Errorf("sandbox after a restart: %+v, %v", again, err)
	}

	for _, p := range []*api.Pod{pod, early} {
		if err := h.rt.RemoveSandbox(ctx, p.UID); err != nil {
			t.Fatal(err)
		}
	}
	if got := holders(); len(got) != 0 {
		t.Errorf("addresses held after the pods were removed: %v", got)
	}
}

// BenchmarkSandboxOnPodNetwork makes and removes one sandbox on a pod
// network: namespaces, CNI ADD (bridge, host-local, loopback), pod files,
// then CNI DEL and teardown.
func BenchmarkSandboxOnPodNetwork(b *testing.B) {
	testenv.RequireRoot(b)
	testenv.Require(b, filepath.Join(cni.DefaultPluginDir, "bridge"), filepath.Join(cni.DefaultPluginDir, "host-local"), filepath.Join(cni.DefaultPluginDir, "loopback"))
	cd := testenv.Containerd(b)
	dir, err := os.MkdirTemp("", "berth-rt-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	machine, err := netns.New(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { netns.Remove(machine) })
	ctx := context.Background()
	rt, err := New(ctx, Options{Address: cd.Address(), Namespace: "bench-" + suffixOf(b), StateDir: filepath.Join(dir, "state")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rt.Close() })
	n, err := cni.New(cni.Config{PodCIDR: netip.MustParsePrefix("198.18.221.0/24"), StateDir: filepath.Join(dir, "cni"), MachineNetNS: machine})
	if err != nil {
		b.Fatal(err)
	}
	if err := rt.SetPodNetwork(ctx, PodNetwork{CNI: n, DNS: netip.MustParseAddr("198.18.221.1")}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		pod := testPod("bench", "unused")
		sb, err := rt.CreateSandbox(ctx, pod)
		if err != nil || len(sb.PodIPs) != 1 {
			b.Fatal(sb, err)
		}
		if err := rt.RemoveSandbox(ctx, pod.UID); err != nil {
			b.Fatal(err)
		}
	}
}

func suffixOf(b *testing.B) string {
	return strings.TrimPrefix(testPod("x", "").UID, "uid-")
}
