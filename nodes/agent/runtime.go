package agent

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

// Runtime is what the pod manager needs of a container runtime, in the
// spirit of the kubelet's CRI: sandboxes (a pod's network namespace and
// shared state) and containers, each call idempotent where it can be.
// nodes/runtime implements it on containerd; unit tests of pure logic use
// a fake, and one shared suite runs against both.
type Runtime interface {
	// Version names the runtime and its version ("containerd 1.6.20").
	Version(ctx context.Context) (string, error)

	// EnsureImage makes ref present according to policy (Always pulls,
	// IfNotPresent pulls when missing, Never fails when missing). auth
	// holds docker config JSON documents. A pull failure wraps
	// ErrImagePull with the registry's message; Never with a missing image
	// wraps ErrImageNeverPull.
	EnsureImage(ctx context.Context, ref string, policy corev1.PullPolicy, auth []api.Sensitive) (Image, error)
	// ImportArchive imports and unpacks the images of the OCI (or docker
	// save) archive at path, for machines with no registry, and returns
	// them by their full names. An unreachable runtime wraps
	// api.ErrUnavailable.
	ImportArchive(ctx context.Context, path string) ([]Image, error)

	// CreateSandbox makes the pod's network namespace (bind-mounted, as
	// containerd's CRI plugin does) and per-pod directories. Calling it
	// for a pod that has one returns the existing sandbox.
	CreateSandbox(ctx context.Context, pod *api.Pod) (Sandbox, error)
	// RemoveSandbox removes what CreateSandbox made; a missing sandbox is
	// not an error.
	RemoveSandbox(ctx context.Context, podUID string) error
	// ListSandboxes returns the sandboxes this agent made (for adoption
	// after a restart, and for garbage collection).
	ListSandboxes(ctx context.Context) ([]Sandbox, error)

	// CreateContainer creates (does not start) one container instance.
	CreateContainer(ctx context.Context, cfg ContainerConfig) (id string, err error)
	// StartContainer starts a created container.
	StartContainer(ctx context.Context, id string) error
	// StopContainer sends SIGTERM, waits up to grace, then SIGKILL, and
	// returns when the process is gone. A stopped or missing container is
	// not an error.
	StopContainer(ctx context.Context, id string, grace time.Duration) error
	// RemoveContainer deletes a stopped container; missing is not an error.
	RemoveContainer(ctx context.Context, id string) error
	// ContainerStatus reports one container (ErrNotFound when unknown).
	ContainerStatus(ctx context.Context, id string) (ContainerState, error)
	// ListContainers returns every container this agent made, with the
	// labels (api.Label*) that tie it to its pod.
	ListContainers(ctx context.Context) ([]ContainerState, error)
	// Exec runs a command in a running container.
	Exec(ctx context.Context, id string, req api.ExecRequest) (exitCode int, err error)
}

// Image is a present image.
type Image struct {
	Ref string // as asked for
	ID  string // content digest of the image config
	// User is the image config's user ("", "1000", "nobody:nogroup"),
	// for runAsNonRoot checks.
	User string
}

// Sandbox is a pod's shared environment.
type Sandbox struct {
	PodUID string
	Pod    string // namespace/name
	// NetNS is the path of the bind-mounted network namespace ("" with
	// hostNetwork).
	NetNS string
	// Dir is the pod's directory on the machine (volumes live under it).
	Dir string
	// PodIPs are the pod's addresses on the pod network (none while it
	// has loopback only).
	PodIPs []string
}

// ContainerConfig is everything needed to create one container instance.
type ContainerConfig struct {
	Pod       *api.Pod
	Sandbox   Sandbox
	Container *corev1.Container
	Image     Image
	// Attempt counts the container's instances in this pod, from 0.
	Attempt int32
	// Mounts maps volume names to host paths (emptyDir, hostPath and files
	// volumes prepared by the manager).
	Mounts map[string]string
	// LogPath is the file the container's output goes to, in the CRI log
	// format.
	LogPath string
}

// ContainerState is a container as the runtime sees it.
type ContainerState struct {
	ID     string
	Labels map[string]string
	Image  string
	// ImageID is the content digest the container was created from.
	ImageID string
	State   State
	// Pid of the task while running.
	Pid        uint32
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
	ExitCode   int32
	// Reason is why it exited: Completed, Error, OOMKilled.
	Reason string
}

// State of a container.
type State string

// Container states.
const (
	StateCreated State = "created"
	StateRunning State = "running"
	StateExited  State = "exited"
	StateUnknown State = "unknown"
)
