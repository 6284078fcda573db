package nft

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
)

// DefaultTable is the table berth writes unless told otherwise.
const DefaultTable = "berth"

// MasqueradeMark is the packet mark bit that asks the masquerading chain to
// SNAT a packet (kube-proxy's 0x4000).
const MasqueradeMark = 0x4000

// Chains, sets and maps every rule set has. The layout follows kube-proxy's
// nftables mode.
const (
	chainFilterInput    = "filter-input"
	chainFilterForward  = "filter-forward"
	chainFilterOutput   = "filter-output"
	chainFilterPostDNAT = "filter-output-post-dnat"
	chainNATPrerouting  = "nat-prerouting"
	chainNATOutput      = "nat-output"
	chainNATPostrouting = "nat-postrouting"

	chainServices         = "services"
	chainMasquerading     = "masquerading"
	chainMarkMasq         = "mark-for-masquerade"
	chainEndpointsCheck   = "service-endpoints-check"
	chainNodePortsCheck   = "nodeport-endpoints-check"
	chainClusterIPsCheck  = "cluster-ips-check"
	chainReject           = "reject-chain"
	setClusterIPs         = "cluster-ips"
	setNodePortIPs        = "nodeport-ips"
	setClusterCIDRs       = "cluster-cidrs"
	setNodePodCIDRs       = "node-pod-cidrs"
	setServiceCIDRs       = "service-cidrs"
	mapServiceIPs         = "service-ips"
	mapServiceNodePorts   = "service-nodeports"
	mapNoEndpointServices = "no-endpoint-services"
	mapNoEndpointNodePort = "no-endpoint-nodeports"
)

// Prefixes of per-service chain and set names.
const (
	prefixService  = "service-"
	prefixLocal    = "local-"
	prefixExternal = "external-"
	prefixEndpoint = "endpoint-"
	prefixAffinity = "affinity-"
)

// nameBaseMax keeps a name with its prefix (at most 16 bytes) within the
// kernel's 256-byte limit on chain and set names (NFT_NAME_MAXLEN, with its
// NUL).
const nameBaseMax = 255 - 16

// hashAndTruncate prefixes name with a hash of itself (so that a truncated
// name stays unique and similar names look different) and truncates it.
func hashAndTruncate(name string) string {
	h := sha256.Sum256([]byte(name))
	// 5 bytes are exactly 8 base32 characters.
	s := base32.StdEncoding.EncodeToString(h[:5]) + "-" + name
	if len(s) > nameBaseMax {
		s = s[:nameBaseMax-3] + "..."
	}
	return s
}

// fragment is what one part of the desired state (the table-wide part, or
// one Service) contributes to the rule set; the Syncer diffs fragments.
type fragment struct {
	sets   []*Set // definitions, without elements
	chains []*Chain
	elems  []setElem
}

type setElem struct {
	set string
	Element
}

func (f *fragment) elem(set string, e Element) { f.elems = append(f.elems, setElem{set, e}) }

// svcOptions are the table-wide facts that a Service's rules depend on;
// when they change, every Service is compiled again.
type svcOptions struct {
	clusterCIDRs bool // the cluster-cidrs set is non-empty
}

func optionsOf(d *Desired) svcOptions {
	return svcOptions{clusterCIDRs: len(v4Prefixes(d.ClusterCIDRs)) > 0}
}

// Compile turns the desired state into the rule set of table. It is pure:
// the same input gives the same output, byte for byte.
func Compile(table string, d *Desired) (*Ruleset, error) {
	if table == "" {
		table = DefaultTable
	}
	global, err := compileGlobal(d)
	if err != nil {
		return nil, err
	}
	frags := []*fragment{global}
	opts := optionsOf(d)
	svcs := make([]*Service, len(d.Services))
	for i := range d.Services {
		svcs[i] = &d.Services[i]
	}
	sort.Slice(svcs, func(i, j int) bool {
		a, b := svcs[i].key(), svcs[j].key()
		return a.namespace < b.namespace || a.namespace == b.namespace && a.name < b.name
	})
	for i, s := range svcs {
		if i > 0 && s.key() == svcs[i-1].key() {
			return nil, fmt.Errorf("service %s given twice", s.key())
		}
		f, err := compileService(s, opts)
		if err != nil {
			return nil, err
		}
		frags = append(frags, f)
	}
	return assemble(table, frags)
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
				return nil, fmt.Errorf("element %s of undefined set %s", e.Text, e.set)
			}
			if k := e.set + "\x00" + e.Text; keys[k] {
				return nil, fmt.Errorf("%s: element %s given twice (two services claim one address and port?)", e.set, e.Text)
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

// compileGlobal builds the table-wide part: base chains, dispatch chains,
// masquerading, the shared maps and sets, and the NetworkPolicies.
func compileGlobal(d *Desired) (*fragment, error) {
	f := &fragment{}
	ctNew := MatchCtState{CtNew}
	dispatch := VMap{Fields: []Field{IPDaddr, L4Proto, THDport}, Map: mapServiceIPs}

	fi := base(chainFilterInput, "filter", "input", prioDstNAT-10)
	fi.Rules = []Rule{rule(ctNew, jump(chainNodePortsCheck)), rule(ctNew, jump(chainEndpointsCheck))}
	ff := base(chainFilterForward, "filter", "forward", prioDstNAT-10)
	ff.Rules = []Rule{rule(ctNew, jump(chainEndpointsCheck)), rule(ctNew, jump(chainClusterIPsCheck))}
	fo := base(chainFilterOutput, "filter", "output", prioDstNAT-10)
	fo.Rules = []Rule{rule(ctNew, jump(chainEndpointsCheck))}
	fp := base(chainFilterPostDNAT, "filter", "output", prioDstNAT+10)
	fp.Rules = []Rule{rule(ctNew, jump(chainClusterIPsCheck))}
	np := base(chainNATPrerouting, "nat", "prerouting", prioDstNAT)
	np.Rules = []Rule{rule(jump(chainServices))}
	no := base(chainNATOutput, "nat", "output", prioDstNAT)
	no.Rules = []Rule{rule(jump(chainServices))}
	npost := base(chainNATPostrouting, "nat", "postrouting", prioSrcNAT)
	npost.Rules = []Rule{rule(jump(chainMasquerading))}

	services := &Chain{Name: chainServices, Rules: []Rule{
		rule(dispatch),
		rule(MatchSet{Field: IPDaddr, Set: setNodePortIPs}, VMap{Fields: []Field{L4Proto, THDport}, Map: mapServiceNodePorts}),
	}}
	var masq []Rule
	if len(v4Prefixes(d.NodePodCIDRs)) > 0 && len(v4Prefixes(d.ClusterCIDRs)) > 0 {
		masq = append(masq, Rule{Stmts: []Stmt{MatchSet{Field: IPSaddr, Set: setNodePodCIDRs},
			MatchSet{Field: IPDaddr, Not: true, Set: setClusterCIDRs}, Masquerade{}},
			Comment: "pod traffic leaving the cluster"})
	}
	masq = append(masq,
		rule(MatchMarkUnset{MasqueradeMark}, Verdict{Kind: Return}),
		rule(SetMark{Bits: MasqueradeMark, Toggle: true}),
		rule(Masquerade{FullyRandom: true}))
	checks := []Rule{rule(MatchSet{Field: IPDaddr, Set: setClusterIPs}, Reject{})}
	if len(v4Prefixes(d.ServiceCIDRs)) > 0 {
		checks = append(checks, rule(MatchSet{Field: IPDaddr, Set: setServiceCIDRs}, Verdict{Kind: Drop}))
	}
	f.chains = []*Chain{fi, ff, fo, fp, np, no, npost, services,
		{Name: chainMasquerading, Rules: masq},
		{Name: chainMarkMasq, Rules: []Rule{rule(SetMark{Bits: MasqueradeMark})}},
		{Name: chainEndpointsCheck, Rules: []Rule{rule(VMap{Fields: dispatch.Fields, Map: mapNoEndpointServices})}},
		{Name: chainNodePortsCheck, Rules: []Rule{rule(MatchSet{Field: IPDaddr, Set: setNodePortIPs},
			VMap{Fields: []Field{L4Proto, THDport}, Map: mapNoEndpointNodePort})}},
		{Name: chainClusterIPsCheck, Rules: checks},
		{Name: chainReject, Rules: []Rule{rule(Reject{})}},
	}

	addrPortProto := []SetType{TypeIPv4Addr, TypeInetProto, TypeInetService}
	protoPort := []SetType{TypeInetProto, TypeInetService}
	f.sets = []*Set{
		{Name: setClusterIPs, Key: []SetType{TypeIPv4Addr}, Comment: "active ClusterIPs"},
		{Name: setNodePortIPs, Key: []SetType{TypeIPv4Addr}, Comment: "addresses that accept NodePort traffic"},
		{Name: setClusterCIDRs, Key: []SetType{TypeIPv4Addr}, Interval: true, Comment: "the cluster's pod network"},
		{Name: setNodePodCIDRs, Key: []SetType{TypeIPv4Addr}, Interval: true, Comment: "this machine's pods"},
		{Name: setServiceCIDRs, Key: []SetType{TypeIPv4Addr}, Interval: true, Comment: "ClusterIP ranges"},
		{Name: mapServiceIPs, Key: addrPortProto, Verdict: true, Comment: "ClusterIP and LoadBalancer traffic"},
		{Name: mapServiceNodePorts, Key: protoPort, Verdict: true, Comment: "NodePort traffic"},
		{Name: mapNoEndpointServices, Key: addrPortProto, Verdict: true, Comment: "services without endpoints"},
		{Name: mapNoEndpointNodePort, Key: protoPort, Verdict: true, Comment: "nodeports without endpoints"},
	}
	seen := map[netip.Addr]bool{}
	for _, ip := range d.NodeIPs {
		if ip.Is4() && !ip.IsLoopback() && !seen[ip] {
			seen[ip] = true
			f.elem(setNodePortIPs, ipKey(ip))
		}
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
	slices.SortFunc(spans, func(a, b span) int { return int(a.first) - int(b.first) })
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
		out = append(out, rangeElement(s.first, s.end))
	}
	return out
}

// rangeElement is the interval [first, end) as an element, printed as a
// prefix when it is one.
func rangeElement(first, end uint64) Element {
	k := binary.BigEndian.AppendUint32(nil, uint32(first))
	ke := binary.BigEndian.AppendUint32(nil, uint32(end)) // 2^32 wraps to 0: the end of the space
	a := netip.AddrFrom4([4]byte(k))
	size := end - first
	text := ""
	if size&(size-1) == 0 && first%size == 0 {
		bits := 32
		for s := size; s > 1; s >>= 1 {
			bits--
		}
		text = netip.PrefixFrom(a, bits).String()
	} else {
		last := netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, uint32(end-1))))
		text = a.String() + "-" + last.String()
	}
	return Element{Text: text, Key: k, KeyEnd: ke}
}

// compileService builds one Service's chains, sets and map elements.
func compileService(s *Service, o svcOptions) (*fragment, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	f := &fragment{}
	var ips, lbIPs []netip.Addr
	for _, ip := range s.ClusterIPs {
		if ip.Is4() && !slices.Contains(ips, ip) {
			ips = append(ips, ip)
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
	for _, p := range s.Ports {
		if err := compilePort(f, s, &p, ips, lbIPs, o); err != nil {
			return nil, err
		}
	}
	return f, nil
}

type endpoint struct {
	ip    netip.Addr
	port  uint16
	local bool
	chain string
	aff   string // affinity set
}

func compilePort(f *fragment, s *Service, p *ServicePort, ips, lbIPs []netip.Addr, o svcOptions) error {
	proto := protoName(p.Protocol)
	portName := p.Name
	if portName == "" {
		portName = "p" + strconv.Itoa(int(p.Port))
	}
	portBase := s.Namespace + "/" + s.Name + "/" + proto + "/" + portName
	nameBase := hashAndTruncate(portBase)
	svcChain := prefixService + nameBase
	localChain := prefixLocal + nameBase
	extChain := prefixExternal + nameBase
	label := fmt.Sprintf("%s/%s:%s", s.Namespace, s.Name, p.Name)
	nodePort := p.NodePort
	if s.Type != NodePort && s.Type != LoadBalancer {
		nodePort = 0
	}
	external := nodePort != 0 || len(lbIPs) > 0

	// Ready endpoints with this port, in a stable order.
	var cluster, local []*endpoint
	seen := map[netip.AddrPort]bool{}
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		tp := e.port(p.Name)
		ap := netip.AddrPortFrom(e.IP, tp)
		if !e.Ready || tp == 0 || !e.IP.Is4() || seen[ap] {
			continue
		}
		seen[ap] = true
		epBase := hashAndTruncate(portBase + "__" + e.IP.String() + "/" + strconv.Itoa(int(tp)))
		cluster = append(cluster, &endpoint{ip: e.IP, port: tp, local: e.Local,
			chain: prefixEndpoint + epBase, aff: prefixAffinity + epBase})
	}
	sort.Slice(cluster, func(i, j int) bool {
		a, b := cluster[i], cluster[j]
		return a.ip.Less(b.ip) || a.ip == b.ip && a.port < b.port
	})
	for _, e := range cluster {
		if e.local {
			local = append(local, e)
		}
	}

	hasEndpoints := len(cluster) > 0
	usesCluster := hasEndpoints && (!s.InternalTrafficLocal || external)
	usesLocal := len(local) > 0 && (s.InternalTrafficLocal || s.ExternalTrafficLocal && external)
	internalChain, hasInternal := svcChain, hasEndpoints
	if s.InternalTrafficLocal {
		internalChain, hasInternal = localChain, len(local) > 0
	}
	externalPolicyChain, hasExternal := svcChain, hasEndpoints
	if s.ExternalTrafficLocal {
		externalPolicyChain, hasExternal = localChain, len(local) > 0
	}
	usesExternal := hasEndpoints && external
	internalFilter, externalFilter := Verdict{Kind: Drop}, Verdict{Kind: Drop}
	if !hasEndpoints {
		internalFilter, externalFilter = goTo(chainReject), goTo(chainReject)
	}

	// Dispatch: map elements.
	for _, ip := range ips {
		e := ipProtoPortKey(ip, p.Protocol, p.Port)
		if hasInternal {
			e.Verdict = gotoPtr(internalChain)
			f.elem(mapServiceIPs, e)
		} else {
			e.Verdict, e.Comment = &internalFilter, label
			f.elem(mapNoEndpointServices, e)
		}
	}
	for _, ip := range lbIPs {
		if hasEndpoints {
			e := ipProtoPortKey(ip, p.Protocol, p.Port)
			e.Verdict = gotoPtr(extChain)
			f.elem(mapServiceIPs, e)
		}
		if !hasExternal {
			e := ipProtoPortKey(ip, p.Protocol, p.Port)
			e.Verdict, e.Comment = &externalFilter, label
			f.elem(mapNoEndpointServices, e)
		}
	}
	if nodePort != 0 {
		if hasEndpoints {
			e := protoPortKey(p.Protocol, nodePort)
			e.Verdict = gotoPtr(extChain)
			f.elem(mapServiceNodePorts, e)
		}
		if !hasExternal {
			e := protoPortKey(p.Protocol, nodePort)
			e.Verdict, e.Comment = &externalFilter, label
			f.elem(mapNoEndpointNodePort, e)
		}
	}

	// Traffic to a ClusterIP from outside the pod network is masqueraded:
	// it may have come through a route to any machine, which must see the
	// reply.
	var internalMasq []Rule
	if hasInternal && o.clusterCIDRs {
		for _, ip := range ips {
			internalMasq = append(internalMasq, rule(MatchPrefix{Field: IPDaddr, Prefix: netip.PrefixFrom(ip, 32)},
				MatchPort{Protocol: p.Protocol, Port: p.Port},
				MatchSet{Field: IPSaddr, Not: true, Set: setClusterCIDRs}, jump(chainMarkMasq)))
		}
	}
	policyChain := func(name string, eps []*endpoint) *Chain {
		c := &Chain{Name: name}
		if name == internalChain {
			c.Rules = append(c.Rules, internalMasq...)
		}
		if s.AffinityTimeout > 0 {
			for _, e := range eps {
				c.Rules = append(c.Rules, rule(MatchSet{Field: IPSaddr, Set: e.aff}, goTo(e.chain)))
			}
		}
		// Endpoint choice: rule i goes to endpoint i with probability
		// 1/(N-i), so each endpoint gets 1/N of new connections.
		// kube-proxy writes "numgen random mod N vmap { ... }" instead,
		// but every such rule carries an anonymous set, and the kernel
		// keeps a table's sets in a list that it searches when adding one:
		// measured here, a rebuild of 4,000 services x 5 endpoints spent
		// 27 s in the kernel with anonymous maps and 2.3 s with these rules.
		for i, e := range eps {
			if i == len(eps)-1 {
				c.Rules = append(c.Rules, rule(goTo(e.chain)))
			} else {
				c.Rules = append(c.Rules, rule(NumgenZero{Mod: len(eps) - i}, goTo(e.chain)))
			}
		}
		return c
	}
	if usesCluster {
		f.chains = append(f.chains, policyChain(svcChain, cluster))
	}
	if usesLocal {
		f.chains = append(f.chains, policyChain(localChain, local))
	}
	if usesExternal {
		c := &Chain{Name: extChain}
		if !s.ExternalTrafficLocal {
			// Other machines' endpoints may answer: masquerade so that
			// replies come back through us.
			c.Rules = append(c.Rules, rule(jump(chainMarkMasq)))
		} else {
			if o.clusterCIDRs {
				c.Rules = append(c.Rules, Rule{Stmts: []Stmt{MatchSet{Field: IPSaddr, Set: setClusterCIDRs}, goTo(svcChain)},
					Comment: "short-circuit pod traffic"})
			}
			c.Rules = append(c.Rules,
				Rule{Stmts: []Stmt{MatchLocal{IPSaddr}, jump(chainMarkMasq)}, Comment: "masquerade local traffic"},
				Rule{Stmts: []Stmt{MatchLocal{IPSaddr}, goTo(svcChain)}, Comment: "short-circuit local traffic"})
		}
		if hasExternal {
			c.Rules = append(c.Rules, rule(goTo(externalPolicyChain)))
		}
		f.chains = append(f.chains, c)
	}

	reachable := cluster
	if !usesCluster {
		reachable = local
	}
	for _, e := range reachable {
		c := &Chain{Name: e.chain}
		c.Rules = append(c.Rules, rule(MatchPrefix{Field: IPSaddr, Prefix: netip.PrefixFrom(e.ip, 32)}, jump(chainMarkMasq)))
		if s.AffinityTimeout > 0 {
			c.Rules = append(c.Rules, rule(UpdateSet{Set: e.aff}))
			f.sets = append(f.sets, &Set{Name: e.aff, Key: []SetType{TypeIPv4Addr}, Timeout: s.AffinityTimeout})
		}
		c.Rules = append(c.Rules, rule(MatchProto{p.Protocol}, DNAT{IP: e.ip, Port: e.port}))
		f.chains = append(f.chains, c)
	}
	return nil
}
