package agent

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"berth.dev/berth/nodes/api"
)

// recordingApplier records the Networks it is given and fails while told to.
type recordingApplier struct {
	mu      sync.Mutex
	applied []int64 // generations
	fail    error
}

func (a *recordingApplier) Apply(_ context.Context, n api.Network) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.applied = append(a.applied, n.Generation)
	return nil
}

func (a *recordingApplier) generations() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int64(nil), a.applied...)
}

func (a *recordingApplier) setFail(err error) {
	a.mu.Lock()
	a.fail = err
	a.mu.Unlock()
}

func testNetwork(gen int64) api.Network {
	return api.Network{
		Generation: gen, Machine: "node-1", PodCIDR: netip.MustParsePrefix("198.18.64.0/24"),
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.64.0/18")},
		Routes:       []api.PodRoute{{CIDR: netip.MustParsePrefix("198.18.65.0/24"), Via: netip.MustParseAddr("198.18.0.12"), Machine: "node-2"}},
		Services: []api.Service{{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.10")},
			Ports: []api.ServicePort{{Port: 80}}}},
	}
}

func TestSetNetworkIdempotentAndPersisted(t *testing.T) {
	app := &recordingApplier{}
	h := newHarnessWith(t, func(h *harness) { h.network = app })
	ctx := context.Background()

	if n, _ := h.m.Node(ctx); n.Network != (api.NetworkStatus{}) {
		t.Errorf("status before any network: %+v", n.Network)
	}
	n := testNetwork(3)
	if err := h.m.SetNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	// The same again is nothing to do; an older one, or the same
	// generation with another content, a conflict.
	if err := h.m.SetNetwork(ctx, n); err != nil {
		t.Errorf("repeat: %v", err)
	}
	if err := h.m.SetNetwork(ctx, testNetwork(2)); !errors.Is(err, api.ErrConflict) {
		t.Errorf("older generation: %v, want ErrConflict", err)
	}
	other := testNetwork(3)
	other.Services = nil
	if err := h.m.SetNetwork(ctx, other); !errors.Is(err, api.ErrConflict) {
		t.Errorf("same generation, other content: %v, want ErrConflict", err)
	}
	if got := app.generations(); len(got) != 1 || got[0] != 3 {
		t.Errorf("applied %v, want [3]", got)
	}
	info, _ := h.m.Node(ctx)
	if info.Network != (api.NetworkStatus{Generation: 3, Digest: n.Digest()}) {
		t.Errorf("status %+v", info.Network)
	}
	fi, err := os.Stat(filepath.Join(h.stateDir, networkFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("persisted file: %v, %v; want mode 0600", fi, err)
	}

	// A new agent applies the persisted Network before anything else.
	h.restart()
	deadline := time.Now().Add(5 * time.Second)
	for len(app.generations()) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // Run applies it as it starts
	}
	if got := app.generations(); len(got) != 2 || got[1] != 3 {
		t.Errorf("after a restart applied %v, want [3 3]", got)
	}
	got, _ := h.m.Network(ctx)
	if got.Digest() != n.Digest() || got.Generation != 3 {
		t.Errorf("network after a restart: %+v", got)
	}
}

func TestSetNetworkApplyFailureIsReportedAndRetried(t *testing.T) {
	app := &recordingApplier{}
	h := newHarnessWith(t, func(h *harness) { h.network = app })
	ctx := context.Background()
	if err := h.m.SetNetwork(ctx, testNetwork(1)); err != nil {
		t.Fatal(err)
	}
	app.setFail(errors.New("route 198.18.65.0/24: network is unreachable"))
	err := h.m.SetNetwork(ctx, testNetwork(2))
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("failed apply: %v", err)
	}
	info, _ := h.m.Node(ctx)
	if info.Network.Generation != 2 || !strings.Contains(info.Network.Error, "unreachable") {
		t.Errorf("status after a failed apply: %+v", info.Network)
	}
	// The controller may send it again: it is tried again.
	if err := h.m.SetNetwork(ctx, testNetwork(2)); err == nil {
		t.Error("repeat of a failing network: no error")
	}
	// And the resync tries again by itself once the cause is gone.
	app.setFail(nil)
	h.advance(DefaultResyncInterval + time.Second)
	info, _ = h.m.Node(ctx)
	if info.Network.Error != "" || info.Network.Generation != 2 {
		t.Errorf("status after the retry: %+v", info.Network)
	}
	if got := app.generations(); len(got) != 2 || got[1] != 2 {
		t.Errorf("applied %v, want [1 2]", got)
	}
}

func TestValidateNetwork(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name   string
		modify func(n *api.Network)
		want   string
	}{
		{"valid", func(n *api.Network) {}, ""},
		{"no pod CIDR", func(n *api.Network) { n.PodCIDR = netip.Prefix{}; n.Routes = nil }, ""},
		{"no machine", func(n *api.Network) { n.Machine = "" }, "machine is empty"},
		{"unmasked pod CIDR", func(n *api.Network) { n.PodCIDR = p("198.18.64.1/24") }, "host bits set"},
		{"tiny pod CIDR", func(n *api.Network) { n.PodCIDR = p("198.18.64.0/31") }, "leaves no address"},
		{"IPv6 pod CIDR", func(n *api.Network) { n.PodCIDR = p("fd00::/64") }, "only IPv4"},
		{"route to own CIDR", func(n *api.Network) { n.Routes[0].CIDR = p("198.18.64.0/25") }, "own pod CIDR"},
		{"route twice", func(n *api.Network) { n.Routes = append(n.Routes, n.Routes[0]) }, "given twice"},
		{"route without gateway", func(n *api.Network) { n.Routes[0].Via = netip.Addr{} }, "not an IPv4 address"},
		{"unmasked cluster CIDR", func(n *api.Network) { n.ClusterCIDRs[0] = p("198.18.64.0/16") }, "clusterCIDRs[0]"},
		{"service twice", func(n *api.Network) { n.Services = append(n.Services, n.Services[0]) }, "service default/web: given twice"},
		{"port zero", func(n *api.Network) { n.Services[0].Ports[0].Port = 0 }, "out of range"},
		{"bad protocol", func(n *api.Network) { n.Services[0].Ports[0].Protocol = "ICMP" }, `unknown protocol "ICMP"`},
		{"bad upstream", func(n *api.Network) { n.DNS.Upstreams = []string{"dns.example"} }, "not an address"},
		{"held twice", func(n *api.Network) { n.HeldIPs = []netip.Addr{a("198.18.0.200"), a("198.18.0.200")} }, "given twice"},
		{"policy range", func(n *api.Network) {
			n.Policies = []api.NetworkPolicy{{Namespace: "a", Name: "p", Ingress: true,
				IngressRules: []api.PolicyRule{{Ports: []api.PolicyPort{{Port: 90, EndPort: 80}}}}}}
		}, "port range 90-80"},
		{"policy except outside", func(n *api.Network) {
			n.Policies = []api.NetworkPolicy{{Namespace: "a", Name: "p", Ingress: true,
				IngressRules: []api.PolicyRule{{Peers: []api.PolicyPeer{{Block: p("10.0.0.0/8"), Except: []netip.Prefix{p("11.0.0.0/8")}}}}}}}
		}, "outside block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testNetwork(1)
			tc.modify(&n)
			err := validateNetwork(n)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("valid network refused: %v", err)
			case tc.want != "" && (err == nil || !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestNetworkAppliersRunAllAndJoinErrors(t *testing.T) {
	ok, failing := &recordingApplier{}, &recordingApplier{fail: errors.New("ingress: bad certificate")}
	last := &recordingApplier{}
	err := NetworkAppliers{ok, failing, last}.Apply(context.Background(), testNetwork(4))
	if err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Errorf("error %v", err)
	}
	if len(ok.generations()) != 1 || len(last.generations()) != 1 {
		t.Errorf("applied: %v, %v; want every applier to run", ok.generations(), last.generations())
	}
}

func TestHostNetworkPodReportsTheNodeIP(t *testing.T) {
	h := newHarness(t)
	n := testNetwork(1)
	n.NodeIPs = []netip.Addr{netip.MustParseAddr("198.18.0.11")}
	if err := h.m.SetNetwork(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	host := mkPod("host", ctr("app"))
	host.Spec.HostNetwork = true
	h.set(1, host, mkPod("web", ctr("app")))
	if got := h.pod("default/host").PodIP; got != "198.18.0.11" {
		t.Errorf("hostNetwork pod's IP %q, want the node's", got)
	}
	if got := h.pod("default/web").PodIP; got != "" {
		t.Errorf("pod without a pod network address reports %q", got)
	}
}
