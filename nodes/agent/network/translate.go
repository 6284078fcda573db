package network

import (
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/cni"
	"berth.dev/berth/nodes/dns"
	"berth.dev/berth/nodes/nft"
)

// nftDesired is the Service routing and policy of n: every Service that
// has a virtual address, with its Ready endpoints that are not
// terminating (local when they run on n.Machine), and n's policies.
func nftDesired(n *api.Network) *nft.Desired {
	d := &nft.Desired{
		NodeIPs:      n.NodeIPs,
		ClusterCIDRs: n.ClusterCIDRs,
		ServiceCIDRs: n.ServiceCIDRs,
	}
	if n.PodCIDR.IsValid() {
		d.NodePodCIDRs = []netip.Prefix{n.PodCIDR}
	}
	for i := range n.Services {
		s := &n.Services[i]
		if s.Headless || s.Type == corev1.ServiceTypeExternalName || len(s.ClusterIPs) == 0 {
			continue // nothing to route: DNS answers for it
		}
		out := nft.Service{
			Namespace:            s.Namespace,
			Name:                 s.Name,
			Type:                 nft.ServiceType(s.Type),
			ClusterIPs:           s.ClusterIPs,
			LoadBalancerIPs:      s.LoadBalancerIPs,
			AffinityTimeout:      time.Duration(s.AffinitySeconds) * time.Second,
			ExternalTrafficLocal: s.ExternalTrafficLocal,
			InternalTrafficLocal: s.InternalTrafficLocal,
		}
		if out.Type == "" {
			out.Type = nft.ClusterIP
		}
		for _, p := range s.Ports {
			out.Ports = append(out.Ports, nft.ServicePort{
				Name: p.Name, Protocol: nftProtocol(p.Protocol), Port: uint16(p.Port), NodePort: uint16(p.NodePort),
			})
		}
		for _, e := range s.Endpoints {
			if !e.Ready || e.Terminating {
				continue
			}
			ep := nft.Endpoint{IP: e.IP, Ready: true, Local: e.Machine == n.Machine}
			for _, p := range e.Ports {
				ep.Ports = append(ep.Ports, nft.EndpointPort{Name: p.Name, Port: uint16(p.Port)})
			}
			out.Endpoints = append(out.Endpoints, ep)
		}
		d.Services = append(d.Services, out)
	}
	for i := range n.Policies {
		p := &n.Policies[i]
		d.Policies = append(d.Policies, nft.Policy{
			Namespace: p.Namespace, Name: p.Name, Pods: p.Pods,
			Ingress: p.Ingress, Egress: p.Egress,
			IngressRules: nftRules(p.IngressRules), EgressRules: nftRules(p.EgressRules),
		})
	}
	return d
}

func nftRules(rules []api.PolicyRule) []nft.PolicyRule {
	var out []nft.PolicyRule
	for _, r := range rules {
		var o nft.PolicyRule
		for _, p := range r.Peers {
			o.Peers = append(o.Peers, nft.PolicyPeer{IPs: p.IPs, Block: p.Block, Except: p.Except})
		}
		for _, p := range r.Ports {
			o.Ports = append(o.Ports, nft.PolicyPort{Protocol: nftProtocol(p.Protocol), Port: uint16(p.Port), EndPort: uint16(p.EndPort)})
		}
		out = append(out, o)
	}
	return out
}

func nftProtocol(p corev1.Protocol) nft.Protocol {
	if p == "" {
		return nft.TCP
	}
	return nft.Protocol(p)
}

// dnsInput is the cluster DNS of n: every Service (headless ones with
// their endpoints' addresses, ExternalName ones as CNAMEs) with its Ready,
// non-terminating endpoints (all but terminating ones when it publishes
// not-ready addresses), every pod's addresses, and reverse zones for the
// service and pod networks. gateway is where pods reach the server.
func dnsInput(n *api.Network, gateway netip.Addr) dns.Input {
	in := dns.Input{
		Domain:  n.DNS.Domain,
		Serial:  uint32(n.Generation),
		PodMode: dns.PodsVerified,
	}
	if gateway.IsValid() {
		in.NameserverIPs = []netip.Addr{gateway}
	}
	in.ReverseZones = append(in.ReverseZones, n.ServiceCIDRs...)
	in.ReverseZones = append(in.ReverseZones, n.ClusterCIDRs...)
	if n.PodCIDR.IsValid() && !covered(n.ClusterCIDRs, n.PodCIDR) {
		in.ReverseZones = append(in.ReverseZones, n.PodCIDR)
	}
	for i := range n.Services {
		s := &n.Services[i]
		out := dns.Service{
			Namespace:    s.Namespace,
			Name:         s.Name,
			Type:         s.Type,
			ClusterIPs:   s.ClusterIPs,
			Headless:     s.Headless,
			ExternalName: s.ExternalName,
		}
		for _, p := range s.Ports {
			out.Ports = append(out.Ports, dns.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port})
		}
		for _, e := range s.Endpoints {
			if e.Terminating || (!e.Ready && !s.PublishNotReady) {
				continue
			}
			ep := dns.Endpoint{IP: e.IP, Hostname: e.Hostname, Subdomain: e.Subdomain,
				Ports: make([]dns.EndpointPort, 0, len(e.Ports))}
			for _, p := range e.Ports {
				ep.Ports = append(ep.Ports, dns.EndpointPort{Name: p.Name, Protocol: p.Protocol, Port: p.Port})
			}
			out.Endpoints = append(out.Endpoints, ep)
		}
		in.Services = append(in.Services, out)
	}
	for _, p := range n.Pods {
		in.Pods = append(in.Pods, dns.Pod{Namespace: p.Namespace, IPs: p.IPs})
	}
	return in
}

func covered(ps []netip.Prefix, p netip.Prefix) bool {
	for _, c := range ps {
		if c.Bits() <= p.Bits() && c.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// cniRoutes are n's host-gw routes.
func cniRoutes(n *api.Network) []cni.Route {
	out := make([]cni.Route, 0, len(n.Routes))
	for _, r := range n.Routes {
		out = append(out, cni.Route{Dst: r.CIDR, Via: r.Via})
	}
	return out
}
