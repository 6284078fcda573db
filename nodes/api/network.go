package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// Network is everything one machine's agent needs to know of the pod
// network, the Services, the NetworkPolicies and the Ingresses. The
// controller computes it for each machine from git and from the pods every
// machine reports, and sets it as a whole with PUT /v1/network; like
// DesiredPods, setting it is idempotent and an older generation changes
// nothing. The agent keeps the last one it was given across restarts.
//
// Order matters on the controller's side: a pod leaving a Service is taken
// out of every machine's Network before its own machine is told to stop it,
// so it gets no new connection after its SIGTERM.
type Network struct {
	// Services and Pods come first: they are the same for every machine,
	// and most of the encoding, so a controller hashes them once for every
	// machine's Digest. (The order of JSON fields is free on the wire.)

	// Services are all Services of the cluster with their endpoints on
	// every machine (Ready or not; Terminating ones marked).
	Services []Service `json:"services,omitempty"`
	// Pods are the addresses of all pods, for pod DNS names and PTR records.
	Pods []PodAddress `json:"pods,omitempty"`
	// Generation increases with every new Network for this machine.
	Generation int64 `json:"generation"`
	// Machine is the name of the machine this Network is for: endpoints
	// whose Machine equals it are local.
	Machine string `json:"machine"`
	// PodCIDR is this machine's own pod CIDR. Its first address is the
	// bridge's (the pods' gateway, and where the agent serves DNS); pods get
	// the others through CNI. Invalid (zero) means pods get loopback only.
	PodCIDR netip.Prefix `json:"podCIDR"`
	// ClusterCIDRs are the pod network of the whole cluster; traffic from
	// pods to outside them is masqueraded behind the machine's address.
	ClusterCIDRs []netip.Prefix `json:"clusterCIDRs,omitempty"`
	// ServiceCIDRs are where ClusterIPs are allocated from.
	ServiceCIDRs []netip.Prefix `json:"serviceCIDRs,omitempty"`
	// NodeIPs are this machine's addresses: NodePorts answer on them.
	NodeIPs []netip.Addr `json:"nodeIPs,omitempty"`
	// Routes reach the other machines' pod CIDRs through their addresses
	// (host-gw). A machine never has a route to its own PodCIDR here.
	Routes []PodRoute `json:"routes,omitempty"`
	// DNS is the cluster DNS the agent serves to its pods.
	DNS ClusterDNS `json:"dns"`
	// Policies are the NetworkPolicies that select pods on this machine,
	// their selectors resolved to addresses.
	Policies []NetworkPolicy `json:"policies,omitempty"`
	// HeldIPs are LoadBalancer addresses this machine holds: it adds them
	// to its interface towards NodeIPs (so the kernel answers ARP for them),
	// announces them with gratuitous ARP, and removes those it no longer
	// holds.
	HeldIPs []netip.Addr `json:"heldIPs,omitempty"`
	// Ingress is the HTTP(S) routing this machine serves; nil when the
	// machine is not an ingress machine.
	Ingress *Ingress `json:"ingress,omitempty"`
}

// Digest identifies the Network, whatever its generation: the controller
// compares it with NodeInfo.NetworkDigest to know whether the machine
// already has what it would send.
func (n Network) Digest() string {
	n.Generation = 0
	b, err := json.Marshal(n)
	if err != nil {
		return "unencodable: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// PodRoute sends a pod CIDR to the machine that owns it.
type PodRoute struct {
	CIDR    netip.Prefix `json:"cidr"`
	Via     netip.Addr   `json:"via"`
	Machine string       `json:"machine"`
}

// ClusterDNS configures the DNS server the agent runs for its pods on its
// pod gateway address.
type ClusterDNS struct {
	// Domain is the cluster domain ("cluster.local" when empty).
	Domain string `json:"domain,omitempty"`
	// Upstreams to forward other names to ("ip" or "ip:port"); the
	// machine's /etc/resolv.conf when empty.
	Upstreams []string `json:"upstreams,omitempty"`
}

// Service is one Service with its endpoints resolved.
type Service struct {
	Namespace string             `json:"namespace"`
	Name      string             `json:"name"`
	Type      corev1.ServiceType `json:"type,omitempty"`
	// ClusterIPs are the allocated (or explicit) virtual addresses; empty
	// for a headless Service.
	ClusterIPs []netip.Addr `json:"clusterIPs,omitempty"`
	// Headless is clusterIP: None: DNS gives the endpoints' addresses.
	Headless bool `json:"headless,omitempty"`
	// ExternalName is an ExternalName Service's CNAME target.
	ExternalName string `json:"externalName,omitempty"`
	// LoadBalancerIPs are the addresses a LoadBalancer Service was given
	// from the Cluster's pool.
	LoadBalancerIPs []netip.Addr  `json:"loadBalancerIPs,omitempty"`
	Ports           []ServicePort `json:"ports,omitempty"`
	// AffinitySeconds, when non-zero, is sessionAffinity ClientIP with this
	// timeout.
	AffinitySeconds int32 `json:"affinitySeconds,omitempty"`
	// ExternalTrafficLocal is externalTrafficPolicy Local.
	ExternalTrafficLocal bool `json:"externalTrafficLocal,omitempty"`
	// InternalTrafficLocal is internalTrafficPolicy Local.
	InternalTrafficLocal bool `json:"internalTrafficLocal,omitempty"`
	// PublishNotReady is publishNotReadyAddresses: DNS lists endpoints
	// that are not Ready too (routing still uses Ready ones only).
	PublishNotReady bool       `json:"publishNotReady,omitempty"`
	Endpoints       []Endpoint `json:"endpoints,omitempty"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	// Name is "" for a Service's single unnamed port.
	Name     string          `json:"name,omitempty"`
	Protocol corev1.Protocol `json:"protocol,omitempty"` // TCP when empty
	Port     int32           `json:"port"`
	// NodePort is the allocated (or explicit) node port, 0 for none.
	NodePort int32 `json:"nodePort,omitempty"`
}

// Endpoint is one pod backing a Service.
type Endpoint struct {
	IP netip.Addr `json:"ip"`
	// Machine runs the pod.
	Machine string `json:"machine"`
	// Pod is "namespace/name" of the pod.
	Pod string `json:"pod"`
	// Ready pods receive traffic; Terminating ones never do.
	Ready       bool `json:"ready,omitempty"`
	Terminating bool `json:"terminating,omitempty"`
	// Hostname and Subdomain are the pod's spec.hostname and
	// spec.subdomain (a StatefulSet pod's stable DNS name).
	Hostname  string `json:"hostname,omitempty"`
	Subdomain string `json:"subdomain,omitempty"`
	// Ports are the target port numbers on this pod, by Service port name
	// (named target ports resolved against the pod's containers). A Service
	// port missing here does not reach this pod.
	Ports []EndpointPort `json:"ports,omitempty"`
}

// EndpointPort is the number a Service port reaches on one endpoint.
type EndpointPort struct {
	Name     string          `json:"name,omitempty"`
	Protocol corev1.Protocol `json:"protocol,omitempty"`
	Port     int32           `json:"port"`
}

// PodAddress is a pod's addresses, for a-b-c-d.<ns>.pod.<domain> names.
type PodAddress struct {
	Namespace string       `json:"namespace"`
	Name      string       `json:"name"`
	IPs       []netip.Addr `json:"ips"`
}

// NetworkPolicy is one NetworkPolicy with its selectors resolved.
type NetworkPolicy struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Pods are the addresses of the pods on this machine it selects.
	Pods []netip.Addr `json:"pods"`
	// Ingress and Egress are the directions it isolates (policyTypes).
	Ingress bool `json:"ingress,omitempty"`
	Egress  bool `json:"egress,omitempty"`
	// IngressRules allow traffic to Pods; EgressRules traffic from them.
	// No rule in an isolated direction denies all of it.
	IngressRules []PolicyRule `json:"ingressRules,omitempty"`
	EgressRules  []PolicyRule `json:"egressRules,omitempty"`
}

// PolicyRule allows traffic from (ingress) or to (egress) any of Peers on
// any of Ports. No peers means every address, no ports every port.
type PolicyRule struct {
	Peers []PolicyPeer `json:"peers,omitempty"`
	Ports []PolicyPort `json:"ports,omitempty"`
}

// PolicyPeer is either pods chosen by podSelector and/or namespaceSelector
// (IPs, resolved across all machines) or an ipBlock (Block minus Except).
type PolicyPeer struct {
	IPs    []netip.Addr   `json:"ips,omitempty"`
	Block  netip.Prefix   `json:"block,omitzero"`
	Except []netip.Prefix `json:"except,omitempty"`
}

// PolicyPort is a protocol with a port or a port range; Port 0 is every
// port of the protocol. Named ports are resolved to numbers by the
// controller (one PolicyPort per distinct number).
type PolicyPort struct {
	Protocol corev1.Protocol `json:"protocol,omitempty"` // TCP when empty
	Port     int32           `json:"port,omitempty"`
	EndPort  int32           `json:"endPort,omitempty"`
}

// Ingress is the HTTP(S) routing one ingress machine serves: every
// Ingress of the berth class, merged.
type Ingress struct {
	// HTTPPort and HTTPSPort are where the proxy listens on the machine's
	// addresses (80 and 443 when zero).
	HTTPPort  int32         `json:"httpPort,omitempty"`
	HTTPSPort int32         `json:"httpsPort,omitempty"`
	Rules     []IngressRule `json:"rules,omitempty"`
	// DefaultBackend takes requests no rule matches (404 when nil).
	DefaultBackend *IngressBackend `json:"defaultBackend,omitempty"`
	TLS            []IngressTLS    `json:"tls,omitempty"`
}

// IngressRule routes one host ("" for any host; "*.example.com" matches
// one label) by path.
type IngressRule struct {
	// Source is "namespace/name" of the Ingress this rule came from.
	Source string        `json:"source"`
	Host   string        `json:"host,omitempty"`
	Paths  []IngressPath `json:"paths"`
}

// IngressPath is one path of a rule.
type IngressPath struct {
	Path     string         `json:"path"`
	PathType string         `json:"pathType"` // Prefix, Exact or ImplementationSpecific (as Prefix)
	Backend  IngressBackend `json:"backend"`
}

// IngressBackend is a Service port resolved to its ready endpoints.
type IngressBackend struct {
	// Service is "namespace/name:port" (for logs and errors).
	Service   string           `json:"service"`
	Endpoints []netip.AddrPort `json:"endpoints"`
}

// IngressTLS is a certificate for some hosts, from a kubernetes.io/tls
// Secret.
type IngressTLS struct {
	// Source is "namespace/secret".
	Source string    `json:"source"`
	Hosts  []string  `json:"hosts,omitempty"`
	Cert   Sensitive `json:"cert"`
	Key    Sensitive `json:"key"`
}

// NetworkStatus is what the agent reports of the Network it was given
// (in NodeInfo).
type NetworkStatus struct {
	Generation int64  `json:"generation"`
	Digest     string `json:"digest,omitempty"`
	// Error says why the last Network could not be applied in full ("" when
	// it was); the agent keeps what it applied before.
	Error string `json:"error,omitempty"`
}
