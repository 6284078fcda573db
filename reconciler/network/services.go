package network

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

// service is one Service on its way to the Networks.
type service struct {
	obj  *render.Object
	svc  *corev1.Service
	key  string // namespace/name
	out  api.Service
	lbIP netip.Addr
}

func (sv *service) external() bool {
	t := sv.svc.Spec.Type
	return t == corev1.ServiceTypeNodePort || t == corev1.ServiceTypeLoadBalancer
}

func (sv *service) wantsClusterIP() bool {
	return sv.svc.Spec.Type != corev1.ServiceTypeExternalName && sv.svc.Spec.ClusterIP != corev1.ClusterIPNone
}

func (s *state) collectServices() {
	for _, o := range s.d.Objects {
		svc, ok := o.Obj.(*corev1.Service)
		if !ok {
			continue
		}
		sp := &svc.Spec
		sv := &service{obj: o, svc: svc, key: o.Namespace + "/" + o.Name}
		sv.out = api.Service{
			Namespace: o.Namespace, Name: o.Name, Type: sp.Type,
			Headless:        sp.ClusterIP == corev1.ClusterIPNone && sp.Type != corev1.ServiceTypeExternalName,
			PublishNotReady: sp.PublishNotReadyAddresses,
		}
		if sp.Type == corev1.ServiceTypeExternalName {
			sv.out.ExternalName = strings.TrimSuffix(sp.ExternalName, ".")
		}
		if sp.SessionAffinity == corev1.ServiceAffinityClientIP {
			sv.out.AffinitySeconds = corev1.DefaultClientIPServiceAffinitySeconds
			if c := sp.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
				sv.out.AffinitySeconds = *c.ClientIP.TimeoutSeconds
			}
		}
		sv.out.ExternalTrafficLocal = sp.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
		sv.out.InternalTrafficLocal = sp.InternalTrafficPolicy != nil && *sp.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
		for _, p := range sp.Ports {
			sv.out.Ports = append(sv.out.Ports, api.ServicePort{Name: p.Name, Protocol: cmp.Or(p.Protocol, corev1.ProtocolTCP), Port: p.Port})
		}
		if len(sp.ExternalIPs) > 0 {
			s.diag(render.SeverityWarning, o, "spec.externalIPs", "externalIPs are not routed by berth: use type LoadBalancer with the Cluster's spec.loadBalancer.pools")
		}
		s.services = append(s.services, sv)
		s.svcByKey[sv.key] = sv
	}
	slices.SortFunc(s.services, func(a, b *service) int { return strings.Compare(a.key, b.key) })
}

// allocateClusterIPs honours spec.clusterIP, then keeps what Memory says,
// then allocates the rest by name.
func (s *state) allocateClusterIPs() {
	const field = "spec.clusterIP"
	rng, ok := serviceRange(s.serviceCIDR)
	if !ok {
		if s.serviceCIDR.IsValid() {
			s.clusterDiag(render.SeverityError, "spec.serviceCIDR", "service CIDR %s is too small to allocate from", s.serviceCIDR)
		}
		return
	}
	pool := newAddrPool([]v1alpha1.AddressRange{rng})
	var rest []*service
	for _, sv := range s.services {
		if !sv.wantsClusterIP() {
			continue
		}
		want := sv.svc.Spec.ClusterIP
		if want == "" {
			rest = append(rest, sv)
			continue
		}
		a, err := netip.ParseAddr(want)
		switch {
		case err != nil:
			s.diag(render.SeverityError, sv.obj, field, "clusterIP %q is not an address: the Service gets none", want)
		case !rng.Contains(a.Unmap()):
			s.diag(render.SeverityError, sv.obj, field, "clusterIP %s is not one the service CIDR %s gives out (%s): the Service gets none", a, s.serviceCIDR, rng)
		case !pool.claim(a.Unmap(), sv.key):
			s.diag(render.SeverityError, sv.obj, field, "clusterIP %s is already used by Service %s: this Service gets none", a, pool.owner(a.Unmap()))
		default:
			sv.out.ClusterIPs = []netip.Addr{a.Unmap()}
		}
	}
	var fresh []*service
	for _, sv := range rest {
		a, had := s.in.Memory.ClusterIPs[sv.key]
		if had && rng.Contains(a) && pool.claim(a, sv.key) {
			sv.out.ClusterIPs = []netip.Addr{a}
			continue
		}
		if had && pool.owner(a) != "" {
			s.diag(render.SeverityWarning, sv.obj, field, "clusterIP %s moves: Service %s now has it", a, pool.owner(a))
		}
		fresh = append(fresh, sv)
	}
	for _, sv := range fresh {
		a, ok := pool.alloc(sv.key)
		if !ok {
			s.diag(render.SeverityError, sv.obj, field, "the service CIDR %s is exhausted: the Service gets no clusterIP", s.serviceCIDR)
			continue
		}
		sv.out.ClusterIPs = []netip.Addr{a}
	}
	for _, sv := range s.services {
		if len(sv.out.ClusterIPs) > 0 {
			s.res.Memory.ClusterIPs[sv.key] = sv.out.ClusterIPs[0]
		}
	}
}

// allocateNodePorts gives every port of NodePort and LoadBalancer Services
// a node port: spec.ports[].nodePort, else Memory's, else a new one. The
// ports of one Service that share a number (TCP and UDP) share it.
func (s *state) allocateNodePorts() {
	pool := &portPool{used: map[int32]string{}}
	type want struct {
		sv  *service
		i   int
		key string
	}
	var rest []want
	byKey := map[string]int32{} // the ports of one number share a node port
	for _, sv := range s.services {
		if !sv.external() {
			continue
		}
		if a := sv.svc.Spec.AllocateLoadBalancerNodePorts; sv.svc.Spec.Type == corev1.ServiceTypeLoadBalancer && a != nil && !*a {
			continue
		}
		for i, p := range sv.svc.Spec.Ports {
			key := sv.key + ":" + strconv.Itoa(int(p.Port))
			if p.NodePort == 0 {
				rest = append(rest, want{sv, i, key})
				continue
			}
			field := "spec.ports[" + strconv.Itoa(i) + "].nodePort"
			switch {
			case p.NodePort < nodePortMin || p.NodePort > nodePortMax:
				s.diag(render.SeverityError, sv.obj, field, "nodePort %d is outside %d-%d: the port gets none", p.NodePort, nodePortMin, nodePortMax)
			case !pool.claim(p.NodePort, key):
				s.diag(render.SeverityError, sv.obj, field, "nodePort %d is already used by %s: the port gets none", p.NodePort, pool.used[p.NodePort])
			default:
				sv.out.Ports[i].NodePort = p.NodePort
				if _, ok := byKey[key]; !ok {
					byKey[key] = p.NodePort
				}
			}
		}
	}
	var fresh []want
	for _, w := range rest {
		if n, ok := byKey[w.key]; ok {
			w.sv.out.Ports[w.i].NodePort = n
			continue
		}
		n, had := s.in.Memory.NodePorts[w.key]
		if had && n >= nodePortMin && n <= nodePortMax && pool.claim(n, w.key) {
			w.sv.out.Ports[w.i].NodePort, byKey[w.key] = n, n
			continue
		}
		fresh = append(fresh, w)
	}
	for _, w := range fresh {
		if n, ok := byKey[w.key]; ok {
			w.sv.out.Ports[w.i].NodePort = n
			continue
		}
		n, ok := pool.alloc(w.key)
		if !ok {
			s.diag(render.SeverityError, w.sv.obj, "spec.ports["+strconv.Itoa(w.i)+"]", "no node port is left in %d-%d: the port gets none", nodePortMin, nodePortMax)
			continue
		}
		w.sv.out.Ports[w.i].NodePort, byKey[w.key] = n, n
	}
	for _, sv := range s.services {
		for i, p := range sv.out.Ports {
			if p.NodePort != 0 {
				s.res.Memory.NodePorts[sv.key+":"+strconv.Itoa(int(sv.svc.Spec.Ports[i].Port))] = p.NodePort
			}
		}
	}
}

// allocateLoadBalancerIPs gives every LoadBalancer Service an address of
// the Cluster's pools: spec.loadBalancerIP when it is in one, else
// Memory's, else a new one.
func (s *state) allocateLoadBalancerIPs() {
	var ranges []v1alpha1.AddressRange
	for _, p := range s.cluster.Spec.LoadBalancer.Pools {
		r, err := v1alpha1.ParseAddressRange(p)
		switch {
		case err != nil:
			s.clusterDiag(render.SeverityError, "spec.loadBalancer.pools", "pool %q is not used: %v", p, err)
		case s.serviceCIDR.IsValid() && r.First.Is4() != s.serviceCIDR.Addr().Is4():
			s.clusterDiag(render.SeverityError, "spec.loadBalancer.pools", "pool %s is not used: it is not of the service CIDR's address family", p)
		default:
			ranges = append(ranges, r)
		}
	}
	pool := newAddrPool(ranges)
	var rest []*service
	for _, sv := range s.services {
		if sv.svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		if len(ranges) == 0 {
			s.diag(render.SeverityWarning, sv.obj, "spec.type", "the Cluster has no spec.loadBalancer.pools: the Service gets no LoadBalancer address (its node ports still answer)")
			continue
		}
		want := sv.svc.Spec.LoadBalancerIP
		if want == "" {
			rest = append(rest, sv)
			continue
		}
		const field = "spec.loadBalancerIP"
		a, err := netip.ParseAddr(want)
		switch {
		case err != nil:
			s.diag(render.SeverityError, sv.obj, field, "loadBalancerIP %q is not an address: one is allocated from the pools", want)
			rest = append(rest, sv)
		case !pool.contains(a.Unmap()):
			s.diag(render.SeverityError, sv.obj, field, "loadBalancerIP %s is in none of the Cluster's spec.loadBalancer.pools: one is allocated from them", a)
			rest = append(rest, sv)
		case !pool.claim(a.Unmap(), sv.key):
			s.diag(render.SeverityError, sv.obj, field, "loadBalancerIP %s is already used by Service %s: this Service gets none", a, pool.owner(a.Unmap()))
		default:
			sv.lbIP = a.Unmap()
		}
	}
	var fresh []*service
	for _, sv := range rest {
		a, had := s.in.Memory.LoadBalancerIPs[sv.key]
		if had && pool.contains(a) && pool.claim(a, sv.key) {
			sv.lbIP = a
			continue
		}
		if had && pool.owner(a) != "" {
			s.diag(render.SeverityWarning, sv.obj, "spec.type", "LoadBalancer address %s moves: Service %s now has it", a, pool.owner(a))
		}
		fresh = append(fresh, sv)
	}
	for _, sv := range fresh {
		a, ok := pool.alloc(sv.key)
		if !ok {
			s.diag(render.SeverityError, sv.obj, "spec.type", "the Cluster's spec.loadBalancer.pools are exhausted: the Service gets no LoadBalancer address")
			continue
		}
		sv.lbIP = a
	}
	for _, sv := range s.services {
		if sv.lbIP.IsValid() {
			sv.out.LoadBalancerIPs = []netip.Addr{sv.lbIP}
			s.res.Memory.LoadBalancerIPs[sv.key] = sv.lbIP
		}
	}
}

// endpoints gives every Service with a selector the pods it selects.
// Services without one have none: berth has no Endpoints objects.
func (s *state) endpoints() {
	for _, sv := range s.services {
		sp := &sv.svc.Spec
		if sp.Type == corev1.ServiceTypeExternalName || len(sp.Selector) == 0 {
			continue
		}
		pods := s.selectPods(sv.obj.Namespace, sp.Selector)
		if len(pods) == 0 {
			continue
		}
		eps := make([]api.Endpoint, 0, len(pods))
		ports := make([]api.EndpointPort, 0, len(pods)*len(sp.Ports)) // backs the endpoints' ports
		for _, p := range pods {
			ep := api.Endpoint{
				IP: p.ip, Machine: p.machine, Pod: p.key,
				Ready: p.ready, Terminating: p.terminating,
			}
			if p.spec != nil {
				ep.Hostname, ep.Subdomain = p.spec.Spec.Hostname, p.spec.Spec.Subdomain
			}
			start := len(ports)
			for _, port := range sp.Ports {
				if n, ok := targetPort(p, port); ok {
					ports = append(ports, api.EndpointPort{Name: port.Name, Protocol: cmp.Or(port.Protocol, corev1.ProtocolTCP), Port: n})
				}
			}
			if len(ports) > start {
				ep.Ports = ports[start:len(ports):len(ports)]
			}
			eps = append(eps, ep)
		}
		slices.SortFunc(eps, func(a, b api.Endpoint) int {
			return cmp.Or(a.IP.Compare(b.IP), strings.Compare(a.Pod, b.Pod), strings.Compare(a.Machine, b.Machine))
		})
		sv.out.Endpoints = eps
	}
}

// targetPort is the number a Service port reaches on pod p: its
// targetPort, or the container port of that name and protocol.
func targetPort(p *podInfo, sp corev1.ServicePort) (int32, bool) {
	if sp.TargetPort.Type == intstr.Int {
		return cmp.Or(sp.TargetPort.IntVal, sp.Port), true
	}
	if sp.TargetPort.StrVal == "" {
		return sp.Port, true
	}
	return namedPort(p, sp.TargetPort.StrVal, cmp.Or(sp.Protocol, corev1.ProtocolTCP))
}

// namedPort finds a container port of pod p by name and protocol.
func namedPort(p *podInfo, name string, proto corev1.Protocol) (int32, bool) {
	if p.spec == nil {
		return 0, false
	}
	for _, c := range p.spec.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name && cmp.Or(cp.Protocol, corev1.ProtocolTCP) == proto {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}
