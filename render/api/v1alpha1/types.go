// Package v1alpha1 holds berth's own API kinds, group berth.dev, version
// v1alpha1: Machine (a bare-metal host of the fleet) and Cluster (settings
// that apply to the whole fleet). They are decoded by render with the same
// strictness and positions as the upstream Kubernetes kinds.
package v1alpha1

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Group and Version of berth's own kinds.
const (
	Group      = "berth.dev"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
)

// Defaults applied to a Cluster that leaves them out.
const (
	DefaultPodCIDR       = "10.244.0.0/16"
	DefaultServiceCIDR   = "10.96.0.0/12"
	DefaultClusterDomain = "cluster.local"
	DefaultStatusBranch  = "berth/status"
	DefaultSSHUser       = "root"
	DefaultSSHPort       = 22
	DefaultStateDir      = "/var/lib/berth"
	DefaultSocket        = "/run/berth/agent.sock"
	DefaultLogDir        = "/var/log/berth/pods"
	DefaultContainerd    = "/run/containerd/containerd.sock"
	DefaultNamespace     = "berth"
	DefaultBinaryPath    = "/usr/local/bin/berth"
)

// Machine is one bare-metal host. Its metadata.labels play the part of a
// Kubernetes Node's labels (nodeSelector, affinity, topology spread).
type Machine struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              MachineSpec `json:"spec"`
}

// MachineSpec says how to reach a machine and what it offers.
type MachineSpec struct {
	// Address is the IP address or DNS name the controller dials over SSH,
	// and the address other machines route pod traffic through.
	Address string `json:"address"`
	// SSH settings; the controller's private key is never stored in git.
	SSH SSHSpec `json:"ssh,omitempty"`
	// Taints repel pods that do not tolerate them, as on a Kubernetes Node.
	Taints []corev1.Taint `json:"taints,omitempty"`
	// PodCIDR is the range this machine's pods take addresses from. When
	// empty, one is allocated from the Cluster pod CIDR.
	PodCIDR string `json:"podCIDR,omitempty"`
	// Agent settings: where the agent keeps its files and finds containerd.
	Agent AgentSpec `json:"agent,omitempty"`
	// Unschedulable keeps new pods off the machine (cordon).
	Unschedulable bool `json:"unschedulable,omitempty"`
}

// SSHSpec is how the controller reaches a machine.
type SSHSpec struct {
	User string `json:"user,omitempty"`
	Port int32  `json:"port,omitempty"`
	// HostKey pins the machine's SSH host key, in authorized_keys format
	// ("ssh-ed25519 AAAA..."). When empty, --known-hosts decides.
	HostKey string `json:"hostKey,omitempty"`
}

// AgentSpec configures berth's node agent on a machine.
type AgentSpec struct {
	StateDir          string `json:"stateDir,omitempty"`
	Socket            string `json:"socket,omitempty"`
	LogDir            string `json:"logDir,omitempty"`
	ContainerdAddress string `json:"containerdAddress,omitempty"`
	// Namespace is the containerd namespace the agent's containers live
	// in; machines that share a kernel (the lab) need one each.
	Namespace string `json:"namespace,omitempty"`
	// BinaryPath is where the berth binary is installed on the machine.
	BinaryPath string `json:"binaryPath,omitempty"`
}

// Cluster holds the settings of the whole fleet. A repository has at most
// one; without one, every default applies.
type Cluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ClusterSpec `json:"spec"`
}

// ClusterSpec is the fleet's configuration.
type ClusterSpec struct {
	PodCIDR       string `json:"podCIDR,omitempty"`
	ServiceCIDR   string `json:"serviceCIDR,omitempty"`
	ClusterDomain string `json:"clusterDomain,omitempty"`
	// StatusBranch receives status commits; it must differ from the
	// watched branch.
	StatusBranch string `json:"statusBranch,omitempty"`
	// IgnoreKinds are skipped with a note instead of failing as unknown
	// (for example monitoring.coreos.com/v1 ServiceMonitor).
	IgnoreKinds []KindRef  `json:"ignoreKinds,omitempty"`
	Policy      PolicySpec `json:"policy,omitempty"`
	Registries  []Registry `json:"registries,omitempty"`
	// PodCIDRMaskSize is the prefix length of the pod CIDR a machine
	// without spec.podCIDR is given from PodCIDR (DefaultPodCIDRMaskSize
	// when zero, or PodCIDR itself when that is narrower).
	PodCIDRMaskSize int32 `json:"podCIDRMaskSize,omitempty"`
	// DNS configures the cluster DNS every agent serves its pods.
	DNS DNSSpec `json:"dns,omitempty"`
	// LoadBalancer configures the addresses of LoadBalancer Services.
	LoadBalancer LoadBalancerSpec `json:"loadBalancer,omitempty"`
	// Ingress chooses the machines that serve Ingresses, and which.
	Ingress IngressSpec `json:"ingress,omitempty"`
}

// DefaultPodCIDRMaskSize is the size of each machine's share of the
// Cluster's pod CIDR, as in kube-controller-manager (--node-cidr-mask-size).
const DefaultPodCIDRMaskSize = 24

// DefaultIngressClass is the IngressClass berth serves when the Cluster
// names none.
const DefaultIngressClass = "berth"

// DNSSpec configures the cluster DNS.
type DNSSpec struct {
	// Upstreams are where names outside the cluster domain are forwarded
	// ("ip" or "ip:port"); each machine's /etc/resolv.conf when empty.
	Upstreams []string `json:"upstreams,omitempty"`
}

// LoadBalancerSpec gives LoadBalancer Services their addresses. One
// healthy machine holds each address: it answers ARP for it (so the
// machines and clients must share a layer-2 network), and another takes
// the address over when it fails.
type LoadBalancerSpec struct {
	// Pools are the address ranges to allocate from: CIDRs
	// ("198.18.0.240/28": without its network and broadcast addresses) or
	// inclusive ranges ("198.18.0.240-198.18.0.250").
	Pools []string `json:"pools,omitempty"`
	// MachineSelector chooses the machines that may hold an address; every
	// machine when nil.
	MachineSelector *metav1.LabelSelector `json:"machineSelector,omitempty"`
}

// IngressSpec chooses the ingress machines: each serves every Ingress of
// the class, merged, on its own addresses.
type IngressSpec struct {
	// MachineSelector chooses the ingress machines; when nil no machine
	// serves Ingresses, and {} chooses every machine.
	MachineSelector *metav1.LabelSelector `json:"machineSelector,omitempty"`
	// ClassName is the IngressClass served (DefaultIngressClass when
	// empty): spec.ingressClassName or the kubernetes.io/ingress.class
	// annotation.
	ClassName string `json:"className,omitempty"`
	// Default serves Ingresses that name no class too, as a default
	// IngressClass does.
	Default bool `json:"default,omitempty"`
	// HTTPPort and HTTPSPort are where the ingress machines listen (80 and
	// 443 when zero).
	HTTPPort  int32 `json:"httpPort,omitempty"`
	HTTPSPort int32 `json:"httpsPort,omitempty"`
}

// KindRef names a kind by apiVersion and kind. Kind "*" matches every kind
// of that apiVersion.
type KindRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// Action is what a policy rule does when it matches: off, warn or deny.
type Action string

// Policy actions.
const (
	ActionOff  Action = "off"
	ActionWarn Action = "warn"
	ActionDeny Action = "deny"
)

// PolicySpec configures admission.
type PolicySpec struct {
	// Checklist sets the action of each production checklist rule, by
	// name (replicas, resources, probes, runAsNonRoot,
	// readOnlyRootFilesystem, allowPrivilegeEscalation, dropAllCapabilities,
	// imageDigest, serviceAccount). Rules not named warn.
	Checklist map[string]Action `json:"checklist,omitempty"`
}

// Registry configures how machines pull from one registry host.
type Registry struct {
	// Host is "host[:port]" as it appears in image references.
	Host string `json:"host"`
	// PlainHTTP talks HTTP instead of HTTPS to this host.
	PlainHTTP bool `json:"plainHTTP,omitempty"`
	// Mirrors are tried in order before Host.
	Mirrors []string `json:"mirrors,omitempty"`
	// CAFile is a PEM bundle on the machine that signs the host's
	// certificate.
	CAFile string `json:"caFile,omitempty"`
}

// AddressRange is an inclusive range of addresses of one family.
type AddressRange struct {
	First, Last netip.Addr
}

// ParseAddressRange parses a LoadBalancer pool: a CIDR (without its
// network and, for IPv4, broadcast addresses, unless it is a /31, /32,
// /127 or /128) or "first-last".
func ParseAddressRange(s string) (AddressRange, error) {
	if first, last, ok := strings.Cut(s, "-"); ok {
		f, err := netip.ParseAddr(strings.TrimSpace(first))
		if err != nil {
			return AddressRange{}, fmt.Errorf("range %q: %w", s, err)
		}
		l, err := netip.ParseAddr(strings.TrimSpace(last))
		if err != nil {
			return AddressRange{}, fmt.Errorf("range %q: %w", s, err)
		}
		if f.Is4() != l.Is4() || f.Zone() != "" || l.Zone() != "" {
			return AddressRange{}, fmt.Errorf("range %q mixes address families", s)
		}
		if l.Less(f) {
			return AddressRange{}, fmt.Errorf("range %q ends before it starts", s)
		}
		return AddressRange{f.Unmap(), l.Unmap()}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return AddressRange{}, fmt.Errorf("want a CIDR or first-last: %w", err)
	}
	if p != p.Masked() {
		return AddressRange{}, fmt.Errorf("%s has host bits set: the range is %s", s, p.Masked())
	}
	first, last := p.Addr(), lastAddr(p)
	if p.Addr().BitLen()-p.Bits() >= 2 {
		first = first.Next()
		if p.Addr().Is4() {
			last = last.Prev()
		}
	}
	return AddressRange{first, last}, nil
}

// Contains reports whether a is in the range.
func (r AddressRange) Contains(a netip.Addr) bool {
	return a.IsValid() && a.BitLen() == r.First.BitLen() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Overlaps reports whether the ranges share an address.
func (r AddressRange) Overlaps(o AddressRange) bool {
	return r.First.BitLen() == o.First.BitLen() && r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

func (r AddressRange) String() string { return r.First.String() + "-" + r.Last.String() }

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// RangeOf is every address of p, network and broadcast included.
func RangeOf(p netip.Prefix) AddressRange {
	p = p.Masked()
	return AddressRange{p.Addr(), lastAddr(p)}
}
