// Package runtime implements the node agent's container runtime
// (agent.Runtime) on containerd: images pulled through the machine's
// registry configuration, pod sandboxes (a bind-mounted network namespace,
// attached to the machine's pod network through CNI once one is set,
// shared IPC and UTS namespaces, the pod's directory and /etc files),
// containers built from Kubernetes container specs, their logs (through the
// berth binary as containerd's log driver), exec, and their statuses.
//
// Everything it creates lives in its own containerd namespace, carries the
// api.LabelManaged label, and is named from an agent identity derived from
// the namespace and state directory, so that several agents on one kernel
// (the lab) never collide on container ids, cgroups or namespace mounts,
// and each lists and removes only its own. It keeps no state in memory:
// what it made is found again in containerd and under the state directory,
// so a new Runtime adopts what an earlier one left running.
package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/logs"
	"berth.dev/berth/render/api/v1alpha1"
)

// DefaultNamespace is the containerd namespace of the agent's containers.
const DefaultNamespace = "berth"

// snapshotter unpacks images and makes containers' root filesystems.
const snapshotter = "overlayfs"

// Options configure a Runtime.
type Options struct {
	// Address of containerd's socket. Required.
	Address string
	// Namespace is the containerd namespace (default "berth"); one per
	// agent when several share a containerd.
	Namespace string
	// StateDir holds the agent's files (network namespaces, sandbox
	// records, pod directories). Required, absolute.
	StateDir string
	// Registries configure pulls per registry host (plain HTTP, mirrors,
	// CA files), from the Cluster document.
	Registries []v1alpha1.Registry
	// LoggerPath is the berth binary that containerd's shim runs as every
	// container's log driver (logs.DriverCommand). Default: this process's
	// executable.
	LoggerPath string
	// LogMaxSize and LogMaxFiles cap each container's log (defaults
	// logs.DefaultMaxSize and logs.DefaultMaxFiles).
	LogMaxSize  int64
	LogMaxFiles int
	// Logger receives the runtime's logs (default: discarded).
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.LoggerPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("runtime options: LoggerPath: %w", err)
		}
		o.LoggerPath = exe
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Validate checks the options.
func (o *Options) Validate() error {
	switch {
	case o.Address == "":
		return errors.New("runtime options: Address is required")
	case !filepath.IsAbs(o.StateDir):
		return fmt.Errorf("runtime options: StateDir %q is not an absolute path", o.StateDir)
	case o.LoggerPath != "" && !filepath.IsAbs(o.LoggerPath):
		return fmt.Errorf("runtime options: LoggerPath %q is not an absolute path", o.LoggerPath)
	case o.LogMaxSize < 0 || o.LogMaxFiles < 0:
		return errors.New("runtime options: negative log size cap")
	}
	if o.Namespace != "" {
		if err := identifiers.Validate(o.Namespace); err != nil {
			return fmt.Errorf("runtime options: Namespace: %w", err)
		}
	}
	if _, err := newRegistryHosts(o.Registries); err != nil {
		return fmt.Errorf("runtime options: %w", err)
	}
	return nil
}

// Runtime is agent.Runtime on containerd. Its methods are safe for
// concurrent use.
type Runtime struct {
	opts     Options
	client   *client.Client
	log      *slog.Logger
	hosts    *registryHosts
	agentID  string
	nsMade   atomic.Bool
	cgroupV2 bool

	// netMu guards podNet; CreateSandbox holds it for reading while it
	// attaches, so that SetPodNetwork's collection of leaked addresses
	// never sees an attach in progress.
	netMu  sync.RWMutex
	podNet PodNetwork
}

var _ agent.Runtime = (*Runtime)(nil)

// New connects to containerd. containerd need not be up yet: calls fail
// with api.ErrUnavailable until it is, and reconnect by themselves after it
// restarts.
func New(ctx context.Context, opts Options) (*Runtime, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(opts.LoggerPath); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("runtime options: LoggerPath %s is not an executable file", opts.LoggerPath)
	}
	hosts, err := newRegistryHosts(opts.Registries)
	if err != nil {
		return nil, fmt.Errorf("runtime options: %w", err)
	}
	for _, d := range []string{opts.StateDir, sandboxRecordDir(opts.StateDir), fifoDir(opts.StateDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	// A short dial timeout also caps gRPC's reconnection backoff, so that
	// a restarted containerd is found again within seconds.
	cl, err := client.New(opts.Address, client.WithDefaultNamespace(opts.Namespace), client.WithTimeout(2*time.Second))
	if err != nil {
		return nil, fmt.Errorf("runtime: connect to containerd: %w", err)
	}
	sum := sha256.Sum256([]byte(opts.Namespace + "\x00" + filepath.Clean(opts.StateDir)))
	r := &Runtime{
		opts:     opts,
		client:   cl,
		log:      opts.Logger.With("component", "runtime"),
		hosts:    hosts,
		agentID:  hex.EncodeToString(sum[:4]),
		cgroupV2: isCgroupV2(),
	}
	if err := r.ensureNamespace(ctx); err != nil {
		r.log.Warn("containerd namespace not created yet", "namespace", opts.Namespace, "err", err)
	}
	return r, nil
}

// Close closes the connection to containerd. Containers keep running.
func (r *Runtime) Close() error {
	return r.client.Close()
}

// AgentID is the short identity that names this agent's containers and
// cgroups (derived from the namespace and state directory).
func (r *Runtime) AgentID() string { return r.agentID }

// CgroupParent is the cgroup under which the agent's pods get theirs
// ("/berth-<agent id>"), in every hierarchy.
func (r *Runtime) CgroupParent() string { return "/berth-" + r.agentID }

// ctx returns ctx in the agent's containerd namespace.
func (r *Runtime) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.opts.Namespace)
}

// ensureNamespace creates the containerd namespace, labelled, once.
func (r *Runtime) ensureNamespace(ctx context.Context) error {
	if r.nsMade.Load() {
		return nil
	}
	err := r.client.NamespaceService().Create(r.ctx(ctx), r.opts.Namespace, map[string]string{api.LabelManaged: "true"})
	if err != nil && !errdefs.IsAlreadyExists(err) {
		return err
	}
	r.nsMade.Store(true)
	return nil
}

// Version names containerd and its version.
func (r *Runtime) Version(ctx context.Context) (string, error) {
	var v client.Version
	err := r.retry(ctx, func(ctx context.Context) error {
		var err error
		v, err = r.client.Version(ctx)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("containerd version: %w", err)
	}
	return "containerd " + v.Version, nil
}

// RuncVersion asks the runc binary containerd's shim runs (runc, from the
// PATH) for its version: "runc 1.1.5+ds1".
func RuncVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "runc", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("runc --version: %w", err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	v, ok := strings.CutPrefix(first, "runc version ")
	if !ok {
		return "", fmt.Errorf("runc --version: unexpected answer %q", first)
	}
	return "runc " + strings.TrimSpace(v), nil
}

// unavailable reports whether err means containerd could not be reached.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errdefs.IsUnavailable(err) {
		return true
	}
	return status.Code(err) == codes.Unavailable
}

// readyTimeout bounds how long a call waits for containerd to come back
// before it fails with api.ErrUnavailable.
const readyTimeout = 15 * time.Second

// retry runs fn, and once more after containerd is serving again if it
// could not be reached. fn must be safe to repeat. An error from an
// unreachable containerd wraps api.ErrUnavailable.
func (r *Runtime) retry(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx = r.ctx(ctx)
	err := fn(ctx)
	if !unavailable(err) {
		return err
	}
	r.log.Debug("containerd unavailable; waiting for it", "err", err)
	if werr := r.waitServing(ctx); werr != nil {
		return fmt.Errorf("%w: containerd: %v", api.ErrUnavailable, err)
	}
	err = fn(ctx)
	if unavailable(err) {
		return fmt.Errorf("%w: containerd: %v", api.ErrUnavailable, err)
	}
	return err
}

// waitServing waits until containerd answers its health check, redialling
// if the connection does not recover by itself.
func (r *Runtime) waitServing(ctx context.Context) error {
	for attempt := 0; attempt < 2; attempt++ {
		wctx, cancel := context.WithTimeout(ctx, readyTimeout/2)
		ok, err := r.client.IsServing(wctx)
		cancel()
		if ok && err == nil {
			if attempt > 0 {
				r.log.Info("reconnected to containerd")
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.log.Warn("containerd not serving; redialling", "err", err)
		if err := r.client.Reconnect(); err != nil {
			return err
		}
	}
	return errors.New("containerd not serving")
}

// Paths under the state directory.
func sandboxRecordDir(stateDir string) string { return filepath.Join(stateDir, "sandboxes") }
func fifoDir(stateDir string) string          { return filepath.Join(stateDir, "fifo") }
func netnsDir(stateDir string) string         { return filepath.Join(stateDir, "netns") }
func nsDir(stateDir string) string            { return filepath.Join(stateDir, "ns") }
func podsDir(stateDir string) string          { return filepath.Join(stateDir, "pods") }

// logDriverArgs are the binary log URI's arguments for a container
// logging to path.
func (r *Runtime) logDriverArgs(path string) (map[string]string, error) {
	return logs.DriverArgs(logs.DriverConfig{Path: path, MaxSize: r.opts.LogMaxSize, MaxFiles: r.opts.LogMaxFiles})
}
