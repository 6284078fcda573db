package network

import (
	"errors"
	"net/netip"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
)

// ErrNoDesired is returned when Input.Desired is nil.
var ErrNoDesired = errors.New("no desired state")

// Input is everything one Compute call looks at.
type Input struct {
	// Desired is the rendered (and admitted) repository.
	Desired *render.Desired
	// Machines are what the caller knows of each machine. A machine of the
	// repository without an entry runs no pod that counts and holds no
	// LoadBalancer address; an entry for a machine that left the
	// repository is ignored.
	Machines []Machine
	// Addresses are the addresses of machines whose spec.address is a DNS
	// name, by machine, as the caller resolved them (Compute does no I/O);
	// an IP spec.address is used as it is. A machine without an address
	// gets no route to its pods on the others.
	Addresses map[string][]netip.Addr
	// Memory is what the previous Compute returned (zero on the first run
	// or when lost).
	Memory Memory
}

// Machine is one machine as the controller sees it this pass.
type Machine struct {
	Name string
	// Reachable: its agent answered. Healthy adds that it applied its last
	// Network (NodeInfo.Network.Error is empty); only a healthy machine is
	// given a LoadBalancer address to hold.
	Reachable bool
	Healthy   bool
	// Pods are the pods the machine reports.
	Pods []Pod
}

// Pod is one pod a machine reports.
type Pod struct {
	Status api.PodStatus
	// Spec is the pod as it was resolved for its machine, for its
	// containers' named ports, hostname, subdomain and hostNetwork; nil
	// when not known (named ports then do not resolve on it).
	Spec *api.Pod
	// Stopping: the caller is about to stop the pod (or replace it). Its
	// endpoints are Terminating and never Ready from now on, as if it
	// were terminating already: it gets no new connection.
	Stopping bool
}

// Memory is what Compute keeps between passes: its allocations. It is
// plain JSON and holds no Secret data. It may be lost or stale; what it
// says is kept only where it is still valid.
type Memory struct {
	// PodCIDRs are the machines' pod CIDRs, by machine.
	PodCIDRs map[string]netip.Prefix `json:"podCIDRs,omitempty"`
	// ClusterIPs are the Services' ClusterIPs, by "namespace/name".
	ClusterIPs map[string]netip.Addr `json:"clusterIPs,omitempty"`
	// NodePorts are the Services' node ports, by "namespace/name:port".
	NodePorts map[string]int32 `json:"nodePorts,omitempty"`
	// LoadBalancerIPs are the LoadBalancer Services' addresses, by
	// "namespace/name".
	LoadBalancerIPs map[string]netip.Addr `json:"loadBalancerIPs,omitempty"`
	// Holders are the machines holding them, by "namespace/name".
	Holders map[string]string `json:"holders,omitempty"`
}

// Result is what Compute returns.
type Result struct {
	// Networks has one Network for every machine of the repository, by
	// name, with Generation zero. They share slices: read-only.
	Networks map[string]*api.Network
	// Memory is for the next pass.
	Memory Memory
	// Diagnostics name the object a problem comes from and where it is
	// written: an exhausted pool, a conflicting address, a missing Secret.
	// Errors leave something out (an address, a certificate); warnings do
	// not.
	Diagnostics render.Diagnostics
}
