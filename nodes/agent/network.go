package agent

import (
	"context"
	"errors"
	"fmt"

	"berth.dev/berth/nodes/api"
)

// NetworkApplier makes the machine's networking what a Network says: pod
// network, routes, Service routing, DNS, held addresses. Apply is given the
// whole Network every time and must be idempotent; when it fails it leaves
// in place what it applied before as far as it can. nodes/agent/network
// implements it.
type NetworkApplier interface {
	Apply(ctx context.Context, n api.Network) error
}

// NetworkAppliers apply a Network through each of them in order (the
// machine's networking, then an ingress proxy, say): all run, and their
// errors are joined.
type NetworkAppliers []NetworkApplier

// Apply implements NetworkApplier.
func (as NetworkAppliers) Apply(ctx context.Context, n api.Network) error {
	var errs []error
	for _, a := range as {
		errs = append(errs, a.Apply(ctx, n))
	}
	return errors.Join(errs...)
}

// networkFile holds the last Network under StateDir. Ingress TLS keys are
// in it, so it is readable by root only.
const networkFile = "network.json"

// persistedNetwork is the Network kept across restarts.
type persistedNetwork struct {
	Set     bool        `json:"set"`
	Network api.Network `json:"network"`
}

func loadNetwork(dir string) (persistedNetwork, error) {
	var p persistedNetwork
	if err := loadJSON(dir, networkFile, &p); err != nil {
		return p, fmt.Errorf("load network: %w", err)
	}
	return p, nil
}

func saveNetwork(dir string, p persistedNetwork) error {
	if err := saveJSON(dir, networkFile, p); err != nil {
		return fmt.Errorf("save network: %w", err)
	}
	return nil
}

// netState is the Manager's Network: the last one accepted and how its
// application went.
type netState struct {
	persisted persistedNetwork
	digest    string
	// applied is true once the current Network was applied in full.
	applied bool
	err     string
}

// SetNetwork replaces the machine's Network: see httpapi.Backend. It is
// validated, persisted, then applied; an older generation is a conflict
// and changes nothing, the same generation with the same content is
// nothing to do (unless applying it failed before: it is tried again).
// When applying fails the Network stays accepted, the error is returned
// and reported in NodeInfo, and it is tried again at every resync.
func (m *Manager) SetNetwork(ctx context.Context, n api.Network) error {
	if err := validateNetwork(n); err != nil {
		return err
	}
	m.netSetMu.Lock()
	defer m.netSetMu.Unlock()

	m.mu.Lock()
	cur := m.net
	m.mu.Unlock()
	digest := n.Digest()
	if cur.persisted.Set {
		old := cur.persisted.Network.Generation
		switch {
		case n.Generation < old:
			return fmt.Errorf("%w: network generation %d is older than the current %d", api.ErrConflict, n.Generation, old)
		case n.Generation == old && digest != cur.digest:
			return fmt.Errorf("%w: network generation %d is already set, with another content", api.ErrConflict, n.Generation)
		case n.Generation == old && cur.applied:
			return nil
		}
	}
	next := persistedNetwork{Set: true, Network: n}
	if n.Generation != cur.persisted.Network.Generation || !cur.persisted.Set {
		if err := saveNetwork(m.opts.StateDir, next); err != nil {
			return err
		}
		m.mu.Lock()
		m.net = netState{persisted: next, digest: digest}
		m.mu.Unlock()
		m.setNodeIP(n)
		m.log.Info("network set", "generation", n.Generation, "digest", digest[:12], "services", len(n.Services), "routes", len(n.Routes))
	}
	return m.applyNetwork(ctx)
}

// applyNetwork applies the current Network (the caller holds netSetMu)
// and records the outcome.
func (m *Manager) applyNetwork(ctx context.Context) error {
	m.mu.Lock()
	st := m.net
	m.mu.Unlock()
	if !st.persisted.Set {
		return nil
	}
	var err error
	if m.opts.Network != nil {
		err = m.opts.Network.Apply(ctx, st.persisted.Network)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.net.digest != st.digest || m.net.persisted.Network.Generation != st.persisted.Network.Generation {
		return err // replaced meanwhile (cannot happen under netSetMu)
	}
	if err != nil {
		m.net.applied, m.net.err = false, err.Error()
		m.log.Warn("network not applied in full; what was applied before stays", "generation", st.persisted.Network.Generation, "err", err)
		return fmt.Errorf("apply network generation %d: %w", st.persisted.Network.Generation, err)
	}
	if m.net.err != "" {
		m.log.Info("network applied", "generation", st.persisted.Network.Generation)
	}
	m.net.applied, m.net.err = true, ""
	return nil
}

// retryNetwork applies the Network if it was not applied in full yet: the
// persisted one at start, one whose application failed at every resync.
func (m *Manager) retryNetwork(ctx context.Context) {
	m.mu.Lock()
	again := m.net.persisted.Set && !m.net.applied
	m.mu.Unlock()
	if !again {
		return
	}
	m.netSetMu.Lock()
	defer m.netSetMu.Unlock()
	m.applyNetwork(ctx) // the outcome is recorded and logged
}

// Network returns the last Network the agent was given (the zero Network
// when none was).
func (m *Manager) Network(ctx context.Context) (api.Network, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.net.persisted.Set {
		return api.Network{}, nil
	}
	return m.net.persisted.Network, nil
}

func (m *Manager) setNodeIP(n api.Network) {
	ip := ""
	if len(n.NodeIPs) > 0 {
		ip = n.NodeIPs[0].String()
	}
	m.nodeIP.Store(&ip)
}

// podIP is the address a pod's status reports: its sandbox's first pod
// network address, or the machine's with hostNetwork.
func (m *Manager) podIP(pod *api.Pod, sb Sandbox) string {
	if pod != nil && pod.Spec.HostNetwork {
		if ip := m.nodeIP.Load(); ip != nil {
			return *ip
		}
		return ""
	}
	if len(sb.PodIPs) == 0 {
		return ""
	}
	return sb.PodIPs[0]
}

// networkStatus is NodeInfo.Network (m.mu held).
func (m *Manager) networkStatusLocked() api.NetworkStatus {
	if !m.net.persisted.Set {
		return api.NetworkStatus{}
	}
	return api.NetworkStatus{
		Generation: m.net.persisted.Network.Generation,
		Digest:     m.net.digest,
		Error:      m.net.err,
	}
}
