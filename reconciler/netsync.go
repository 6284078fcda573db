package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/network"
	"berth.dev/berth/render"
)

// networks computes every machine's Network for pass p (package network)
// and hands it to each reachable machine whose agent holds another one.
// It runs before the pass's pod sets are sent: a pod the pass stops has
// then left every machine's endpoints before its own machine is told to
// stop it. The allocations go into p.Memory.Network; problems with the
// network objects become the pass's warnings.
func (c *Converge) networks(ctx context.Context, desired *render.Desired, obs []live.Observed, p *live.Pass, last map[string]*api.DesiredPods, res *Result, log *slog.Logger) error {
	var mem network.Memory
	if len(p.Memory.Network) > 0 {
		if err := json.Unmarshal(p.Memory.Network, &mem); err != nil {
			log.Warn("network memory unreadable; allocating from the machines' reports", "err", err)
			mem = network.Memory{}
		}
	}
	nr, err := network.Compute(network.Input{Desired: desired, Machines: network.FromLive(obs, p, last), Memory: mem})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	b, err := json.Marshal(nr.Memory)
	if err != nil {
		return fmt.Errorf("network memory: %w", err)
	}
	p.Memory.Network = b
	for _, d := range nr.Diagnostics {
		p.Warnings = append(p.Warnings, "network: "+d.String())
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, o := range obs {
		want := nr.Networks[o.Machine]
		if !o.Reachable || want == nil {
			continue
		}
		if o.Node.Network.Error != "" {
			res.NetworkErrors = append(res.NetworkErrors, fmt.Errorf("machine %s: network: %s", o.Machine, o.Node.Network.Error))
		}
		if o.Node.Network.Digest == want.Digest() {
			continue
		}
		n := *want
		n.Generation = o.Node.Network.Generation + 1
		res.NetworksSent++
		wg.Go(func() {
			err := c.Machines.SetNetwork(ctx, o.Machine, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				log.Warn("set network", "machine", o.Machine, "generation", n.Generation, "err", err)
				res.NetworkErrors = append(res.NetworkErrors, err)
				return
			}
			log.Info("set network", "machine", o.Machine, "generation", n.Generation, "services", len(n.Services), "routes", len(n.Routes))
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
