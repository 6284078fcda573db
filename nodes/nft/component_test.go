package nft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
)

// lab is a router namespace holding the table, two pod namespaces behind
// it and a client namespace outside the pod network:
//
//	client 198.18.64.2 -- 198.18.64.1  router  198.18.16.1 -- 198.18.16.2 pod a
//	                                           198.18.16.5 -- 198.18.16.6 pod b
type lab struct {
	router, a, b, client *testNetns
}

func newLab(t testing.TB) *lab {
	l := &lab{router: newNetns(t, "r"), a: newNetns(t, "a"), b: newNetns(t, "b"), client: newNetns(t, "c")}
	link(t, l.router, "198.18.16.1/30", l.a, "198.18.16.2/30")
	link(t, l.router, "198.18.16.5/30", l.b, "198.18.16.6/30")
	link(t, l.router, "198.18.64.1/30", l.client, "198.18.64.2/30")
	l.a.defaultRoute(t, "198.18.16.1")
	l.b.defaultRoute(t, "198.18.16.5")
	l.client.defaultRoute(t, "198.18.64.1")
	l.router.sysctl(t, "net/ipv4/ip_forward", "1")
	// A machine has a default route (without one, traffic to a ClusterIP
	// without endpoints would be refused by routing before any hook saw it).
	gw := newNetns(t, "g")
	link(t, l.router, "198.18.65.1/30", gw, "198.18.65.2/30")
	l.router.defaultRoute(t, "198.18.65.2")
	l.a.listen(t, "198.18.16.2:8080", "a")
	l.b.listen(t, "198.18.16.6:8080", "b")
	return l
}

func labDesired(eps ...Endpoint) *Desired {
	return &Desired{
		NodeIPs:      []netip.Addr{addr("198.18.64.1")},
		ClusterCIDRs: []netip.Prefix{prefix("198.18.16.0/20")},
		NodePodCIDRs: []netip.Prefix{prefix("198.18.16.0/24")},
		ServiceCIDRs: []netip.Prefix{prefix("198.19.0.0/16")},
		Services: []Service{{
			Namespace: "shop", Name: "web", Type: NodePort,
			ClusterIPs: []netip.Addr{addr("198.19.0.10")},
			Ports:      []ServicePort{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080}},
			Endpoints:  eps,
		}},
	}
}

// replies dials addr n times from ns and counts the replies by text.
func replies(t *testing.T, ns *testNetns, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		r, err := ns.dial(t, addr)
		if err != nil {
			t.Fatalf("connect to %s from %s: %v", addr, ns.name, err)
		}
		got[r]++
	}
	return got
}

func TestServiceTraffic(t *testing.T) {
	l := newLab(t)
	s := l.router.syncer(t)
	ctx := context.Background()
	d := labDesired(ep("198.18.16.2", 8080, true, true), ep("198.18.16.6", 8080, true, true))
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); !st.Full {
		t.Errorf("first sync was not a full rebuild: %+v", st)
	}

	// From outside the pod network: both endpoints answer, and they see
	// the router's address (masqueraded).
	got := replies(t, l.client, "198.19.0.10:80", 40)
	want := map[string]bool{"a from 198.18.16.1": true, "b from 198.18.16.5": true}
	for r := range got {
		if !want[r] {
			t.Errorf("unexpected reply %q (all: %v)", r, got)
		}
	}
	if len(got) != 2 {
		t.Errorf("40 connections reached %v, want both endpoints", got)
	}
	// NodePort on the node address.
	if r, err := l.client.dial(t, "198.18.64.1:30080"); err != nil || !want[r] {
		t.Errorf("NodePort: %q, %v", r, err)
	}
	// From a pod: its own address is kept, except when it reaches itself
	// (hairpin), which is masqueraded so that the reply comes back through
	// the router.
	for r := range replies(t, l.a, "198.19.0.10:80", 20) {
		if r != "a from 198.18.16.1" && r != "b from 198.18.16.2" {
			t.Errorf("from pod a: unexpected reply %q", r)
		}
	}

	// Readable by Debian's nft (JSON and text), with our elements in it.
	var listing struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	out := l.router.nft(t, "-j", "list", "ruleset")
	if err := json.Unmarshal([]byte(out), &listing); err != nil {
		t.Fatalf("nft -j output does not parse: %v\n%s", err, out)
	}
	found := false
	for _, o := range listing.Nftables {
		if m, ok := o["map"]; ok && strings.Contains(string(m), `"service-endpoints"`) {
			found = strings.Contains(string(m), `"198.19.0.10"`) && strings.Contains(string(m), `"198.18.16.6"`)
		}
	}
	if !found {
		t.Errorf("nft -j does not show the service-endpoints elements:\n%s", out)
	}
	text := l.router.nft(t, "list", "ruleset")
	for _, want := range []string{"numgen random mod 2 offset 1 map @service-endpoints",
		"198.19.0.10 . tcp . 80 . 0x00000002 : 198.18.16.6 . 8080", "198.18.64.1 . tcp . 30080"} {
		if !strings.Contains(text, want) {
			t.Errorf("nft list ruleset lacks %q:\n%s", want, text)
		}
	}

	// A LoadBalancer address routed to this machine.
	lb := labDesired(ep("198.18.16.2", 8080, true, true), ep("198.18.16.6", 8080, true, true))
	lb.Services[0].Type, lb.Services[0].LoadBalancerIPs = LoadBalancer, []netip.Addr{addr("198.18.200.1")}
	if err := s.Sync(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); st.Full || st.ElementsAdded != 3 || st.RulesAdded != 0 {
		t.Errorf("adding a LoadBalancer address: %+v", st)
	}
	for r := range replies(t, l.client, "198.18.200.1:80", 10) {
		if !want[r] {
			t.Errorf("LoadBalancer: unexpected reply %q", r)
		}
	}

	// One endpoint not ready: all traffic goes to the other.
	d = labDesired(ep("198.18.16.2", 8080, false, true), ep("198.18.16.6", 8080, true, true))
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := replies(t, l.client, "198.19.0.10:80", 10); got["b from 198.18.16.5"] != 10 {
		t.Errorf("with a not ready: %v", got)
	}
	// No endpoints: refused at once, by the ClusterIP and the NodePort.
	if err := s.Sync(ctx, labDesired()); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"198.19.0.10:80", "198.18.64.1:30080"} {
		if _, err := l.client.dial(t, a); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s without endpoints: %v, want connection refused\n%s", a, err, l.router.nft(t, "list", "ruleset"))
		}
	}
	// A port the ClusterIP does not serve is refused too.
	if _, err := l.client.dial(t, "198.19.0.10:81"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("unserved port: %v, want connection refused", err)
	}
}

func TestSessionAffinity(t *testing.T) {
	l := newLab(t)
	s := l.router.syncer(t)
	ctx := context.Background()
	d := labDesired(ep("198.18.16.2", 8080, true, true), ep("198.18.16.6", 8080, true, true))
	d.Services[0].AffinityTimeout = time.Minute
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	got := replies(t, l.client, "198.19.0.10:80", 20)
	if len(got) != 1 {
		t.Fatalf("with ClientIP affinity one client reached %v, want one endpoint", got)
	}
	if out := l.router.nft(t, "list", "map", "ip", "berth-test", "affinity"); !strings.Contains(out, "198.18.64.2 . 198.19.0.10 . tcp . 80 timeout") {
		t.Errorf("the client is not in the affinity map:\n%s", out)
	}
	// Debian's nft reads all of it, affinity rules included.
	if out := l.router.nft(t, "list", "ruleset"); !strings.Contains(out, "update @affinity { ip saddr . ct original ip daddr") {
		t.Errorf("nft list ruleset:\n%s", out)
	}
	// nft 1.0.6 has no JSON form for "update @map { key : value }": it
	// warns on stderr and gives the statement as a string.
	var lines []string
	for _, line := range strings.Split(l.router.nft(t, "-j", "list", "ruleset"), "\n") {
		if !strings.HasPrefix(line, "warning: stmt ops map have no json callback") {
			lines = append(lines, line)
		}
	}
	if out := strings.Join(lines, "\n"); !json.Valid([]byte(out)) {
		t.Errorf("nft -j list ruleset is not JSON:\n%s", out)
	}
	// The endpoint the client sticks to goes away: its affinity entry
	// goes with it, and the client reaches the other one.
	var stuck, other Endpoint
	for r := range got {
		stuck, other = d.Services[0].Endpoints[0], d.Services[0].Endpoints[1]
		if strings.HasPrefix(r, "b ") {
			stuck, other = other, stuck
		}
	}
	d.Services[0].Endpoints = []Endpoint{other}
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); st.Full || st.AffinityDeleted != 1 {
		t.Errorf("after removing the endpoint the client sticks to: %+v", st)
	}
	if out := l.router.nft(t, "list", "map", "ip", "berth-test", "affinity"); strings.Contains(out, stuck.IP.String()) {
		t.Errorf("the affinity map still names %s:\n%s", stuck.IP, out)
	}
	if got := replies(t, l.client, "198.19.0.10:80", 5); len(got) != 1 {
		t.Errorf("after the change: %v", got)
	}
	// Another timeout: the affinity rules and sets change incrementally.
	d.Services[0].AffinityTimeout = 2 * time.Minute
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); st.Full || st.SetsAdded != 1 || st.SetsDeleted != 1 || st.ChainsRewritten != 1 {
		t.Errorf("changing the timeout: %+v", st)
	}
	if out := l.router.nft(t, "list", "chain", "ip", "berth-test", chainAffinityRecord); !strings.Contains(out, "@affinity-120s") {
		t.Errorf("affinity-record:\n%s", out)
	}
}

// TestTrafficPolicyLocal: externalTrafficPolicy Local sends outside
// traffic to local endpoints only and keeps its source; pods use every
// endpoint; internalTrafficPolicy Local keeps ClusterIP traffic local.
func TestTrafficPolicyLocal(t *testing.T) {
	l := newLab(t)
	s := l.router.syncer(t)
	ctx := context.Background()
	// a is local, b stands for an endpoint on another machine.
	d := labDesired(ep("198.18.16.2", 8080, true, true), ep("198.18.16.6", 8080, true, false))
	d.Services[0].ExternalTrafficLocal = true
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := replies(t, l.client, "198.18.64.1:30080", 10); got["a from 198.18.64.2"] != 10 {
		t.Errorf("outside traffic to the NodePort: %v, want only a, seeing the client", got)
	}
	if got := replies(t, l.a, "198.18.64.1:30080", 30); len(got) != 2 {
		t.Errorf("pod traffic to the NodePort reached %v, want both endpoints", got)
	}
	if got := replies(t, l.client, "198.19.0.10:80", 30); len(got) != 2 {
		t.Errorf("ClusterIP traffic reached %v, want both endpoints", got)
	}

	// No local endpoint: outside traffic is dropped, pods still get
	// through.
	d.Services[0].Endpoints = d.Services[0].Endpoints[1:]
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := l.client.dialWithin(t, "198.18.64.1:30080", denyTimeout); err == nil {
		t.Error("outside traffic reached a NodePort with externalTrafficPolicy Local and no local endpoint")
	}
	if r, err := l.a.dial(t, "198.18.64.1:30080"); err != nil || r != "b from 198.18.16.2" {
		t.Errorf("pod a to the NodePort: %q, %v", r, err)
	}

	// internalTrafficPolicy Local.
	d = labDesired(ep("198.18.16.2", 8080, true, true), ep("198.18.16.6", 8080, true, false))
	d.Services[0].InternalTrafficLocal = true
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := replies(t, l.client, "198.19.0.10:80", 10); got["a from 198.18.16.1"] != 10 {
		t.Errorf("ClusterIP with internalTrafficPolicy Local: %v, want only a", got)
	}
	d.Services[0].Endpoints[0].Local = false
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := l.client.dialWithin(t, "198.19.0.10:80", denyTimeout); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("ClusterIP with internalTrafficPolicy Local and no local endpoint: %v, want dropped", err)
	}
}

// many is n services with k endpoints each.
func many(n, k int) *Desired {
	d := &Desired{
		NodeIPs:      []netip.Addr{addr("198.18.64.1")},
		ClusterCIDRs: []netip.Prefix{prefix("198.18.0.0/16")},
		NodePodCIDRs: []netip.Prefix{prefix("198.18.16.0/24")},
		Services:     make([]Service, n),
	}
	for i := range n {
		s := Service{Namespace: "ns", Name: fmt.Sprintf("svc-%d", i), Type: ClusterIP,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})},
			Ports:      []ServicePort{{Name: "http", Protocol: TCP, Port: 80}},
			Endpoints:  make([]Endpoint, k),
		}
		for j := range k {
			s.Endpoints[j] = ep(netip.AddrFrom4([4]byte{198, 18, byte(j), byte(i % 250)}).String(), uint16(8000+i/250), true, false)
		}
		d.Services[i] = s
	}
	return d
}

// transaction collects what the kernel reports for the next transaction in
// the namespace.
func transaction(t *testing.T, ns *testNetns, do func()) map[nftables.MonitorEventType][]any {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	if err != nil {
		t.Fatal(err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(16))
	ch, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	do()
	select {
	case evs := <-ch:
		got := map[nftables.MonitorEventType][]any{}
		for _, e := range evs.Changes {
			if e.Error != nil {
				t.Fatalf("monitor: %v", e.Error)
			}
			got[e.Type] = append(got[e.Type], e.Data)
		}
		return got
	case <-time.After(5 * time.Second):
		t.Fatal("no transaction seen")
		return nil
	}
}

func chainNames(objs []any) []string {
	var names []string
	for _, o := range objs {
		names = append(names, o.(*nftables.Chain).Name)
	}
	sort.Strings(names)
	return names
}

// kernelElements lists the elements of a set or map of the test table, as
// Debian's nft prints them.
func kernelElements(t *testing.T, ns *testNetns, kind, set string) map[string]bool {
	t.Helper()
	out := ns.nft(t, "list", kind, "ip", "berth-test", set)
	got := map[string]bool{}
	i := strings.Index(out, "elements = {")
	if i < 0 {
		return got
	}
	body := out[i+len("elements = {"):]
	body = body[:strings.Index(body, "}")]
	for _, e := range strings.Split(body, ",") {
		if e = strings.TrimSpace(e); e != "" {
			got[e] = true
		}
	}
	return got
}

func setDiff(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func TestOneEndpointChangeSendsOnlyTheDelta(t *testing.T) {
	ns := newNetns(t, "delta")
	s := ns.syncer(t)
	ctx := context.Background()
	d := many(300, 5)
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	before := kernelElements(t, ns, "map", mapServiceEndpoints)
	if len(before) != 1500 {
		t.Fatalf("service-endpoints holds %d elements, want 1500", len(before))
	}
	frags := map[serviceKey]*fragment{}
	for k, v := range s.services {
		frags[k] = v.frag
	}

	// Replace one endpoint of one service.
	d.Services[234].Endpoints[2].IP = addr("198.18.99.99")
	ev := transaction(t, ns, func() {
		if err := s.Sync(ctx, d); err != nil {
			t.Fatal(err)
		}
	})
	st := s.LastSync()
	if st.Full || st.ServicesChanged != 1 || st.ElementsAdded != 1 || st.ElementsDeleted != 1 ||
		st.ChainsAdded+st.ChainsDeleted+st.ChainsRewritten+st.RulesAdded+st.SetsAdded+st.SetsDeleted != 0 {
		t.Errorf("stats: %+v", st)
	}
	// The mirror: every other service keeps its fragment.
	for k, v := range s.services {
		if k.name != "svc-234" && v.frag != frags[k] {
			t.Errorf("%s was compiled again", k)
		}
	}
	// The kernel: one element out, one in, nothing else.
	if a, d := len(ev[nftables.MonitorEventTypeNewSetElem]), len(ev[nftables.MonitorEventTypeDelSetElem]); a != 1 || d != 1 {
		t.Errorf("kernel: %d element additions, %d deletions; want 1 and 1", a, d)
	}
	for _, typ := range []nftables.MonitorEventType{nftables.MonitorEventTypeNewChain, nftables.MonitorEventTypeDelChain,
		nftables.MonitorEventTypeNewRule, nftables.MonitorEventTypeDelRule, nftables.MonitorEventTypeNewSet, nftables.MonitorEventTypeDelSet} {
		if n := len(ev[typ]); n != 0 {
			t.Errorf("kernel reported %d events of type %d, want none", n, typ)
		}
	}
	after := kernelElements(t, ns, "map", mapServiceEndpoints)
	gone, came := setDiff(before, after), setDiff(after, before)
	if len(gone) != 1 || len(came) != 1 || !strings.HasPrefix(gone[0], "198.19.0.234 . tcp . 80 . ") ||
		!strings.HasPrefix(came[0], "198.19.0.234 . tcp . 80 . ") || !strings.HasSuffix(came[0], ": 198.18.99.99 . 8000") ||
		gone[0][:strings.Index(gone[0], ":")] != came[0][:strings.Index(came[0], ":")] {
		t.Errorf("service-endpoints changed by -%v +%v, want one slot of 198.19.0.234 rewritten", gone, came)
	}

	// The service loses its endpoints: its elements go, one comes.
	d.Services[234].Endpoints = nil
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); st.ElementsAdded != 1 || st.ElementsDeleted != 6 || st.RulesAdded != 0 {
		t.Errorf("stats: %+v", st)
	}
	if !kernelElements(t, ns, "set", setNoEndpointReject)[`198.19.0.234 . tcp . 80 comment "ns/svc-234:http"`] {
		t.Errorf("no-endpoint-reject lacks the service:\n%s", ns.nft(t, "list", "set", "ip", "berth-test", setNoEndpointReject))
	}

	// Nothing changed: nothing sent.
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); st.ServicesChanged != 0 || st.RulesAdded != 0 || st.ElementsAdded+st.ElementsDeleted != 0 || st.ChainsDeleted != 0 {
		t.Errorf("sync without change: %+v", st)
	}
	// Down to one service with one endpoint: everything else goes,
	// incrementally, and the services chain gets the rule for one
	// endpoint instead of five.
	if err := s.Sync(ctx, many(1, 1)); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); st.Full || st.ElementsAdded != 1 || st.ElementsDeleted != 5+298*7+2 || st.ChainsRewritten != 1 {
		t.Errorf("shrinking to one service: %+v", st)
	}
	if got := kernelElements(t, ns, "map", mapServiceEndpoints); len(got) != 1 {
		t.Errorf("service-endpoints: %v", got)
	}
	out := ns.nft(t, "list", "chain", "ip", "berth-test", chainServices)
	if !strings.Contains(out, "numgen random mod 1 map") || strings.Contains(out, "mod 5") {
		t.Errorf("services chain:\n%s", out)
	}
}

func TestFailedBatchRebuilds(t *testing.T) {
	ns := newNetns(t, "fail")
	s := ns.syncer(t)
	ctx := context.Background()
	d := many(20, 3)
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	// Someone removes our table behind our back: the next incremental batch
	// fails, and the Syncer rebuilds the table.
	ns.nft(t, "delete", "table", "ip", "berth-test")
	d.Services[3].Endpoints[0].IP = addr("198.18.77.1")
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	st := s.LastSync()
	if !st.Full || st.IncrementalError == nil {
		t.Errorf("after a failed batch: %+v", st)
	}
	want, err := Compile("berth-test", d)
	if err != nil {
		t.Fatal(err)
	}
	out := ns.nft(t, "list", "table", "ip", "berth-test")
	if got, w := strings.Count(out, "\tchain "), len(want.Chains); got != w {
		t.Errorf("table has %d chains after the rebuild, want %d", got, w)
	}
	if !strings.Contains(ns.nft(t, "list", "map", "ip", "berth-test", mapServiceEndpoints), ": 198.18.77.1 . 8000") {
		t.Errorf("the change is missing after the rebuild:\n%s", out)
	}
	// And the next change is incremental again.
	d.Services[4].Endpoints = d.Services[4].Endpoints[:1]
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); st.Full {
		t.Errorf("sync after the rebuild was full: %+v", st)
	}
}

func TestOnlyOurTable(t *testing.T) {
	ns := newNetns(t, "own")
	ns.nft(t, "add", "table", "ip", "someone-else")
	ns.nft(t, "add", "chain", "ip", "someone-else", "c", "{ type nat hook prerouting priority dstnat; }")
	s, err := NewSyncer(Options{Table: "berth-test", NetNS: int(ns.h)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Sync(ctx, many(3, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	out := ns.nft(t, "list", "ruleset")
	if strings.Contains(out, "berth-test") || !strings.Contains(out, "table ip someone-else") || !strings.Contains(out, "chain c") {
		t.Errorf("after Delete:\n%s", out)
	}
	// Delete of a table that is not there is fine.
	if err := s.Delete(ctx); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestLargeBatch(t *testing.T) {
	// Far beyond what default socket buffers and one element message take
	// (FACTS.md: 4,000 elements per batch, ~1,000 per message).
	ns := newNetns(t, "large")
	s := ns.syncer(t)
	ctx := context.Background()
	if err := s.Sync(ctx, many(10, 1)); err != nil {
		t.Fatal(err)
	}
	// Past the sizes the sets were made with: a rebuild with bigger ones.
	if err := s.Sync(ctx, many(6000, 1)); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); !st.Full || st.IncrementalError != nil {
		t.Errorf("growing past the set sizes: %+v", st)
	}
	if out := ns.nft(t, "list", "map", "ip", "berth-test", mapServiceEndpoints); !strings.Contains(out, "size 16384") {
		t.Errorf("service-endpoints was not made bigger:\n%.300s", out)
	}
	if n := len(kernelElements(t, ns, "map", mapServiceEndpoints)); n != 6000 {
		t.Errorf("service-endpoints holds %d elements, want 6000", n)
	}
}

// TestGoldenFilesLoad feeds every golden file to Debian's nft: the printer
// writes what nft reads.
func TestGoldenFilesLoad(t *testing.T) {
	ns := newNetns(t, "gold")
	files, err := filepath.Glob("testdata/*.nft")
	if err != nil || len(files) == 0 {
		t.Fatalf("golden files: %v %v", files, err)
	}
	for _, f := range files {
		ns.nft(t, "-f", f)
		ns.nft(t, "delete", "table", "ip", "berth")
	}
}

func TestNetworkPolicy(t *testing.T) {
	l := newLab(t)
	l.client.listen(t, "198.18.64.2:9090", "client")
	s := l.router.syncer(t)
	ctx := context.Background()
	d := labDesired(ep("198.18.16.2", 8080, true, true))
	// Pod a takes connections on 8080 from pod b only. Pod b may reach
	// 198.18.0.0/16 except pod a's /30.
	d.Policies = []Policy{
		{Namespace: "shop", Name: "a-from-b", Pods: []netip.Addr{addr("198.18.16.2")}, Ingress: true,
			IngressRules: []PolicyRule{{
				Peers: []PolicyPeer{{IPs: []netip.Addr{addr("198.18.16.6")}}},
				Ports: []PolicyPort{{Protocol: TCP, Port: 8080}},
			}}},
	}
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	// allowed reports whether a connect succeeds, giving it the time
	// expected for the answer.
	allowed := func(from *testNetns, to string, want bool) bool {
		timeout := dialTimeout
		if !want {
			timeout = denyTimeout
		}
		_, err := from.dialWithin(t, to, timeout)
		return err == nil
	}
	if !allowed(l.b, "198.18.16.2:8080", true) {
		t.Error("b cannot reach a: the policy allows it")
	}
	if allowed(l.client, "198.18.16.2:8080", false) {
		t.Error("the client reaches a directly: the policy denies it")
	}
	if allowed(l.client, "198.19.0.10:80", false) {
		t.Error("the client reaches a through its Service: the policy denies it")
	}
	if !allowed(l.a, "198.18.64.2:9090", true) {
		t.Error("a cannot reach the client: a is not isolated for egress")
	}

	d.Policies = append(d.Policies, Policy{Namespace: "shop", Name: "b-out", Pods: []netip.Addr{addr("198.18.16.6")}, Egress: true,
		EgressRules: []PolicyRule{{Peers: []PolicyPeer{{Block: prefix("198.18.0.0/16"), Except: []netip.Prefix{prefix("198.18.16.0/30")}}}}}})
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if st := s.LastSync(); st.Full || st.ServicesChanged != 0 {
		t.Errorf("adding a policy: %+v", st)
	}
	if allowed(l.b, "198.18.16.2:8080", false) {
		t.Error("b reaches a: b's egress policy excepts a's /30")
	}
	if !allowed(l.b, "198.18.64.2:9090", true) {
		t.Error("b cannot reach the client: its egress policy allows 198.18.0.0/16")
	}

	// Without policies everything flows again.
	d.Policies = nil
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	if !allowed(l.client, "198.18.16.2:8080", true) || !allowed(l.b, "198.18.16.2:8080", true) {
		t.Error("traffic still denied after the policies were removed")
	}
}

func TestConflictingServicesRefused(t *testing.T) {
	ns := newNetns(t, "conf")
	s := ns.syncer(t)
	ctx := context.Background()
	d := many(3, 1)
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	// svc-2 takes svc-1's ClusterIP: refused, and nothing is sent.
	d.Services[2].ClusterIPs = d.Services[1].ClusterIPs
	if err := s.Sync(ctx, d); err == nil || !strings.Contains(err.Error(), "both claim") {
		t.Fatalf("Sync with two services on one address: %v", err)
	}
	out := ns.nft(t, "list", "set", "ip", "berth-test", "service-ips")
	if !strings.Contains(out, "198.19.0.2 . tcp . 80") {
		t.Errorf("svc-2's old element is gone:\n%s", out)
	}
	// svc-1 moves away in the same Sync: the address is free for svc-2.
	d.Services[1].ClusterIPs = []netip.Addr{addr("198.19.9.9")}
	if err := s.Sync(ctx, d); err != nil {
		t.Fatal(err)
	}
	d.Services = append(d.Services, d.Services[0])
	if err := s.Sync(ctx, d); err == nil {
		t.Error("Sync accepted a service given twice")
	}
}
