package network

import (
	"net/netip"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"

	goldenfile "berth.dev/berth/internal/golden"
)

// fleetInput is testdata/fleet with pods on every machine: m1 and m2
// healthy, m3 reachable but its last Network failed, m4 unreachable and
// named by an unresolved DNS name.
func fleetInput(t testing.TB, mem Memory) Input {
	d := load(t, os.DirFS("testdata/fleet"))
	machines := []Machine{
		{Name: "m1", Reachable: true, Healthy: true},
		{Name: "m2", Reachable: true, Healthy: true},
		{Name: "m3", Reachable: true},
		{Name: "m4"},
	}
	// Pod CIDRs first, to give the pods addresses in them.
	addrs := map[string][]netip.Addr{"m3": {netip.MustParseAddr("198.18.0.13")}}
	cidrs := compute(t, Input{Desired: d, Machines: machines, Addresses: addrs, Memory: mem})
	ip := func(m string, n uint64) string { return podIP(t, cidrs, m, n) }
	web := map[string]string{"app": "web"}

	webA := running("shop", "web-a", ip("m1", 2), web, port("http", 8080))
	db0 := running("shop", "db-0", ip("m1", 3), map[string]string{"app": "db"}, port("pg", 5432))
	db0.Status.Ready = false
	db0.Spec.Spec.Hostname, db0.Spec.Spec.Subdomain = "db-0", "db"
	webB := running("shop", "web-b", ip("m2", 2), web, port("http", 8080))
	webB.Stopping = true
	tool := running("ops", "tool", ip("m2", 3), map[string]string{"app": "tool"}, port("http", 8000))
	frontUI := running("shop", "front-ui", ip("m2", 4), map[string]string{"role": "frontend"})
	webC := running("shop", "web-c", ip("m3", 2), web)
	webC.Spec = nil // its resolved pod is not known: no named port
	dns := running("kube-system", "dns", ip("m3", 3), map[string]string{"k8s-app": "kube-dns"})
	done := running("shop", "web-old", ip("m3", 4), web, port("http", 8080))
	done.Status.Phase = corev1.PodSucceeded
	noIP := running("shop", "web-new", "", web, port("http", 8080))
	webD := running("shop", "web-d", ip("m1", 4), web, port("http", 8090))
	webD.Status.Terminating = true

	machines[0].Pods = []Pod{webA, db0, webD}
	machines[1].Pods = []Pod{webB, tool, frontUI}
	machines[2].Pods = []Pod{webC, dns, done, noIP}
	// m4 is unreachable: what it runs is not known.
	return Input{Desired: d, Machines: machines, Addresses: addrs, Memory: mem}
}

// TestGoldenFleet is the whole output for testdata/fleet, as the second
// pass sees it (Memory from the first); the first must agree.
func TestGoldenFleet(t *testing.T) {
	first := compute(t, fleetInput(t, Memory{}))
	second := compute(t, fleetInput(t, first.Memory))
	got := dump(t, second)
	if d := dump(t, first); d != got {
		t.Errorf("a second pass with the first one's memory differs:\n%s", goldenfile.Diff(d, got))
	}
	golden(t, "fleet.golden.json", got)
}
