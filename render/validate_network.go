package render

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The NodePort range, as in a default Kubernetes cluster.
const (
	nodePortMin = 30000
	nodePortMax = 32767
)

// nodePortUse is the first Service port seen with a NodePort.
type nodePortUse struct {
	at       place
	protocol corev1.Protocol
}

func (c *checker) service(svc *corev1.Service) {
	s := &svc.Spec
	validType := oneOf(c, "spec.type", s.Type, corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName)
	headless := s.ClusterIP == corev1.ClusterIPNone
	external := s.Type == corev1.ServiceTypeNodePort || s.Type == corev1.ServiceTypeLoadBalancer

	if s.Type == corev1.ServiceTypeExternalName {
		if s.ExternalName == "" {
			c.errorf("spec.externalName", "externalName is required for type ExternalName")
		} else {
			c.invalid("spec.externalName", "externalName", s.ExternalName, content.IsDNS1123Subdomain(strings.TrimSuffix(s.ExternalName, ".")))
		}
	} else if len(s.Ports) == 0 && !headless && validType {
		c.errorf("spec.ports", "at least one port is required")
	}

	names := map[string]string{}
	type portProto struct {
		port  int32
		proto corev1.Protocol
	}
	seen := map[portProto]string{}
	for i, p := range s.Ports {
		pp := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case p.Name == "" && len(s.Ports) > 1:
			c.errorf(pp+".name", "a port name is required when a Service has more than one port")
		case p.Name == "":
		case c.invalid(pp+".name", "port name", p.Name, content.IsDNS1123Label(p.Name)):
		case names[p.Name] != "":
			c.errorf(pp+".name", "port name %q is used twice (also %s)", p.Name, names[p.Name])
		default:
			names[p.Name] = pp
		}
		c.protocol(pp+".protocol", p.Protocol)
		if c.portNumber(pp+".port", "port", p.Port) {
			k := portProto{p.Port, p.Protocol}
			if prev, dup := seen[k]; dup {
				c.errorf(pp+".port", "port %d/%s is declared twice (also %s)", p.Port, p.Protocol, prev)
			} else {
				seen[k] = pp
			}
		}
		switch {
		case !c.o.HasField(pp + ".targetPort"):
			// Defaulted to the port, checked above.
		case p.TargetPort.Type == intstr.Int:
			c.portNumber(pp+".targetPort", "targetPort", p.TargetPort.IntVal)
		default:
			c.invalid(pp+".targetPort", "targetPort name", p.TargetPort.StrVal, validation.IsValidPortName(p.TargetPort.StrVal))
		}
		if p.NodePort != 0 {
			c.nodePort(pp+".nodePort", p, external)
		}
	}

	if s.ClusterIP != "" && !headless {
		c.clusterIP(s.ClusterIP)
	}
	if headless && external {
		c.errorf("spec.clusterIP", "a headless Service (clusterIP: None) cannot be of type %s", s.Type)
	}
	c.labels("spec.selector", s.Selector)
	oneOf(c, "spec.sessionAffinity", s.SessionAffinity, corev1.ServiceAffinityNone, corev1.ServiceAffinityClientIP)
	if s.ExternalTrafficPolicy != "" {
		if external || len(s.ExternalIPs) > 0 {
			oneOf(c, "spec.externalTrafficPolicy", s.ExternalTrafficPolicy, corev1.ServiceExternalTrafficPolicyCluster, corev1.ServiceExternalTrafficPolicyLocal)
		} else if validType {
			c.errorf("spec.externalTrafficPolicy", "externalTrafficPolicy applies only to type NodePort or LoadBalancer, or to externalIPs")
		}
	}
	if p := s.InternalTrafficPolicy; p != nil {
		oneOf(c, "spec.internalTrafficPolicy", *p, corev1.ServiceInternalTrafficPolicyCluster, corev1.ServiceInternalTrafficPolicyLocal)
	}
}

func (c *checker) nodePort(p string, sp corev1.ServicePort, external bool) {
	n := sp.NodePort
	switch {
	case !external:
		c.errorf(p, "nodePort is only allowed when the Service type is NodePort or LoadBalancer")
		return
	case n < nodePortMin || n > nodePortMax:
		c.errorf(p, "nodePort %d is outside the NodePort range %d-%d", n, nodePortMin, nodePortMax)
		return
	}
	prev, dup := c.v.nodePorts[n]
	if !dup {
		c.v.nodePorts[n] = nodePortUse{at: place{c.o, p}, protocol: sp.Protocol}
		return
	}
	if prev.at.o == c.o && prev.protocol != sp.Protocol {
		return // one Service may use a NodePort for TCP and UDP alike
	}
	c.errorf(p, "nodePort %d is already used by %s", n, prev.at)
}

func (c *checker) clusterIP(ip string) {
	const p = "spec.clusterIP"
	a, err := netip.ParseAddr(ip)
	if err != nil {
		c.errorf(p, "clusterIP %q is not an IP address (or None, for a headless Service)", ip)
		return
	}
	if c.v.serviceCIDR.IsValid() && !c.v.serviceCIDR.Contains(a) {
		c.errorf(p, "clusterIP %s is not in the Cluster's service CIDR %s", a, c.v.serviceCIDR)
		return
	}
	if prev, dup := c.v.clusterIPs[a]; dup {
		c.errorf(p, "clusterIP %s is already used by %s", a, prev)
		return
	}
	c.v.clusterIPs[a] = place{c.o, p}
}

// Ingress path types.
var pathTypes = []networkingv1.PathType{networkingv1.PathTypeExact, networkingv1.PathTypePrefix, networkingv1.PathTypeImplementationSpecific}

func (c *checker) ingress(ing *networkingv1.Ingress) {
	s := &ing.Spec
	if s.DefaultBackend == nil && len(s.Rules) == 0 {
		c.errorf("spec", "an Ingress needs rules or a defaultBackend")
	}
	if s.DefaultBackend != nil {
		c.ingressBackend("spec.defaultBackend", s.DefaultBackend)
	}
	for i, r := range s.Rules {
		rp := fmt.Sprintf("spec.rules[%d]", i)
		if r.Host != "" {
			c.host(rp+".host", r.Host)
		}
		if r.HTTP == nil {
			continue
		}
		if len(r.HTTP.Paths) == 0 {
			c.errorf(rp+".http.paths", "at least one path is required")
		}
		for j := range r.HTTP.Paths {
			hp := &r.HTTP.Paths[j]
			pp := fmt.Sprintf("%s.http.paths[%d]", rp, j)
			if hp.PathType == nil {
				c.errorf(pp+".pathType", "pathType is required: %s", orList([]string{"Exact", "Prefix", "ImplementationSpecific"}))
			} else {
				oneOf(c, pp+".pathType", *hp.PathType, pathTypes...)
			}
			switch {
			case hp.Path == "" && (hp.PathType == nil || *hp.PathType != networkingv1.PathTypeImplementationSpecific):
				c.errorf(pp+".path", "a path is required; it must start with /")
			case hp.Path != "" && !strings.HasPrefix(hp.Path, "/"):
				c.errorf(pp+".path", "path %q must start with /", hp.Path)
			}
			c.ingressBackend(pp+".backend", &hp.Backend)
		}
	}
	for i, t := range s.TLS {
		tp := fmt.Sprintf("spec.tls[%d]", i)
		for j, h := range t.Hosts {
			c.host(fmt.Sprintf("%s.hosts[%d]", tp, j), h)
		}
		if t.SecretName == "" {
			continue
		}
		sec := c.get("", "Secret", t.SecretName)
		if sec == nil {
			c.errorf(tp+".secretName", "Secret %q not found in namespace %s", t.SecretName, c.o.Namespace)
		} else if typ := sec.Obj.(*corev1.Secret).Type; typ != corev1.SecretTypeTLS {
			c.warnf(tp+".secretName", "Secret %q is of type %s, not %s", t.SecretName, typ, corev1.SecretTypeTLS)
		}
	}
}

// host checks an Ingress host: a DNS name, possibly a wildcard.
func (c *checker) host(p, h string) {
	if _, err := netip.ParseAddr(h); err == nil {
		c.errorf(p, "host %q must be a DNS name, not an IP address", h)
		return
	}
	if strings.HasPrefix(h, "*.") {
		c.invalid(p, "host", h, validation.IsWildcardDNS1123Subdomain(h))
		return
	}
	c.invalid(p, "host", h, content.IsDNS1123Subdomain(h))
}

// ingressBackend checks a backend and that its Service and port exist.
func (c *checker) ingressBackend(p string, b *networkingv1.IngressBackend) {
	if (b.Service == nil) == (b.Resource == nil) {
		c.errorf(p, "a backend needs exactly one of service and resource")
	}
	bs := b.Service
	if bs == nil {
		return
	}
	if bs.Name == "" {
		c.errorf(p+".service.name", "the Service name is required")
		return
	}
	o := c.get("", "Service", bs.Name)
	if o == nil {
		c.errorf(p+".service.name", "Service %q not found in namespace %s", bs.Name, c.o.Namespace)
	}
	byName, byNumber := bs.Port.Name != "", bs.Port.Number != 0
	if byName == byNumber {
		c.errorf(p+".service.port", "set exactly one of port.name and port.number")
		return
	}
	if o == nil {
		return
	}
	ports := o.Obj.(*corev1.Service).Spec.Ports
	var have []string
	for _, sp := range ports {
		if byName && sp.Name == bs.Port.Name || !byName && sp.Port == bs.Port.Number {
			return
		}
		if byName {
			if sp.Name != "" {
				have = append(have, sp.Name)
			}
		} else {
			have = append(have, strconv.Itoa(int(sp.Port)))
		}
	}
	if byName {
		c.errorf(p+".service.port.name", "Service %q has no port named %q (it has %s)", bs.Name, bs.Port.Name, describeList(have))
	} else {
		c.errorf(p+".service.port.number", "Service %q has no port %d (it has %s)", bs.Name, bs.Port.Number, describeList(have))
	}
}

func describeList(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func (c *checker) networkPolicy(np *networkingv1.NetworkPolicy) {
	s := &np.Spec
	c.selector("spec.podSelector", &s.PodSelector)
	for i, t := range s.PolicyTypes {
		oneOf(c, fmt.Sprintf("spec.policyTypes[%d]", i), t, networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress)
	}
	for i, r := range s.Ingress {
		rp := fmt.Sprintf("spec.ingress[%d]", i)
		c.policyPorts(rp, r.Ports)
		for j, peer := range r.From {
			c.policyPeer(fmt.Sprintf("%s.from[%d]", rp, j), peer)
		}
	}
	for i, r := range s.Egress {
		rp := fmt.Sprintf("spec.egress[%d]", i)
		c.policyPorts(rp, r.Ports)
		for j, peer := range r.To {
			c.policyPeer(fmt.Sprintf("%s.to[%d]", rp, j), peer)
		}
	}
}

func (c *checker) policyPorts(rp string, ports []networkingv1.NetworkPolicyPort) {
	for i, port := range ports {
		pp := fmt.Sprintf("%s.ports[%d]", rp, i)
		if port.Protocol != nil {
			c.protocol(pp+".protocol", *port.Protocol)
		}
		if port.Port == nil {
			if port.EndPort != nil {
				c.errorf(pp+".endPort", "endPort needs a numeric port")
			}
			continue
		}
		if port.Port.Type == intstr.String {
			c.invalid(pp+".port", "port name", port.Port.StrVal, validation.IsValidPortName(port.Port.StrVal))
			if port.EndPort != nil {
				c.errorf(pp+".endPort", "endPort needs a numeric port, not a port name")
			}
			continue
		}
		if c.portNumber(pp+".port", "port", port.Port.IntVal) && port.EndPort != nil &&
			c.portNumber(pp+".endPort", "endPort", *port.EndPort) && *port.EndPort < port.Port.IntVal {
			c.errorf(pp+".endPort", "endPort %d is below port %d", *port.EndPort, port.Port.IntVal)
		}
	}
}

func (c *checker) policyPeer(p string, peer networkingv1.NetworkPolicyPeer) {
	if peer.IPBlock != nil {
		if peer.PodSelector != nil || peer.NamespaceSelector != nil {
			c.errorf(p, "ipBlock cannot be combined with podSelector or namespaceSelector")
		}
		block, err := netip.ParsePrefix(peer.IPBlock.CIDR)
		if err != nil {
			c.errorf(p+".ipBlock.cidr", "invalid CIDR %q", peer.IPBlock.CIDR)
		}
		for i, e := range peer.IPBlock.Except {
			ep := fmt.Sprintf("%s.ipBlock.except[%d]", p, i)
			ex, err := netip.ParsePrefix(e)
			switch {
			case err != nil:
				c.errorf(ep, "invalid CIDR %q", e)
			case block.IsValid() && !(block.Bits() < ex.Bits() && block.Contains(ex.Addr())):
				c.errorf(ep, "%s is not strictly inside the block %s", e, peer.IPBlock.CIDR)
			}
		}
		return
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		c.errorf(p, "a peer needs a podSelector, a namespaceSelector or an ipBlock")
	}
	if peer.PodSelector != nil {
		c.selector(p+".podSelector", peer.PodSelector)
	}
	if peer.NamespaceSelector != nil {
		c.selector(p+".namespaceSelector", peer.NamespaceSelector)
	}
}
