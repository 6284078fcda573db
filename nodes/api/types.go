// Package api is the wire contract between the controller and the node
// agent: HTTP+JSON under /v1 on the agent's unix socket, reached through
// SSH. Pods arrive resolved (images, commands, env values and file
// contents filled in by the reconciler), so the agent never needs the
// repository. Container-level fields reuse the upstream corev1 types so
// that probes, lifecycle hooks, resources and security contexts mean what
// they mean in Kubernetes.
package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Version of this API; the agent and controller agree on it at bootstrap.
const Version = "v1"

// Labels and annotations the agent sets on what it creates, so it removes
// only its own.
const (
	LabelManaged   = "berth.dev/managed"   // "true"
	LabelPodUID    = "berth.dev/pod-uid"   // Pod.UID
	LabelPodName   = "berth.dev/pod"       // namespace/name
	LabelContainer = "berth.dev/container" // container name
	LabelAttempt   = "berth.dev/attempt"   // restart count of the instance
	LabelPodHash   = "berth.dev/pod-hash"  // Pod.Hash
)

// DesiredPods is the whole set of pods a machine should run. Setting it is
// idempotent: the same set (or an older generation) changes nothing.
type DesiredPods struct {
	// Generation increases with every new desired set; the agent ignores a
	// set older than the one it has.
	Generation int64 `json:"generation"`
	Pods       []Pod `json:"pods"`
}

// Digest identifies the pod set, whatever its generation and order: a
// controller compares it with NodeInfo.DesiredDigest to know whether the
// machine already has the set it would send.
func (d DesiredPods) Digest() string {
	pods := append([]Pod{}, d.Pods...) // nil and empty alike
	slices.SortFunc(pods, func(a, b Pod) int { return strings.Compare(a.Key(), b.Key()) })
	b, err := json.Marshal(pods)
	if err != nil {
		// Only a type that cannot be encoded gets here; no two sets then
		// compare equal.
		return "unencodable: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Pod is one pod, resolved for this machine.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// UID is unique per pod incarnation; a new UID under the same name is a
	// new pod (the old one is stopped first).
	UID string `json:"uid"`
	// Hash identifies the pod's spec; the agent replaces a pod whose hash
	// changed (a changed Files volume alone is updated in place).
	Hash        string            `json:"hash"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Spec        PodSpec           `json:"spec"`
}

// Key is "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// PodSpec is the node-level part of a Kubernetes PodSpec. Containers'
// Env hold only literal values (valueFrom resolved) and EnvFrom is empty;
// VolumeMounts refer to Volumes by name.
type PodSpec struct {
	InitContainers []corev1.Container `json:"initContainers,omitempty"`
	Containers     []corev1.Container `json:"containers"`
	Volumes        []Volume           `json:"volumes,omitempty"`
	// RestartPolicy is Always, OnFailure or Never.
	RestartPolicy                 corev1.RestartPolicy       `json:"restartPolicy"`
	TerminationGracePeriodSeconds *int64                     `json:"terminationGracePeriodSeconds,omitempty"`
	ActiveDeadlineSeconds         *int64                     `json:"activeDeadlineSeconds,omitempty"`
	SecurityContext               *corev1.PodSecurityContext `json:"securityContext,omitempty"`
	Hostname                      string                     `json:"hostname,omitempty"`
	Subdomain                     string                     `json:"subdomain,omitempty"`
	HostNetwork                   bool                       `json:"hostNetwork,omitempty"`
	// DNSPolicy is the pod's spec.dnsPolicy (ClusterFirst when empty).
	DNSPolicy corev1.DNSPolicy     `json:"dnsPolicy,omitempty"`
	DNSConfig *corev1.PodDNSConfig `json:"dnsConfig,omitempty"`
	// ImagePullSecrets are docker config JSON documents
	// (.dockerconfigjson), resolved from the pod's imagePullSecrets.
	ImagePullSecrets []Sensitive `json:"imagePullSecrets,omitempty"`
}

// Volume is a pod volume the agent can provide on its own.
type Volume struct {
	Name     string                       `json:"name"`
	EmptyDir *corev1.EmptyDirVolumeSource `json:"emptyDir,omitempty"`
	HostPath *corev1.HostPathVolumeSource `json:"hostPath,omitempty"`
	Files    *FilesVolume                 `json:"files,omitempty"`
}

// FilesVolume is a configMap, secret or projected volume with its content
// resolved. A change of content is applied in place, atomically (the
// kubelet's ..data symlink swap).
type FilesVolume struct {
	// Secret files are written 0400 (unless Mode says otherwise) on tmpfs
	// where possible, and their content never appears in logs or status.
	Secret bool   `json:"secret,omitempty"`
	Files  []File `json:"files"`
}

// File is one file of a FilesVolume.
type File struct {
	// Path is relative to the volume's root, slash-separated, without "..".
	Path    string `json:"path"`
	Content []byte `json:"content"`
	// Mode is the file's permission bits; 0 means 0644 (0400 for secrets).
	Mode int32 `json:"mode,omitempty"`
}

// Sensitive is a secret value on the wire. It prints as [redacted] in logs
// and fmt output; only the JSON encoding carries the value.
type Sensitive []byte

// String hides the value.
func (Sensitive) String() string { return "[redacted]" }

// GoString hides the value from %#v.
func (Sensitive) GoString() string { return "[redacted]" }

// LogValue hides the value from log/slog, which would otherwise print a
// byte slice as text.
func (Sensitive) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// PodPhase is the pod's phase, as in Kubernetes.
type PodPhase = corev1.PodPhase

// PodStatus is what the agent observes of one pod.
type PodStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	Hash      string `json:"hash"`
	// Labels are the pod's labels, as it was given them (selectors over
	// what runs: berth get pods -l, Service endpoints).
	Labels map[string]string `json:"labels,omitempty"`
	Phase  PodPhase          `json:"phase"`
	// Ready: every app container is ready (readiness probes pass).
	Ready bool `json:"ready"`
	// Terminating: the pod is being stopped (it is no longer desired, or
	// is being replaced); endpoints must drop it.
	Terminating bool   `json:"terminating,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Message     string `json:"message,omitempty"`
	// PodIP is the pod's address in the pod network ("" while it has none).
	PodIP                 string            `json:"podIP,omitempty"`
	StartedAt             time.Time         `json:"startedAt,omitzero"`
	InitContainerStatuses []ContainerStatus `json:"initContainerStatuses,omitempty"`
	ContainerStatuses     []ContainerStatus `json:"containerStatuses"`
}

// ContainerStatus is what the agent observes of one container.
type ContainerStatus struct {
	Name         string `json:"name"`
	Image        string `json:"image"`
	ImageID      string `json:"imageID,omitempty"`
	ContainerID  string `json:"containerID,omitempty"`
	Ready        bool   `json:"ready"`
	Started      bool   `json:"started"`
	RestartCount int32  `json:"restartCount"`
	// State is the current state; LastState the previous instance's end.
	State     corev1.ContainerState `json:"state"`
	LastState corev1.ContainerState `json:"lastState,omitzero"`
}

// NodeInfo describes the machine.
type NodeInfo struct {
	Name              string `json:"name"`
	AgentVersion      string `json:"agentVersion"`
	APIVersion        string `json:"apiVersion"`
	ContainerdVersion string `json:"containerdVersion"`
	// RuntimeError says why containerd did not answer ("" when it did);
	// ContainerdVersion is then the version last seen.
	RuntimeError  string              `json:"runtimeError,omitempty"`
	RuncVersion   string              `json:"runcVersion,omitempty"`
	KernelVersion string              `json:"kernelVersion"`
	OS            string              `json:"os"`
	Arch          string              `json:"arch"`
	BootID        string              `json:"bootID"`
	StartedAt     time.Time           `json:"startedAt"`
	Capacity      corev1.ResourceList `json:"capacity"`
	Allocatable   corev1.ResourceList `json:"allocatable"`
	// Usage is what the agent's pods use now (cgroup figures).
	Usage      corev1.ResourceList `json:"usage"`
	Generation int64               `json:"generation"`
	// DesiredDigest is DesiredPods.Digest of the set the agent has.
	DesiredDigest string `json:"desiredDigest,omitempty"`
	Pods          int    `json:"pods"`
	// Network is the state of the last Network the agent was given.
	Network NetworkStatus `json:"network"`
}

// Event is something that happened to a pod or the machine, as kubelet
// events are (Pulling, Pulled, Created, Started, Killing, BackOff,
// Unhealthy, Failed, ...).
type Event struct {
	Time      time.Time `json:"time"`
	Type      string    `json:"type"` // Normal or Warning
	Reason    string    `json:"reason"`
	Pod       string    `json:"pod,omitempty"` // namespace/name
	Container string    `json:"container,omitempty"`
	Message   string    `json:"message"`
}

// Event types.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// ErrorKind classifies an API error; the client turns it back into a
// sentinel error (see package agentclient).
type ErrorKind string

// Error kinds.
const (
	KindInvalid     ErrorKind = "Invalid"     // 400: the request is malformed; nothing changed
	KindNotFound    ErrorKind = "NotFound"    // 404: no such pod or container
	KindConflict    ErrorKind = "Conflict"    // 409: e.g. an older generation
	KindUnavailable ErrorKind = "Unavailable" // 503: containerd unreachable; retry
	KindInternal    ErrorKind = "Internal"    // 500
)

// Error is the body of every non-2xx answer.
type Error struct {
	Kind    ErrorKind `json:"kind"`
	Message string    `json:"message"`
}

// Image is an image present on the machine, as an import reports it.
type Image struct {
	// Ref is the image's full name ("docker.io/berth/echo:2").
	Ref string `json:"ref"`
	// ID is the content digest of the image config ("sha256:…"), as
	// container statuses report it in imageID.
	ID string `json:"id"`
}
