// Package v1alpha1 holds berth's own API kinds, group berth.dev, version
// v1alpha1: Machine (a bare-metal host of the fleet) and Cluster (settings
// that apply to the whole fleet). They are decoded by render with the same
// strictness and positions as the upstream Kubernetes kinds.
package v1alpha1

import (
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
