package agent

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

// validateNetwork checks a Network; the error wraps api.ErrInvalid and
// lists every problem found. Prefixes must be masked, addresses IPv4 where
// the machine programs them, and no route may lead to the machine's own
// pod CIDR.
func validateNetwork(n api.Network) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	prefix := func(where string, p netip.Prefix) bool {
		switch {
		case !p.IsValid():
			add("%s: not a prefix", where)
		case !p.Addr().Is4():
			add("%s %s: only IPv4 is supported", where, p)
		case p.Masked() != p:
			add("%s %s: host bits set (want %s)", where, p, p.Masked())
		default:
			return true
		}
		return false
	}
	addr := func(where string, a netip.Addr) bool {
		if !a.IsValid() || !a.Is4() || a.IsUnspecified() {
			add("%s %s: not an IPv4 address", where, a)
			return false
		}
		return true
	}

	if n.Generation < 0 {
		add("generation %d: must not be negative", n.Generation)
	}
	if n.Machine == "" {
		add("machine is empty")
	}
	if n.PodCIDR.IsValid() {
		if prefix("podCIDR", n.PodCIDR) && n.PodCIDR.Bits() > 30 {
			add("podCIDR %s: leaves no address for a pod beside the gateway", n.PodCIDR)
		}
	}
	for i, p := range n.ClusterCIDRs {
		prefix(fmt.Sprintf("clusterCIDRs[%d]", i), p)
	}
	for i, p := range n.ServiceCIDRs {
		prefix(fmt.Sprintf("serviceCIDRs[%d]", i), p)
	}
	for i, a := range n.NodeIPs {
		addr(fmt.Sprintf("nodeIPs[%d]", i), a)
	}
	dsts := map[netip.Prefix]bool{}
	for i, r := range n.Routes {
		where := fmt.Sprintf("routes[%d]", i)
		if !prefix(where+" cidr", r.CIDR) {
			continue
		}
		addr(where+" via", r.Via)
		switch {
		case n.PodCIDR.IsValid() && r.CIDR.Overlaps(n.PodCIDR):
			add("%s: %s overlaps this machine's own pod CIDR %s", where, r.CIDR, n.PodCIDR)
		case dsts[r.CIDR]:
			add("%s: %s given twice", where, r.CIDR)
		}
		dsts[r.CIDR] = true
	}
	for i, u := range n.DNS.Upstreams {
		if _, err := netip.ParseAddr(u); err == nil {
			continue
		}
		if _, err := netip.ParseAddrPort(u); err != nil {
			add("dns.upstreams[%d] %q: not an address or address:port", i, u)
		}
	}
	if d := n.DNS.Domain; d != "" && (strings.ContainsAny(d, " \t/\\") || strings.HasPrefix(d, ".") || len(d) > 253) {
		add("dns.domain %q: not a domain name", d)
	}

	services := map[string]bool{}
	for i := range n.Services {
		s := &n.Services[i]
		where := fmt.Sprintf("services[%d]", i)
		if s.Namespace == "" || s.Name == "" {
			add("%s: namespace and name are required", where)
		} else {
			where = "service " + s.Namespace + "/" + s.Name
			if services[s.Namespace+"/"+s.Name] {
				add("%s: given twice", where)
			}
			services[s.Namespace+"/"+s.Name] = true
		}
		switch s.Type {
		case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
		default:
			add("%s: unknown type %q", where, s.Type)
		}
		for _, a := range s.ClusterIPs {
			addr(where+" clusterIP", a)
		}
		for _, a := range s.LoadBalancerIPs {
			addr(where+" loadBalancerIP", a)
		}
		if s.AffinitySeconds < 0 || s.AffinitySeconds > 86400 {
			add("%s: affinitySeconds %d: want 0 to 86400", where, s.AffinitySeconds)
		}
		names := map[string]bool{}
		for _, p := range s.Ports {
			pw := fmt.Sprintf("%s port %q", where, p.Name)
			if names[p.Name] {
				add("%s: name given twice", pw)
			}
			names[p.Name] = true
			protocol(add, pw, p.Protocol)
			if p.Port < 1 || p.Port > 65535 {
				add("%s: port %d out of range", pw, p.Port)
			}
			if p.NodePort < 0 || p.NodePort > 65535 {
				add("%s: nodePort %d out of range", pw, p.NodePort)
			}
		}
		for j, e := range s.Endpoints {
			ew := fmt.Sprintf("%s endpoints[%d]", where, j)
			addr(ew+" ip", e.IP)
			for _, p := range e.Ports {
				protocol(add, ew, p.Protocol)
				if p.Port < 1 || p.Port > 65535 {
					add("%s: port %q: %d out of range", ew, p.Name, p.Port)
				}
			}
		}
	}
	for i, p := range n.Pods {
		for _, a := range p.IPs {
			if !a.IsValid() {
				add("pods[%d] (%s/%s): invalid address", i, p.Namespace, p.Name)
			}
		}
	}
	for i := range n.Policies {
		p := &n.Policies[i]
		where := fmt.Sprintf("policies[%d]", i)
		if p.Namespace == "" || p.Name == "" {
			add("%s: namespace and name are required", where)
		} else {
			where = "policy " + p.Namespace + "/" + p.Name
		}
		for _, a := range p.Pods {
			addr(where+" pod", a)
		}
		for _, rules := range [][]api.PolicyRule{p.IngressRules, p.EgressRules} {
			for _, r := range rules {
				for _, peer := range r.Peers {
					if len(peer.IPs) == 0 && !peer.Block.IsValid() {
						add("%s: a peer with neither ips nor block", where)
					}
					if peer.Block.IsValid() && prefix(where+" block", peer.Block) {
						for _, x := range peer.Except {
							if prefix(where+" except", x) && !peer.Block.Overlaps(x) {
								add("%s: except %s is outside block %s", where, x, peer.Block)
							}
						}
					}
					for _, a := range peer.IPs {
						addr(where+" peer", a)
					}
				}
				for _, port := range r.Ports {
					protocol(add, where, port.Protocol)
					switch {
					case port.Port < 0 || port.Port > 65535 || port.EndPort < 0 || port.EndPort > 65535:
						add("%s: port %d-%d out of range", where, port.Port, port.EndPort)
					case port.EndPort != 0 && (port.Port == 0 || port.EndPort < port.Port):
						add("%s: port range %d-%d", where, port.Port, port.EndPort)
					}
				}
			}
		}
	}
	held := map[netip.Addr]bool{}
	for i, a := range n.HeldIPs {
		if addr(fmt.Sprintf("heldIPs[%d]", i), a) && held[a] {
			add("heldIPs[%d] %s: given twice", i, a)
		}
		held[a] = true
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: network: %s", api.ErrInvalid, strings.Join(problems, "; "))
}

func protocol(add func(string, ...any), where string, p corev1.Protocol) {
	switch p {
	case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		add("%s: unknown protocol %q", where, p)
	}
}
