package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/network"
	"berth.dev/berth/render"
)

// Networks computes every machine's Network for pass p (package
// network), from the allocations in p.Memory.Network, and puts the new
// allocations there; problems with the network objects become the pass's
// warnings. last are the sets this process sent before (nil is none);
// addrs the addresses of machines whose spec.address is a DNS name (see
// ResolveMachines).
func Networks(desired *render.Desired, obs []live.Observed, p *live.Pass, last map[string]*api.DesiredPods, addrs map[string][]netip.Addr) (*network.Result, error) {
	var mem network.Memory
	if len(p.Memory.Network) > 0 {
		if err := json.Unmarshal(p.Memory.Network, &mem); err != nil {
			p.Warnings = append(p.Warnings, "network memory unreadable; allocations rebuilt from the machines' reports: "+err.Error())
			mem = network.Memory{}
		}
	}
	nr, err := network.Compute(network.Input{Desired: desired, Machines: network.FromLive(obs, p, last), Addresses: addrs, Memory: mem})
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	b, err := json.Marshal(nr.Memory)
	if err != nil {
		return nil, fmt.Errorf("network memory: %w", err)
	}
	p.Memory.Network = b
	for _, d := range nr.Diagnostics {
		p.Warnings = append(p.Warnings, "network: "+d.String())
	}
	return nr, nil
}

// NetworkSends are the Networks to hand machines: those reachable whose
// agent holds another one, with the next generation.
func NetworkSends(obs []live.Observed, nr *network.Result) map[string]api.Network {
	out := map[string]api.Network{}
	digests := nr.Digests()
	for _, o := range obs {
		want := nr.Networks[o.Machine]
		if !o.Reachable || want == nil || o.Node.Network.Digest == digests[o.Machine] {
			continue
		}
		n := *want
		n.Generation = o.Node.Network.Generation + 1
		out[o.Machine] = n
	}
	return out
}

// networks hands each reachable machine whose agent holds another Network
// than pass p computes its new one. It runs before the pass's pod sets are
// sent: a pod the pass stops has then left every machine's endpoints
// before its own machine is told to stop it.
func (c *Converge) networks(ctx context.Context, desired *render.Desired, obs []live.Observed, p *live.Pass, last map[string]*api.DesiredPods, res *Result, log *slog.Logger) error {
	if c.resolver == nil {
		c.resolver = &machineResolver{}
	}
	nr, err := Networks(desired, obs, p, last, c.resolver.addresses(ctx, desired, log))
	if err != nil {
		return err
	}
	for _, o := range obs {
		if o.Reachable && o.Node.Network.Error != "" {
			res.NetworkErrors = append(res.NetworkErrors, fmt.Errorf("machine %s: network: %s", o.Machine, o.Node.Network.Error))
		}
	}
	sends := NetworkSends(obs, nr)
	res.NetworksSent = len(sends)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for machine, n := range sends {
		wg.Go(func() {
			err := c.Machines.SetNetwork(ctx, machine, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				log.Warn("set network", "machine", machine, "generation", n.Generation, "err", err)
				res.NetworkErrors = append(res.NetworkErrors, err)
				return
			}
			log.Info("set network", "machine", machine, "generation", n.Generation, "services", len(n.Services), "routes", len(n.Routes))
		})
	}
	wg.Wait()
	if res.NetworksSent > 0 || len(res.NetworkErrors) > 0 {
		// Not converged until every agent reports its Network applied.
		p.Converged = false
	}
	for _, err := range res.NetworkErrors {
		p.Warnings = append(p.Warnings, err.Error())
	}
	return nil
}

// ResolveMachines looks up the machines of desired whose spec.address is
// a DNS name, for Networks' addrs; a name that does not resolve is left
// out (its pods get no route, and the network's diagnostics say so).
func ResolveMachines(ctx context.Context, desired *render.Desired) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for _, m := range desired.Machines() {
		if _, err := netip.ParseAddr(m.Spec.Address); err == nil || m.Spec.Address == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		as, err := net.DefaultResolver.LookupNetIP(ctx, "ip", m.Spec.Address)
		cancel()
		if err != nil {
			continue
		}
		for i, a := range as {
			as[i] = a.Unmap()
		}
		out[m.Name] = as
	}
	return out
}

// machineResolver keeps ResolveMachines' answers for a while, so that
// passes every 50 ms do not ask DNS every time.
type machineResolver struct {
	mu    sync.Mutex
	at    time.Time
	addrs map[string][]netip.Addr
}

// resolveTTL is how long a machine name's addresses are kept.
const resolveTTL = time.Minute

func (r *machineResolver) addresses(ctx context.Context, desired *render.Desired, log *slog.Logger) map[string][]netip.Addr {
	named := false
	for _, m := range desired.Machines() {
		if _, err := netip.ParseAddr(m.Spec.Address); err != nil && m.Spec.Address != "" {
			named = true
		}
	}
	if !named {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.addrs == nil || time.Since(r.at) > resolveTTL {
		r.addrs, r.at = ResolveMachines(ctx, desired), time.Now()
		log.Debug("resolved machine addresses", "machines", len(r.addrs))
	}
	return r.addrs
}
