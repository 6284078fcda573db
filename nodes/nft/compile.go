package nft

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"time"
)

// DefaultTable is the table berth writes unless told otherwise.
const DefaultTable = "berth"

// MasqueradeMark is the packet mark bit that asks the masquerading chain to
// SNAT a packet (kube-proxy's 0x4000).
const MasqueradeMark = 0x4000

// Chains and sets every rule set has.
const (
	chainFilterInput        = "filter-input"
	chainFilterForward      = "filter-forward"
	chainFilterOutput       = "filter-output"
	chainFilterPostDNAT     = "filter-output-post-dnat"
	chainFilterPrePostDNAT  = "filter-prerouting-post-dnat"
	chainNATPrerouting      = "nat-prerouting"
	chainNATOutput          = "nat-output"
	chainNATPostrouting     = "nat-postrouting"
	chainServices           = "services"
	chainMasquerading       = "masquerading"
	chainEndpointsCheck     = "service-endpoints-check"
	chainClusterIPsCheck    = "cluster-ips-check"
	chainAffinityRecord     = "affinity-record"
	setClusterIPs           = "cluster-ips"
	setClusterCIDRs         = "cluster-cidrs"
	setNodePodCIDRs         = "node-pod-cidrs"
	setServiceCIDRs         = "service-cidrs"
	setServiceIPs           = "service-ips"
	mapServiceEndpoints     = "service-endpoints"
	setExternalLocal        = "external-local"
	setNoEndpointReject     = "no-endpoint-reject"
	setNoEndpointDrop       = "no-endpoint-drop"
	setHairpin              = "hairpin"
	mapAffinity             = "affinity"
	prefixAffinityTimeout   = "affinity-"
	affinitySize            = 1 << 18
	serviceEndpointsTypeof  = "ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport"
	shortCircuitSlotsOffset = 1 << 31
)

// Endpoint choice. A Service address (ip . proto . port) with N endpoints
// holds N elements in the service-endpoints map, at slots O(N) to
// O(N)+N-1 where O(N) = N(N-1)/2, so that the slot ranges of different
// counts never overlap. For every count N in use the services chain has
// one rule,
//
//	dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N offset O(N) map @service-endpoints
//
// which misses (and falls through) for addresses with another count. A new
// connection costs one hash lookup per distinct count in use, whatever the
// number of Services, and an endpoint change touches only that Service's
// elements: no chain, rule or verdict changes, so the kernel has nothing
// to revalidate (a batch that adds a jump or goto makes it walk every
// chain reachable from the base chains, and every element of every
// verdict map on the way). The short-circuit lists of
// externalTrafficPolicy Local (pod and host traffic may use every
// endpoint) live at the same slots plus 2^31. (Looking the count up in a
// map and feeding it to the numgen would be one rule, but nft has no
// syntax for a lookup whose key comes from another lookup, and a verdict
// map to a chain per count is a goto per Service again.)

// slotOffset is O(n).
func slotOffset(n int) uint32 { return uint32(n * (n - 1) / 2) }

// maxEndpoints keeps slot offsets below the short-circuit half of the slot
// space.
const maxEndpoints = 65535

// feature is something a Service needs from the table-wide rules: a
// numgen rule for a count, a short-circuit rule for a count, or affinity
// rules for a timeout. The Syncer counts the Services needing each.
type feature struct {
	kind featureKind
	n    int64 // the count, or the timeout in seconds
}

type featureKind uint8

const (
	featCount featureKind = iota
	featShortCircuit
	featAffinity
)

// features are the table-wide rules the Services need, each sorted, and
// the sizes of the big sets.
type features struct {
	counts, shortCircuits []int
	affinity              []int64 // timeouts in seconds
	sizes                 map[string]uint32
}

// sizedSets are the sets whose size grows with the number of Services and
// endpoints. They are created with a size: the kernel then allocates their
// hash table once, instead of growing it (and moving every element) again
// and again while a full sync fills it. The size is also a limit: a batch
// that would pass it rebuilds the table with sizes for twice the elements.
var sizedSets = []string{mapServiceEndpoints, setServiceIPs, setClusterIPs}

// sizeFor is the size a sized set holding n elements is created with.
func sizeFor(n int) uint32 {
	size := uint32(minSetSize)
	for int(size) < 2*n {
		size *= 2
	}
	return size
}

const minSetSize = 4096

func featuresOf(refs map[feature]int) features {
	var f features
	for k, n := range refs {
		if n <= 0 {
			continue
		}
		switch k.kind {
		case featCount:
			f.counts = append(f.counts, int(k.n))
		case featShortCircuit:
			f.shortCircuits = append(f.shortCircuits, int(k.n))
		default:
			f.affinity = append(f.affinity, k.n)
		}
	}
	slices.Sort(f.counts)
	slices.Sort(f.shortCircuits)
	slices.Sort(f.affinity)
	return f
}

// fragment is what one part of the desired state (the table-wide part, or
// one Service) contributes to the rule set; the Syncer diffs fragments.
type fragment struct {
	sets   []*Set // definitions, without elements
	chains []*Chain
	elems  []setElem
	// Of a Service: elements other Services may hold too (counted by the
	// Syncer), what it needs of the table-wide rules, the addresses it
	// claims (no other Service may use them), and the endpoint order of
	// each of its lists (kept when the count does not change, so that
	// replacing one endpoint rewrites one element).
	shared   []setElem
	features []feature
	claims   []string
	orders   []endpointOrder
	affinity bool
	buf      []byte // where the elements' keys and values are carved from
}

// bytes returns n zeroed bytes for an element key or value. A Service's
// elements share a few allocations: a full sync makes hundreds of
// thousands of them.
func (f *fragment) bytes(n int) []byte {
	if cap(f.buf)-len(f.buf) < n {
		f.buf = make([]byte, 0, max(2*cap(f.buf), 256, n))
	}
	l := len(f.buf)
	f.buf = f.buf[:l+n]
	return f.buf[l : l+n : l+n]
}

type setElem struct {
	set string
	Element
}

func (f *fragment) elem(set string, e Element) { f.elems = append(f.elems, setElem{set, e}) }

// svcOptions are the table-wide facts that a Service's elements depend on;
// when they change, every Service is compiled again.
type svcOptions struct {
	nodeIPs string // the IPv4 NodePort addresses, 4 bytes each
}

func optionsOf(d *Desired) svcOptions {
	var b []byte
	seen := map[netip.Addr]bool{}
	for _, ip := range d.NodeIPs {
		if ip.Is4() && !ip.IsLoopback() && !seen[ip] {
			seen[ip] = true
			a := ip.As4()
			b = append(b, a[:]...)
		}
	}
	return svcOptions{nodeIPs: string(b)}
}

func (o svcOptions) nodeAddrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(o.nodeIPs)/4)
	for i := 0; i+4 <= len(o.nodeIPs); i += 4 {
		out = append(out, netip.AddrFrom4([4]byte([]byte(o.nodeIPs[i:i+4]))))
	}
	return out
}

// Compile turns the desired state into the rule set of table. It is pure:
// the same input gives the same output, byte for byte.
func Compile(table string, d *Desired) (*Ruleset, error) {
	if table == "" {
		table = DefaultTable
	}
	opts := optionsOf(d)
	svcs := make([]*Service, len(d.Services))
	for i := range d.Services {
		svcs[i] = &d.Services[i]
	}
	sort.Slice(svcs, func(i, j int) bool {
		a, b := svcs[i].key(), svcs[j].key()
		return a.namespace < b.namespace || a.namespace == b.namespace && a.name < b.name
	})
	refs := map[feature]int{}
	var frags []*fragment
	claims := map[string]serviceKey{}
	shared := map[string]bool{}
	for i, s := range svcs {
		if i > 0 && s.key() == svcs[i-1].key() {
			return nil, fmt.Errorf("service %s given twice", s.key())
		}
		f, err := compileService(s, opts, nil)
		if err != nil {
			return nil, err
		}
		for _, c := range f.claims {
			if o, ok := claims[c]; ok {
				return nil, fmt.Errorf("services %s and %s both claim %s", o, s.key(), claimText(c))
			}
			claims[c] = s.key()
		}
		for _, ft := range f.features {
			refs[ft]++
		}
		// Shared elements go in once.
		for _, e := range f.shared {
			if id := elemID(e.set, e.Key); !shared[id] {
				shared[id] = true
				f.elems = append(f.elems, e)
			}
		}
		frags = append(frags, f)
	}
	ft := featuresOf(refs)
	ft.sizes = map[string]uint32{}
	counts := map[string]int{}
	for _, f := range frags {
		for i := range f.elems {
			counts[f.elems[i].set]++
		}
	}
	for _, set := range sizedSets {
		ft.sizes[set] = sizeFor(counts[set])
	}
	global, err := compileGlobal(d, ft)
	if err != nil {
		return nil, err
	}
	return assemble(table, append([]*fragment{global}, frags...))
}

// assemble puts fragments together into one sorted Ruleset.
func assemble(table string, frags []*fragment) (*Ruleset, error) {
	r := &Ruleset{Table: table}
	sets := map[string]*Set{}
	chains := map[string]bool{}
	for _, f := range frags {
		for _, s := range f.sets {
			if sets[s.Name] != nil {
				return nil, fmt.Errorf("set %s defined twice", s.Name)
			}
			c := *s
			c.Elements = nil
			sets[s.Name] = &c
			r.Sets = append(r.Sets, &c)
		}
		for _, c := range f.chains {
			if chains[c.Name] {
				return nil, fmt.Errorf("chain %s defined twice", c.Name)
			}
			chains[c.Name] = true
			r.Chains = append(r.Chains, c)
		}
	}
	keys := map[string]bool{}
	for _, f := range frags {
		for _, e := range f.elems {
			s := sets[e.set]
			if s == nil {
				return nil, fmt.Errorf("element %s of undefined set %s", e.text(&Set{Key: []SetType{TypeIPv4Addr}}), e.set)
			}
			if k := elemID(e.set, e.Key); keys[k] {
				return nil, fmt.Errorf("%s: element %s given twice", e.set, e.text(s))
			} else {
				keys[k] = true
			}
			s.Elements = append(s.Elements, e.Element)
		}
	}
	sortRuleset(r)
	return r, nil
}

func base(name, typ string, hook string, prio int) *Chain {
	return &Chain{Name: name, Base: &BaseChain{Type: typ, Hook: hook, Priority: prio}}
}

func rule(stmts ...Stmt) Rule { return Rule{Stmts: stmts} }

func commented(comment string, stmts ...Stmt) Rule { return Rule{Stmts: stmts, Comment: comment} }

var markMasq = SetMark{Bits: MasqueradeMark}

// compileGlobal builds the table-wide part: base chains, the services
// chain with a rule per endpoint count in use, masquerading, the shared
// maps and sets, and the NetworkPolicies.
func compileGlobal(d *Desired, ft features) (*fragment, error) {
	f := &fragment{}
	ctNew := MatchCtState{CtNew}
	hasClusterCIDRs := len(v4Prefixes(d.ClusterCIDRs)) > 0

	fi := base(chainFilterInput, "filter", "input", prioDstNAT-10)
	fi.Rules = []Rule{rule(ctNew, jump(chainEndpointsCheck))}
	ff := base(chainFilterForward, "filter", "forward", prioDstNAT-10)
	ff.Rules = []Rule{rule(ctNew, jump(chainEndpointsCheck)), rule(ctNew, jump(chainClusterIPsCheck))}
	fo := base(chainFilterOutput, "filter", "output", prioDstNAT-10)
	fo.Rules = []Rule{rule(ctNew, jump(chainEndpointsCheck))}
	fpp := base(chainFilterPrePostDNAT, "filter", "prerouting", prioDstNAT+10)
	fpp.Rules = []Rule{rule(ctNew, jump(chainAffinityRecord))}
	fp := base(chainFilterPostDNAT, "filter", "output", prioDstNAT+10)
	fp.Rules = []Rule{rule(ctNew, jump(chainClusterIPsCheck)), rule(ctNew, jump(chainAffinityRecord))}
	toServices := rule(inSet(setServiceIPs, tupleFields...), jump(chainServices))
	np := base(chainNATPrerouting, "nat", "prerouting", prioDstNAT)
	np.Rules = []Rule{toServices}
	no := base(chainNATOutput, "nat", "output", prioDstNAT)
	no.Rules = []Rule{toServices}
	npost := base(chainNATPostrouting, "nat", "postrouting", prioSrcNAT)
	npost.Rules = []Rule{rule(jump(chainMasquerading))}

	// The services chain sees the first packet of every connection to a
	// Service address with endpoints (the service-ips set).
	var svc []Rule
	if hasClusterCIDRs {
		svc = append(svc, commented("ClusterIP traffic from outside the pod network",
			inSet(setClusterIPs, IPDaddr), notInSet(setClusterCIDRs, IPSaddr), markMasq))
	}
	svc = append(svc,
		commented("NodePort and LoadBalancer traffic, externalTrafficPolicy Cluster",
			notInSet(setClusterIPs, IPDaddr), notInSet(setExternalLocal, tupleFields...), markMasq),
		commented("host traffic to externalTrafficPolicy Local",
			inSet(setExternalLocal, tupleFields...), MatchLocal{IPSaddr}, markMasq))
	if len(ft.affinity) > 0 {
		svc = append(svc, commented("sessionAffinity ClientIP",
			DNATMap{Fields: []Field{IPSaddr, IPDaddr, L4Proto, THDport}, Map: mapAffinity}))
	}
	for _, n := range ft.shortCircuits {
		slot := &Numgen{Mod: uint32(n), Offset: shortCircuitSlotsOffset + slotOffset(n)}
		if hasClusterCIDRs {
			svc = append(svc, commented("pod traffic to externalTrafficPolicy Local uses every endpoint",
				inSet(setClusterCIDRs, IPSaddr), DNATMap{Fields: tupleFields, Slot: slot, Map: mapServiceEndpoints}))
		}
		svc = append(svc, commented("host traffic to externalTrafficPolicy Local uses every endpoint",
			MatchLocal{IPSaddr}, DNATMap{Fields: tupleFields, Slot: slot, Map: mapServiceEndpoints}))
	}
	for _, n := range ft.counts {
		svc = append(svc, rule(DNATMap{Fields: tupleFields, Slot: &Numgen{Mod: uint32(n), Offset: slotOffset(n)}, Map: mapServiceEndpoints}))
	}

	var masq []Rule
	if len(v4Prefixes(d.NodePodCIDRs)) > 0 && hasClusterCIDRs {
		masq = append(masq, commented("pod traffic leaving the cluster",
			inSet(setNodePodCIDRs, IPSaddr), notInSet(setClusterCIDRs, IPDaddr), Masquerade{}))
	}
	masq = append(masq,
		commented("a pod reaching itself through a Service", inSet(setHairpin, IPSaddr, IPDaddr), Masquerade{FullyRandom: true}),
		rule(MatchMarkUnset{MasqueradeMark}, Verdict{Kind: Return}),
		rule(SetMark{Bits: MasqueradeMark, Toggle: true}),
		rule(Masquerade{FullyRandom: true}))

	checks := []Rule{rule(inSet(setClusterIPs, IPDaddr), Reject{})}
	if len(v4Prefixes(d.ServiceCIDRs)) > 0 {
		checks = append(checks, rule(inSet(setServiceCIDRs, IPDaddr), Verdict{Kind: Drop}))
	}

	// Affinity: the first packet of a connection to a Service with
	// sessionAffinity records, after DNAT, which endpoint it reached.
	var record []Rule
	for _, t := range ft.affinity {
		for _, p := range []Protocol{TCP, UDP, SCTP} {
			record = append(record, rule(MatchDNATed{}, MatchProto{p},
				inSet(affinitySet(t), CtOrigDaddr, L4Proto, CtOrigDport),
				UpdateMap{Map: mapAffinity, Key: []Field{IPSaddr, CtOrigDaddr, L4Proto, CtOrigDport},
					Value: []Field{IPDaddr, THDport}, Timeout: time.Duration(t) * time.Second}))
		}
	}

	f.chains = []*Chain{fi, ff, fo, fpp, fp, np, no, npost,
		{Name: chainServices, Rules: svc},
		{Name: chainMasquerading, Rules: masq},
		{Name: chainEndpointsCheck, Rules: []Rule{
			rule(inSet(setNoEndpointReject, tupleFields...), Reject{}),
			rule(inSet(setNoEndpointDrop, tupleFields...), Verdict{Kind: Drop}),
		}},
		{Name: chainClusterIPsCheck, Rules: checks},
		{Name: chainAffinityRecord, Rules: record},
	}

	addr := []SetType{TypeIPv4Addr}
	tup := []SetType{TypeIPv4Addr, TypeInetProto, TypeInetService}
	f.sets = []*Set{
		{Name: setClusterIPs, Key: addr, Comment: "active ClusterIPs"},
		{Name: setClusterCIDRs, Key: addr, Interval: true, Comment: "the cluster's pod network"},
		{Name: setNodePodCIDRs, Key: addr, Interval: true, Comment: "this machine's pods"},
		{Name: setServiceCIDRs, Key: addr, Interval: true, Comment: "ClusterIP ranges"},
		{Name: setServiceIPs, Key: tup, Comment: "Service addresses with endpoints"},
		{Name: mapServiceEndpoints, Key: append(tup, TypeMark), Data: []SetType{TypeIPv4Addr, TypeInetService},
			Typeof: serviceEndpointsTypeof, Comment: "endpoints by Service address and slot"},
		{Name: setExternalLocal, Key: tup, Comment: "NodePort and LoadBalancer addresses with externalTrafficPolicy Local"},
		{Name: setNoEndpointReject, Key: tup, Comment: "Service addresses without endpoints"},
		{Name: setNoEndpointDrop, Key: tup, Comment: "Service addresses whose traffic policy leaves no endpoint"},
		{Name: setHairpin, Key: []SetType{TypeIPv4Addr, TypeIPv4Addr}, Comment: "local endpoints, as source . destination"},
		{Name: mapAffinity, Key: []SetType{TypeIPv4Addr, TypeIPv4Addr, TypeInetProto, TypeInetService},
			Data: []SetType{TypeIPv4Addr, TypeInetService}, Dynamic: true, Size: affinitySize,
			Comment: "sessionAffinity: client . Service address : endpoint"},
	}
	for _, set := range f.sets {
		set.Size = max(set.Size, ft.sizes[set.Name])
	}
	for _, t := range ft.affinity {
		f.sets = append(f.sets, &Set{Name: affinitySet(t), Key: tup,
			Comment: fmt.Sprintf("Service addresses with sessionAffinity timeout %ds", t)})
	}
	for _, s := range []struct {
		set string
		ps  []netip.Prefix
	}{{setClusterCIDRs, d.ClusterCIDRs}, {setNodePodCIDRs, d.NodePodCIDRs}, {setServiceCIDRs, d.ServiceCIDRs}} {
		for _, e := range intervalElements(s.ps) {
			f.elem(s.set, e)
		}
	}
	if err := compilePolicies(f, d.Policies); err != nil {
		return nil, err
	}
	return f, nil
}

func affinitySet(seconds int64) string {
	return prefixAffinityTimeout + strconv.FormatInt(seconds, 10) + "s"
}

func v4Prefixes(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() && p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// intervalElements merges overlapping and adjacent IPv4 prefixes (the
// kernel refuses overlapping intervals) into interval elements.
func intervalElements(ps []netip.Prefix) []Element {
	type span struct{ first, end uint64 } // [first, end)
	var spans []span
	for _, p := range v4Prefixes(ps) {
		a := p.Addr().As4()
		first := uint64(binary.BigEndian.Uint32(a[:]))
		spans = append(spans, span{first, first + 1<<(32-p.Bits())})
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.first, b.first) })
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 && s.first <= merged[n-1].end {
			merged[n-1].end = max(merged[n-1].end, s.end)
			continue
		}
		merged = append(merged, s)
	}
	out := make([]Element, 0, len(merged))
	for _, s := range merged {
		out = append(out, Element{Key: binary.BigEndian.AppendUint32(nil, uint32(s.first)),
			KeyEnd: binary.BigEndian.AppendUint32(nil, uint32(s.end))}) // 2^32 wraps to 0: the end of the space
	}
	return out
}

// claimText prints a claim (an address, or an address . proto . port).
func claimText(c string) string {
	if len(c) == 4 {
		return netip.AddrFrom4([4]byte([]byte(c))).String()
	}
	e := Element{Key: []byte(c)}
	return e.text(&Set{Key: []SetType{TypeIPv4Addr, TypeInetProto, TypeInetService}})
}

// compileService builds one Service's elements. prev, the Service's
// fragment from the last Sync, if any, keeps endpoints in their slots.
func compileService(s *Service, o svcOptions, prev *fragment) (*fragment, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	f := &fragment{affinity: s.AffinityTimeout > 0}
	var ips, lbIPs []netip.Addr
	for _, ip := range s.ClusterIPs {
		if ip.Is4() && !slices.Contains(ips, ip) {
			ips = append(ips, ip)
			a := ip.As4()
			f.claims = append(f.claims, string(a[:]))
			f.elem(setClusterIPs, ipKey(ip))
		}
	}
	if s.Type == LoadBalancer {
		for _, ip := range s.LoadBalancerIPs {
			if ip.Is4() && !slices.Contains(lbIPs, ip) {
				lbIPs = append(lbIPs, ip)
			}
		}
	}
	var hairpin []netip.Addr
	for i := range s.Ports {
		hairpin = compilePort(f, s, &s.Ports[i], ips, lbIPs, o, prev, hairpin)
	}
	slices.SortFunc(f.features, func(a, b feature) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.n, b.n))
	})
	f.features = slices.Compact(f.features)
	slices.SortFunc(hairpin, netip.Addr.Compare)
	for _, ip := range slices.Compact(hairpin) {
		a := ip.As4()
		f.shared = append(f.shared, setElem{setHairpin, Element{Key: append(a[:], a[:]...)}})
	}
	return f, nil
}

// endpointList is the endpoints one kind of traffic to a Service port may
// reach, in slot order.
type endpointList []netip.AddrPort

// endpointOrder is the slot order of one list of a Service's.
type endpointOrder struct {
	key orderKey
	l   endpointList
}

type orderKey struct {
	port  string // the Service port's name
	local bool
}

func sortedUnique(l endpointList) endpointList {
	slices.SortFunc(l, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(l)
}

func compilePort(f *fragment, s *Service, p *ServicePort, ips, lbIPs []netip.Addr, o svcOptions, prev *fragment, hairpin []netip.Addr) []netip.Addr {
	nodePort := p.NodePort
	if s.Type != NodePort && s.Type != LoadBalancer {
		nodePort = 0
	}

	// Ready endpoints with this port.
	var all, local endpointList
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		tp := e.port(p.Name)
		if !e.Ready || tp == 0 || !e.IP.Is4() {
			continue
		}
		ap := netip.AddrPortFrom(e.IP, tp)
		all = append(all, ap)
		if e.Local {
			local = append(local, ap)
			hairpin = append(hairpin, e.IP)
		}
	}
	all, local = sortedUnique(all), sortedUnique(local)
	if len(all) > maxEndpoints {
		all, local = all[:maxEndpoints], local[:min(len(local), maxEndpoints)]
	}
	order := func(isLocal bool, l endpointList) endpointList {
		key := orderKey{p.Name, isLocal}
		var old endpointList
		if prev != nil {
			for _, o := range prev.orders {
				if o.key == key {
					old = o.l
				}
			}
		}
		l = stableOrder(l, old)
		f.orders = append(f.orders, endpointOrder{key, l})
		return l
	}
	all = order(false, all)
	local = order(true, local)
	internal, external := all, all
	if s.InternalTrafficLocal {
		internal = local
	}
	if s.ExternalTrafficLocal {
		external = local
	}

	fill := func(t tuple, l endpointList, base uint32, kind featureKind) {
		off := base + slotOffset(len(l))
		for i, ap := range l {
			f.elem(mapServiceEndpoints, Element{Key: slotKey(f.bytes(16), t, off+uint32(i)), Data: addrPortData(f.bytes(8), ap)})
		}
		f.features = append(f.features, feature{kind: kind, n: int64(len(l))})
	}
	elem := func(t tuple) Element { return Element{Key: append(f.bytes(12)[:0], t[:]...)} }
	noEndpoints := func(t tuple, set string) {
		e := elem(t)
		e.Comment = s.Namespace + "/" + s.Name + ":" + p.Name
		f.elem(set, e)
	}
	affinity := func(t tuple) {
		if s.AffinityTimeout > 0 {
			f.elem(affinitySet(affinitySeconds(s.AffinityTimeout)), elem(t))
		}
	}

	var ext []tuple
	for _, ip := range lbIPs {
		ext = append(ext, makeTuple(ip, p.Protocol, p.Port))
	}
	if nodePort != 0 {
		for _, ip := range o.nodeAddrs() {
			ext = append(ext, makeTuple(ip, p.Protocol, nodePort))
		}
	}
	f.elems = slices.Grow(f.elems, len(ips)*(2+len(internal))+len(ext)*(3+len(all)+len(external)))
	if need := len(ips)*(3*12+24*len(internal)) + len(ext)*(4*12+24*(len(all)+len(external))); cap(f.buf)-len(f.buf) < need {
		f.buf = make([]byte, 0, need)
	}
	for _, ip := range ips {
		t := makeTuple(ip, p.Protocol, p.Port)
		f.claims = append(f.claims, string(t[:]))
		switch {
		case len(internal) > 0:
			f.elem(setServiceIPs, elem(t))
			fill(t, internal, 0, featCount)
			affinity(t)
		case len(all) == 0:
			noEndpoints(t, setNoEndpointReject)
		default:
			noEndpoints(t, setNoEndpointDrop)
		}
	}
	for _, t := range ext {
		f.claims = append(f.claims, string(t[:]))
		if len(all) == 0 {
			noEndpoints(t, setNoEndpointReject)
			continue
		}
		f.elem(setServiceIPs, elem(t))
		affinity(t)
		if s.ExternalTrafficLocal {
			f.elem(setExternalLocal, elem(t))
			fill(t, all, shortCircuitSlotsOffset, featShortCircuit)
		}
		if len(external) > 0 {
			fill(t, external, 0, featCount)
		} else {
			noEndpoints(t, setNoEndpointDrop)
		}
	}
	if s.AffinityTimeout > 0 && len(all) > 0 {
		f.features = append(f.features, feature{kind: featAffinity, n: affinitySeconds(s.AffinityTimeout)})
	}
	return hairpin
}

// affinitySeconds is the affinity timeout in whole seconds, at least 1.
func affinitySeconds(d time.Duration) int64 { return max(int64(d/time.Second), 1) }

// stableOrder orders l, which is sorted: as it is, unless old has as many
// endpoints, in which case those still in l keep their old places and the
// new ones take the freed places, in sorted order.
func stableOrder(l endpointList, old endpointList) endpointList {
	if len(old) != len(l) || len(l) == 0 {
		return l
	}
	in := make(map[netip.AddrPort]bool, len(l))
	for _, ap := range l {
		in[ap] = true
	}
	out := make(endpointList, len(old))
	kept := map[netip.AddrPort]bool{}
	for i, ap := range old {
		if in[ap] {
			out[i] = ap
			kept[ap] = true
		}
	}
	j := 0
	for _, ap := range l {
		if kept[ap] {
			continue
		}
		for out[j].IsValid() {
			j++
		}
		out[j] = ap
	}
	return out
}
