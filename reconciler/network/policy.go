package network

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
)

// policies resolves every NetworkPolicy and gives each machine those that
// select its pods. A policy whose named ingress ports mean different
// numbers on different pods is split into one entry per group of pods
// that agree, which isolates and allows exactly what the policy does.
func (s *state) policies() map[string][]api.NetworkPolicy {
	out := map[string][]api.NetworkPolicy{}
	for _, o := range s.d.Objects {
		np, ok := o.Obj.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			s.diag(render.SeverityError, o, "spec.podSelector", "invalid selector: the policy is not applied: %v", err)
			continue
		}
		var selected []*podInfo
		for _, p := range s.matchSelector(o.Namespace, &np.Spec.PodSelector, sel) {
			// NetworkPolicy does not apply to host-network pods.
			if !p.hostNetwork() {
				selected = append(selected, p)
			}
		}
		if len(selected) == 0 {
			continue
		}
		isolateIngress, isolateEgress := policyTypes(np)
		var egress []api.PolicyRule
		if isolateEgress {
			for i, r := range np.Spec.Egress {
				egress = append(egress, s.egressRule(o, fmt.Sprintf("spec.egress[%d]", i), r)...)
			}
		}
		var ingress []ingressRule
		named := false
		if isolateIngress {
			for i, r := range np.Spec.Ingress {
				field := fmt.Sprintf("spec.ingress[%d]", i)
				peers, _, ok := s.peers(o, field+".from", r.From)
				if ok {
					ingress = append(ingress, ingressRule{peers: peers, ports: r.Ports})
					named = named || slices.ContainsFunc(r.Ports, func(p networkingv1.NetworkPolicyPort) bool {
						return p.Port != nil && p.Port.Type == intstr.String
					})
				}
			}
		}
		tmpl := api.NetworkPolicy{Namespace: o.Namespace, Name: o.Name, Ingress: isolateIngress, Egress: isolateEgress, EgressRules: egress}
		slices.SortStableFunc(selected, func(a, b *podInfo) int { return strings.Compare(a.machine, b.machine) })
		for start := 0; start < len(selected); {
			end := start
			for end < len(selected) && selected[end].machine == selected[start].machine {
				end++
			}
			m := selected[start].machine
			out[m] = append(out[m], machinePolicy(tmpl, selected[start:end], ingress, named)...)
			start = end
		}
	}
	for _, ps := range out {
		slices.SortFunc(ps, func(a, b api.NetworkPolicy) int {
			return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name), a.Pods[0].Compare(b.Pods[0]))
		})
	}
	return out
}

// machinePolicy is a policy on one machine: tmpl with the machine's
// selected pods and their ingress rules, as many entries as there are
// groups of pods on which the rules' named ports mean the same numbers.
func machinePolicy(tmpl api.NetworkPolicy, local []*podInfo, ingress []ingressRule, named bool) []api.NetworkPolicy {
	var groups []*api.NetworkPolicy
	bySig := map[string]*api.NetworkPolicy{}
	for _, p := range local {
		sig := ""
		if named {
			sig = portSignature(ingress, p)
		}
		g := bySig[sig]
		if g == nil {
			g = new(tmpl)
			if tmpl.Ingress {
				g.IngressRules = resolveIngress(ingress, p)
			}
			bySig[sig] = g
			groups = append(groups, g)
		}
		if !slices.Contains(g.Pods, p.ip) {
			g.Pods = append(g.Pods, p.ip)
		}
	}
	out := make([]api.NetworkPolicy, 0, len(groups))
	for _, g := range groups {
		slices.SortFunc(g.Pods, netip.Addr.Compare)
		out = append(out, *g)
	}
	return out
}

// policyTypes are the directions a policy isolates, defaulted as
// Kubernetes does: ingress always, egress when it has egress rules.
func policyTypes(np *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(np.Spec.PolicyTypes) == 0 {
		return true, len(np.Spec.Egress) > 0
	}
	return slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress),
		slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
}

// ingressRule is an ingress rule with its peers resolved and its ports
// not yet: named ones resolve on each selected pod.
type ingressRule struct {
	peers []api.PolicyPeer
	ports []networkingv1.NetworkPolicyPort
}

// resolveIngress resolves the rules' ports on pod p. A rule whose ports
// all name ports p does not have allows nothing, and is left out (no
// ports would allow every port).
func resolveIngress(rules []ingressRule, p *podInfo) []api.PolicyRule {
	var out []api.PolicyRule
	for _, r := range rules {
		if len(r.ports) == 0 {
			out = append(out, api.PolicyRule{Peers: r.peers})
			continue
		}
		var ports []api.PolicyPort
		for _, pp := range r.ports {
			fp, fixed := fixedPort(pp)
			if fixed {
				ports = append(ports, fp)
			} else if n, ok := namedPort(p, pp.Port.StrVal, fp.Protocol); ok {
				ports = append(ports, api.PolicyPort{Protocol: fp.Protocol, Port: n})
			}
		}
		if len(ports) > 0 {
			out = append(out, api.PolicyRule{Peers: r.peers, Ports: sortPorts(ports)})
		}
	}
	return out
}

// portSignature tells apart pods on which the rules' named ports mean
// different numbers.
func portSignature(rules []ingressRule, p *podInfo) string {
	var b strings.Builder
	for _, r := range rules {
		for _, pp := range r.ports {
			if pp.Port != nil && pp.Port.Type == intstr.String {
				n, _ := namedPort(p, pp.Port.StrVal, protocolOf(pp))
				b.WriteString(strconv.Itoa(int(n)))
				b.WriteByte(',')
			}
		}
	}
	return b.String()
}

// egressRule resolves one egress rule. Named ports are ports of the
// destination pods: with pod peers only, the rule is split by the number
// each peer gives the name; with ipBlocks or no peers, the name stands for
// every number any pod of the cluster gives it.
func (s *state) egressRule(o *render.Object, field string, r networkingv1.NetworkPolicyEgressRule) []api.PolicyRule {
	peers, pods, ok := s.peers(o, field+".to", r.To)
	if !ok {
		return nil
	}
	if len(r.Ports) == 0 {
		return []api.PolicyRule{{Peers: peers}}
	}
	podsOnly := len(r.To) > 0 && !slices.ContainsFunc(r.To, func(p networkingv1.NetworkPolicyPeer) bool { return p.IPBlock != nil })
	var numeric []api.PolicyPort
	var out []api.PolicyRule
	for _, pp := range r.Ports {
		fp, fixed := fixedPort(pp)
		proto := fp.Protocol
		switch {
		case fixed:
			numeric = append(numeric, fp)
		case podsOnly:
			byNumber := map[int32][]netip.Addr{}
			for _, p := range pods {
				if n, ok := namedPort(p, pp.Port.StrVal, proto); ok {
					byNumber[n] = append(byNumber[n], p.ip)
				}
			}
			for _, n := range slices.Sorted(maps.Keys(byNumber)) {
				out = append(out, api.PolicyRule{
					Peers: []api.PolicyPeer{{IPs: sortAddrs(byNumber[n])}},
					Ports: []api.PolicyPort{{Protocol: proto, Port: n}},
				})
			}
		default:
			var ports []api.PolicyPort
			for _, p := range s.pods {
				if n, ok := namedPort(p, pp.Port.StrVal, proto); ok {
					ports = append(ports, api.PolicyPort{Protocol: proto, Port: n})
				}
			}
			if len(ports) > 0 {
				out = append(out, api.PolicyRule{Peers: peers, Ports: sortPorts(ports)})
			}
		}
	}
	if len(numeric) > 0 {
		out = append([]api.PolicyRule{{Peers: peers, Ports: sortPorts(numeric)}}, out...)
	}
	return out
}

// peers resolves a rule's from or to. ok is false when the rule names
// peers and none of them exists: it allows nothing (no peers would allow
// every address).
func (s *state) peers(o *render.Object, field string, in []networkingv1.NetworkPolicyPeer) (out []api.PolicyPeer, pods []*podInfo, ok bool) {
	if len(in) == 0 {
		return nil, nil, true
	}
	seen := map[*podInfo]bool{}
	for i, peer := range in {
		pf := fmt.Sprintf("%s[%d]", field, i)
		if b := peer.IPBlock; b != nil {
			block, err := netip.ParsePrefix(b.CIDR)
			if err != nil {
				s.diag(render.SeverityError, o, pf+".ipBlock.cidr", "invalid CIDR %q: the peer is left out", b.CIDR)
				continue
			}
			pb := api.PolicyPeer{Block: block.Masked()}
			for _, e := range b.Except {
				if ex, err := netip.ParsePrefix(e); err == nil {
					pb.Except = append(pb.Except, ex.Masked())
				}
			}
			out = append(out, pb)
			continue
		}
		podSel, nsSel := labels.Everything(), labels.Nothing()
		var err error
		if peer.PodSelector != nil {
			if podSel, err = metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
				s.diag(render.SeverityError, o, pf+".podSelector", "invalid selector: the peer is left out: %v", err)
				continue
			}
		}
		var namespaces []string
		if peer.NamespaceSelector == nil {
			namespaces = []string{o.Namespace}
		} else {
			if nsSel, err = metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
				s.diag(render.SeverityError, o, pf+".namespaceSelector", "invalid selector: the peer is left out: %v", err)
				continue
			}
			for ns, l := range s.nsLabels {
				if nsSel.Matches(labels.Set(l)) {
					namespaces = append(namespaces, ns)
				}
			}
		}
		for _, ns := range namespaces {
			for _, p := range s.matchSelector(ns, peer.PodSelector, podSel) {
				// A host-network pod's address is its machine's: allowing
				// it would allow the whole machine.
				if !seen[p] && !p.hostNetwork() {
					seen[p] = true
					pods = append(pods, p)
				}
			}
		}
	}
	if len(pods) > 0 {
		ips := make([]netip.Addr, 0, len(pods))
		for _, p := range pods {
			ips = append(ips, p.ip)
		}
		out = append([]api.PolicyPeer{{IPs: sortAddrs(ips)}}, out...)
	}
	return out, pods, len(out) > 0
}

func protocolOf(pp networkingv1.NetworkPolicyPort) corev1.Protocol {
	if pp.Protocol == nil {
		return corev1.ProtocolTCP
	}
	return cmp.Or(*pp.Protocol, corev1.ProtocolTCP)
}

// fixedPort is a policy port that means the same on every pod: every
// port of the protocol, a number or a range. ok is false for a named port
// (only its protocol is set then).
func fixedPort(pp networkingv1.NetworkPolicyPort) (_ api.PolicyPort, ok bool) {
	out := api.PolicyPort{Protocol: protocolOf(pp)}
	switch {
	case pp.Port == nil:
		return out, true
	case pp.Port.Type == intstr.Int:
		out.Port = pp.Port.IntVal
		if pp.EndPort != nil && *pp.EndPort > pp.Port.IntVal {
			out.EndPort = *pp.EndPort
		}
		return out, true
	}
	return out, false
}

func sortAddrs(a []netip.Addr) []netip.Addr {
	slices.SortFunc(a, netip.Addr.Compare)
	return slices.Compact(a)
}

func sortPorts(p []api.PolicyPort) []api.PolicyPort {
	slices.SortFunc(p, func(a, b api.PolicyPort) int {
		return cmp.Or(strings.Compare(string(a.Protocol), string(b.Protocol)), cmp.Compare(a.Port, b.Port), cmp.Compare(a.EndPort, b.EndPort))
	})
	return slices.Compact(p)
}
