// Package httpapi serves the agent's API (package api) over HTTP+JSON on
// the agent's unix socket: the desired pod set, the machine's Network, observed statuses, node
// info, an event stream, container logs, interactive exec over an upgraded
// connection, image archive imports, and Prometheus metrics. It
// translates errors once, at the wire: every failure carries an
// api.ErrorKind.
package httpapi

import (
	"context"
	"io"
	"time"

	"berth.dev/berth/nodes/api"
)

// Backend is what the API needs of the agent.
type Backend interface {
	// SetPods replaces the desired pod set. It returns an error wrapping
	// ErrInvalid (nothing changed) for a malformed set, ErrConflict for a
	// generation older than the current one.
	SetPods(ctx context.Context, pods api.DesiredPods) error
	// SetNetwork replaces the machine's Network (pod network, routes,
	// Services, policies, DNS, held addresses) and applies it. ErrInvalid
	// for a malformed Network (nothing changed), ErrConflict for an older
	// generation or the same generation with another content; an error
	// applying it leaves it accepted (NodeInfo.Network says why).
	SetNetwork(ctx context.Context, n api.Network) error
	// Network returns the last Network set (the zero Network when none).
	Network(ctx context.Context) (api.Network, error)
	// Pods returns the observed status of every pod, sorted by key.
	Pods(ctx context.Context) ([]api.PodStatus, error)
	// Node describes the machine.
	Node(ctx context.Context) (api.NodeInfo, error)
	// Events returns events recorded since the given time, then (when
	// follow is set) sends new ones on the channel until ctx ends.
	Events(ctx context.Context, since time.Time, follow bool) (<-chan api.Event, error)
	// Logs writes a container's log to w (ErrNotFound for an unknown pod
	// or container, or no previous instance).
	Logs(ctx context.Context, pod string, opts api.LogOptions, w io.Writer) error
	// Exec runs a command in a container and returns its exit code.
	Exec(ctx context.Context, req api.ExecRequest) (int, error)
	// ImportImages imports the images of an OCI (or docker save) archive
	// read from r, bounding its size itself, and returns them. A
	// malformed or oversized archive wraps ErrInvalid.
	ImportImages(ctx context.Context, r io.Reader) ([]api.Image, error)
}
