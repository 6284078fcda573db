package nft

import (
	"fmt"
	"net/netip"
	"time"
)

// Protocol is a Service port's transport protocol; the values are those of
// Kubernetes (core/v1 Protocol).
type Protocol string

// Protocols.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// ServiceType is how a Service is exposed; the values are those of
// Kubernetes (core/v1 ServiceType). Headless Services have no ClusterIP and
// nothing to route, so they are simply not passed in.
type ServiceType string

// Service types.
const (
	ClusterIP    ServiceType = "ClusterIP"
	NodePort     ServiceType = "NodePort"
	LoadBalancer ServiceType = "LoadBalancer"
)

// Desired is everything this machine's Service routing should do. The
// agent fills it in; Compile and Syncer.Sync only read it.
type Desired struct {
	// NodeIPs are this machine's addresses on which NodePorts answer.
	NodeIPs []netip.Addr
	// ClusterCIDRs is the pod network of the whole cluster: traffic from
	// outside it to a ClusterIP is masqueraded (it may have been routed to
	// us by someone who cannot take the reply directly), and pod traffic to
	// destinations outside it leaves masqueraded.
	ClusterCIDRs []netip.Prefix
	// NodePodCIDRs are this machine's own pod CIDRs: traffic from them to
	// outside ClusterCIDRs is masqueraded behind the machine's address.
	NodePodCIDRs []netip.Prefix
	// ServiceCIDRs, when set, make traffic to unallocated addresses in them
	// dropped rather than routed out.
	ServiceCIDRs []netip.Prefix
	Services     []Service
	// Policies are the NetworkPolicies that select pods on this machine.
	Policies []Policy
}

// Service is one Service with its endpoints already resolved.
type Service struct {
	Namespace, Name string
	Type            ServiceType
	// ClusterIPs are the Service's virtual addresses; only IPv4 ones are
	// programmed.
	ClusterIPs []netip.Addr
	// LoadBalancerIPs are the ingress addresses of a LoadBalancer Service.
	LoadBalancerIPs []netip.Addr
	Ports           []ServicePort
	// AffinityTimeout, when non-zero, is sessionAffinity ClientIP with this
	// timeout (timeoutSeconds).
	AffinityTimeout time.Duration
	// ExternalTrafficLocal is externalTrafficPolicy Local: NodePort and
	// LoadBalancer traffic from outside goes to local endpoints only and
	// keeps its source address.
	ExternalTrafficLocal bool
	// InternalTrafficLocal is internalTrafficPolicy Local: ClusterIP traffic
	// goes to local endpoints only.
	InternalTrafficLocal bool
	Endpoints            []Endpoint
}

// ServicePort is one port of a Service.
type ServicePort struct {
	// Name is the port's name, "" for a Service's single unnamed port;
	// endpoints refer to ports by it.
	Name     string
	Protocol Protocol
	Port     uint16
	// NodePort is the port on the node's addresses, 0 for none.
	NodePort uint16
}

// Endpoint is one pod backing a Service.
type Endpoint struct {
	IP netip.Addr
	// Ports are the endpoint's target ports, resolved to numbers, by
	// ServicePort name. A port missing here has no endpoint on this pod.
	Ports []EndpointPort
	// Ready endpoints receive traffic; others are left out.
	Ready bool
	// Local endpoints run on this machine.
	Local bool
}

// EndpointPort is the number a Service port reaches on one endpoint.
type EndpointPort struct {
	Name string
	Port uint16
}

// port is the target port of the Service port named name, or 0.
func (e *Endpoint) port(name string) uint16 {
	for _, p := range e.Ports {
		if p.Name == name {
			return p.Port
		}
	}
	return 0
}

func (s *Service) key() serviceKey { return serviceKey{s.Namespace, s.Name} }

// serviceKey identifies a Service.
type serviceKey struct{ namespace, name string }

func (k serviceKey) String() string { return k.namespace + "/" + k.name }

// validate checks what Compile relies on.
func (s *Service) validate() error {
	if s.Namespace == "" || s.Name == "" {
		return fmt.Errorf("service %q/%q: namespace and name are required", s.Namespace, s.Name)
	}
	switch s.Type {
	case ClusterIP, NodePort, LoadBalancer:
	case "":
	default:
		return fmt.Errorf("service %s: unknown type %q", s.key(), s.Type)
	}
	seen := map[string]bool{}
	for _, p := range s.Ports {
		switch p.Protocol {
		case TCP, UDP, SCTP:
		default:
			return fmt.Errorf("service %s: port %q: unknown protocol %q", s.key(), p.Name, p.Protocol)
		}
		if p.Port == 0 {
			return fmt.Errorf("service %s: port %q: port is 0", s.key(), p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("service %s: port name %q used twice", s.key(), p.Name)
		}
		seen[p.Name] = true
	}
	if s.AffinityTimeout < 0 {
		return fmt.Errorf("service %s: negative affinity timeout", s.key())
	}
	return nil
}

// equal reports whether two Services compile to the same rules; it is the
// Syncer's test for "unchanged", run on every Service at every Sync, and so
// must be cheap: it reads the Service once, front to back.
func (s *Service) equal(o *Service) bool {
	if s.Namespace != o.Namespace || s.Name != o.Name || s.Type != o.Type ||
		s.AffinityTimeout != o.AffinityTimeout || s.ExternalTrafficLocal != o.ExternalTrafficLocal ||
		s.InternalTrafficLocal != o.InternalTrafficLocal || len(s.Endpoints) != len(o.Endpoints) ||
		!sliceEqual(s.ClusterIPs, o.ClusterIPs) || !sliceEqual(s.LoadBalancerIPs, o.LoadBalancerIPs) ||
		!sliceEqual(s.Ports, o.Ports) {
		return false
	}
	for i := range s.Endpoints {
		a, b := &s.Endpoints[i], &o.Endpoints[i]
		if a.IP != b.IP || a.Ready != b.Ready || a.Local != b.Local || len(a.Ports) != len(b.Ports) {
			return false
		}
		for j := range a.Ports {
			if a.Ports[j] != b.Ports[j] {
				return false
			}
		}
	}
	return true
}

func sliceEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// clone is a deep copy, kept by the Syncer so that the caller may reuse its
// slices. The endpoints' ports share one array, so that comparing with the
// copy reads memory in order.
func (s *Service) clone() Service {
	c := *s
	c.ClusterIPs = append([]netip.Addr(nil), s.ClusterIPs...)
	c.LoadBalancerIPs = append([]netip.Addr(nil), s.LoadBalancerIPs...)
	c.Ports = append([]ServicePort(nil), s.Ports...)
	n := 0
	for i := range s.Endpoints {
		n += len(s.Endpoints[i].Ports)
	}
	ports := make([]EndpointPort, 0, n)
	c.Endpoints = make([]Endpoint, len(s.Endpoints))
	for i, e := range s.Endpoints {
		start := len(ports)
		ports = append(ports, e.Ports...)
		e.Ports = ports[start:len(ports):len(ports)]
		c.Endpoints[i] = e
	}
	return c
}
