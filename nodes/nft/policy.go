package nft

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"sort"
	"strconv"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// Policy is one NetworkPolicy with its selectors already resolved to
// addresses by the caller.
type Policy struct {
	Namespace, Name string
	// Pods are the addresses of the pods its podSelector selects (those on
	// this machine are enough; others are never seen here).
	Pods []netip.Addr
	// Ingress and Egress are the directions it isolates (policyTypes).
	Ingress, Egress bool
	// IngressRules allow traffic to Pods; EgressRules traffic from them.
	IngressRules, EgressRules []PolicyRule
}

// PolicyRule allows traffic from (ingress) or to (egress) any of Peers on
// any of Ports. No peers means every address, no ports every port.
type PolicyRule struct {
	Peers []PolicyPeer
	Ports []PolicyPort
}

// PolicyPeer is either the pods chosen by a podSelector and/or
// namespaceSelector (IPs) or an ipBlock (Block, minus Except).
type PolicyPeer struct {
	IPs    []netip.Addr
	Block  netip.Prefix
	Except []netip.Prefix
}

// PolicyPort is a protocol with a port or a port range (Port to EndPort);
// Port 0 is every port of the protocol.
type PolicyPort struct {
	Protocol      Protocol
	Port, EndPort uint16
}

// Policy chains and sets. Policies are enforced where routed pod traffic
// passes: the forward hook, after DNAT (so a Service's traffic is judged by
// the pod it reaches, as Kubernetes wants), in a filter chain at priority
// filter.
const (
	chainPolicyForward = "policy-forward"
	chainPolicyIngress = "policy-ingress"
	chainPolicyEgress  = "policy-egress"
	setIngressPods     = "policy-ingress-pods"
	setEgressPods      = "policy-egress-pods"
	prefixPolicy       = "policy-"
	policyNameMax      = 200 // leaves room for the suffixes
)

// hashAndTruncate prefixes name with a hash of itself (so that a truncated
// name stays unique and similar names look different) and truncates it.
func hashAndTruncate(name string) string {
	h := sha256.Sum256([]byte(name))
	// 5 bytes are exactly 8 base32 characters.
	s := base32.StdEncoding.EncodeToString(h[:5]) + "-" + name
	if len(s) > policyNameMax {
		s = s[:policyNameMax-3] + "..."
	}
	return s
}

func (p *Policy) validate() error {
	if p.Namespace == "" || p.Name == "" {
		return fmt.Errorf("network policy %q/%q: namespace and name are required", p.Namespace, p.Name)
	}
	for _, rs := range [][]PolicyRule{p.IngressRules, p.EgressRules} {
		for _, r := range rs {
			for _, port := range r.Ports {
				switch port.Protocol {
				case TCP, UDP, SCTP:
				default:
					return fmt.Errorf("network policy %s/%s: unknown protocol %q", p.Namespace, p.Name, port.Protocol)
				}
				if port.EndPort != 0 && port.EndPort < port.Port {
					return fmt.Errorf("network policy %s/%s: port range %d-%d", p.Namespace, p.Name, port.Port, port.EndPort)
				}
			}
			for _, peer := range r.Peers {
				if len(peer.IPs) == 0 && !peer.Block.IsValid() {
					return fmt.Errorf("network policy %s/%s: a peer with neither pods nor ipBlock", p.Namespace, p.Name)
				}
			}
		}
	}
	return nil
}

// compilePolicies adds the policy chains and sets to the table-wide
// fragment. A pod selected by a policy for a direction is isolated in it:
// its traffic passes only if a rule of some policy selecting it allows it;
// replies (established, related) always pass.
func compilePolicies(f *fragment, policies []Policy) error {
	ps := make([]*Policy, len(policies))
	for i := range policies {
		ps[i] = &policies[i]
	}
	sort.Slice(ps, func(i, j int) bool {
		return ps[i].Namespace < ps[j].Namespace || ps[i].Namespace == ps[j].Namespace && ps[i].Name < ps[j].Name
	})
	fwd := base(chainPolicyForward, "filter", "forward", prioFilter)
	fwd.Rules = []Rule{
		rule(MatchCtState{CtEstablished | CtRelated}, Verdict{Kind: Accept}),
		rule(inSet(setEgressPods, IPSaddr), jump(chainPolicyEgress)),
		rule(inSet(setIngressPods, IPDaddr), jump(chainPolicyIngress)),
	}
	ingress := &Chain{Name: chainPolicyIngress}
	egress := &Chain{Name: chainPolicyEgress}
	f.sets = append(f.sets,
		&Set{Name: setIngressPods, Key: []SetType{TypeIPv4Addr}, Interval: true, Comment: "pods isolated for ingress"},
		&Set{Name: setEgressPods, Key: []SetType{TypeIPv4Addr}, Interval: true, Comment: "pods isolated for egress"})
	var inPods, outPods []netip.Prefix
	for i, p := range ps {
		if err := p.validate(); err != nil {
			return err
		}
		if i > 0 && p.Namespace == ps[i-1].Namespace && p.Name == ps[i-1].Name {
			return fmt.Errorf("network policy %s/%s given twice", p.Namespace, p.Name)
		}
		if !p.Ingress && !p.Egress {
			continue
		}
		name := hashAndTruncate(p.Namespace + "/" + p.Name)
		podsSet := prefixPolicy + name + "-pods"
		pods := hostPrefixes(p.Pods)
		f.sets = append(f.sets, &Set{Name: podsSet, Key: []SetType{TypeIPv4Addr}, Interval: true})
		for _, e := range intervalElements(pods) {
			f.elem(podsSet, e)
		}
		dirs := []struct {
			on      bool
			rules   []PolicyRule
			chain   *Chain
			tag     string
			self    Field // the selected pod's address
			peer    Field
			isolate *[]netip.Prefix
		}{
			{p.Ingress, p.IngressRules, ingress, "in", IPDaddr, IPSaddr, &inPods},
			{p.Egress, p.EgressRules, egress, "out", IPSaddr, IPDaddr, &outPods},
		}
		for _, d := range dirs {
			if !d.on {
				continue
			}
			*d.isolate = append(*d.isolate, pods...)
			for ri, r := range d.rules {
				peers := []Stmt{nil} // no peers: from/to anywhere
				if len(r.Peers) > 0 {
					peers = peers[:0]
				}
				for pi, peer := range r.Peers {
					set := fmt.Sprintf("%s%s-%s%d-%d", prefixPolicy, name, d.tag, ri, pi)
					f.sets = append(f.sets, &Set{Name: set, Key: []SetType{TypeIPv4Addr}, Interval: true})
					cidrs := hostPrefixes(peer.IPs)
					if peer.Block.IsValid() {
						cidrs = append(cidrs, peer.Block)
					}
					for _, e := range intervalElements(cidrs) {
						f.elem(set, e)
					}
					var m Stmt = inSet(set, d.peer)
					if len(v4Prefixes(peer.Except)) > 0 {
						except := set + "-except"
						f.sets = append(f.sets, &Set{Name: except, Key: []SetType{TypeIPv4Addr}, Interval: true})
						for _, e := range intervalElements(peer.Except) {
							f.elem(except, e)
						}
						m = both{m, notInSet(except, d.peer)}
					}
					peers = append(peers, m)
				}
				ports := []Stmt{nil}
				if len(r.Ports) > 0 {
					ports = ports[:0]
				}
				for _, port := range r.Ports {
					switch {
					case port.Port == 0:
						ports = append(ports, MatchProto{port.Protocol})
					case port.EndPort > port.Port:
						ports = append(ports, MatchPortRange{port.Protocol, port.Port, port.EndPort})
					default:
						ports = append(ports, MatchPort{port.Protocol, port.Port})
					}
				}
				for _, peer := range peers {
					for _, port := range ports {
						stmts := []Stmt{inSet(podsSet, d.self)}
						if peer != nil {
							stmts = append(stmts, peer)
						}
						if port != nil {
							stmts = append(stmts, port)
						}
						stmts = append(stmts, Verdict{Kind: Return})
						d.chain.Rules = append(d.chain.Rules, Rule{Stmts: stmts,
							Comment: p.Namespace + "/" + p.Name + " " + d.tag + " " + strconv.Itoa(ri)})
					}
				}
			}
		}
	}
	ingress.Rules = append(ingress.Rules, rule(Verdict{Kind: Drop}))
	egress.Rules = append(egress.Rules, rule(Verdict{Kind: Drop}))
	for _, e := range intervalElements(inPods) {
		f.elem(setIngressPods, e)
	}
	for _, e := range intervalElements(outPods) {
		f.elem(setEgressPods, e)
	}
	f.chains = append(f.chains, fwd, ingress, egress)
	return nil
}

func hostPrefixes(ips []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ips))
	for _, ip := range ips {
		if ip.Is4() {
			out = append(out, netip.PrefixFrom(ip, 32))
		}
	}
	return out
}

// both is two statements printed and lowered one after the other.
type both [2]Stmt

func (b both) String() string { return b[0].String() + " " + b[1].String() }

func (b both) lower(l *lowerer) ([]expr.Any, error) {
	x, err := b[0].lower(l)
	if err != nil {
		return nil, err
	}
	y, err := b[1].lower(l)
	return append(x, y...), err
}

// MatchPortRange is "tcp|udp|sctp dport FIRST-LAST".
type MatchPortRange struct {
	Protocol    Protocol
	First, Last uint16
}

func (m MatchPortRange) String() string {
	return fmt.Sprintf("%s dport %d-%d", protoName(m.Protocol), m.First, m.Last)
}

func (m MatchPortRange) lower(*lowerer) ([]expr.Any, error) {
	return []expr.Any{
		L4Proto.load(1),
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNumber(m.Protocol)}},
		THDport.load(1),
		&expr.Range{Op: expr.CmpOpEq, Register: 1,
			FromData: binaryutil.BigEndian.PutUint16(m.First), ToData: binaryutil.BigEndian.PutUint16(m.Last)},
	}, nil
}
